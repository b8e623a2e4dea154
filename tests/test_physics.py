import numpy as np
import pytest
import torch

from hpcinv.config import GridSection, ModellingSection, SurveySection
from hpcinv.errors import HpcinvError
from hpcinv.physics import downsample_indices, homogeneous_trace_2d, relative_l2, ricker, simulate, validate_physics
from hpcinv.physics.validate import two_way_time_s
from tests.conftest import tiny_config

C = 1500.0
DX = 5.0
CENTRE = 60


def _homogeneous_run(offsets_cells, accuracy=8, f0=12.0):
    """Source at the centre of a 121 x 121 float64 model; receivers on the same row."""
    grid = GridSection(nz=121, nx=121, dx_m=DX)
    survey = SurveySection(
        n_shots=1,
        source_x_m=[CENTRE * DX],
        source_depth_m=CENTRE * DX,
        receiver_x_m=[(CENTRE + k) * DX for k in offsets_cells],
        receiver_depth_m=CENTRE * DX,
        f0_hz=f0,
        dt_s=0.0005,
        nt=700,
        downsample=1,
    )
    modelling = ModellingSection(accuracy=accuracy, max_vel_mps=C, pml_width=30)
    vel = np.full((grid.nz, grid.nx), C, dtype=np.float64)
    data_TR = simulate(vel, survey, grid, modelling, dtype=torch.float64)[0].numpy()
    return data_TR, ricker(survey, dtype=torch.float64).numpy(), survey


def test_matches_analytic_2d_greens_function():
    """>= 10 points per wavelength at 2.5 f0 (1500 / (30 Hz * 5 m) = 10): relative L2 error < 1 %."""
    offsets = [10, 25, 45]
    data_TR, wavelet, survey = _homogeneous_run(offsets)
    for r, k in enumerate(offsets):
        ref = homogeneous_trace_2d(wavelet, survey.dt_s, C, k * DX, DX)
        err = relative_l2(data_TR[:, r], ref)
        assert err < 0.01, f"offset {k * DX} m: relative L2 error {err:.4f}"
        # and the comparison is not vacuous: a 2 % velocity error is clearly detected
        wrong = homogeneous_trace_2d(wavelet, survey.dt_s, C * 1.02, k * DX, DX)
        assert relative_l2(data_TR[:, r], wrong) > 3 * err


def test_under_resolved_grid_is_measurably_dispersive():
    """What the validator protects against: 4 points per wavelength with the 4th-order stencil."""
    data_TR, wavelet, survey = _homogeneous_run([45], accuracy=4, f0=30.0)
    ref = homogeneous_trace_2d(wavelet, survey.dt_s, C, 45 * DX, DX)
    assert relative_l2(data_TR[:, 0], ref) > 0.05


def test_reciprocity_in_heterogeneous_model():
    cfg = tiny_config()
    from hpcinv.velocity import salt_model

    vel = salt_model(cfg.velocity.synthetic, cfg.grid, 0, 2).astype(np.float64)
    a_x, b_x = 5 * cfg.grid.dx_m, 50 * cfg.grid.dx_m
    depth_a, depth_b = 3 * cfg.grid.dx_m, 10 * cfg.grid.dx_m

    def trace(src_x, src_z, rec_x, rec_z):
        survey = cfg.survey.model_copy(
            update=dict(
                n_shots=1,
                source_x_m=[src_x],
                source_depth_m=src_z,
                receiver_x_m=[rec_x],
                receiver_depth_m=rec_z,
                downsample=1,
            )
        )
        return simulate(vel, survey, cfg.grid, cfg.modelling)[0, :, 0].numpy()

    ab = trace(a_x, depth_a, b_x, depth_b)
    ba = trace(b_x, depth_b, a_x, depth_a)
    assert np.abs(ab).max() > 0
    assert relative_l2(ba, ab) < 1e-4


def test_batch_equals_single_and_layout():
    cfg = tiny_config()
    from hpcinv.velocity import make_source

    vel = make_source(cfg).models(0, 2)
    batch = simulate(vel, cfg.survey, cfg.grid, cfg.modelling)
    one = simulate(vel[1], cfg.survey, cfg.grid, cfg.modelling)
    assert batch.shape == (2, cfg.survey.n_shots, cfg.survey.nt // cfg.survey.downsample, cfg.grid.nx)
    assert batch.dtype == torch.float32
    torch.testing.assert_close(batch[1], one, rtol=1e-5, atol=1e-6 * float(one.abs().max()))
    paired = cfg.modelling.model_copy(update={"models_per_call": 2})
    torch.testing.assert_close(
        simulate(vel, cfg.survey, cfg.grid, paired), batch, rtol=1e-5, atol=1e-6 * float(batch.abs().max())
    )
    assert simulate(vel, cfg.survey, cfg.grid, cfg.modelling, dtype=torch.float16).dtype == torch.float16


def test_downsampling_keeps_middle_sample_of_each_block():
    assert downsample_indices(2000, 5)[:3].tolist() == [2, 7, 12] and len(downsample_indices(2000, 5)) == 400
    cfg = tiny_config()
    vel = np.full((cfg.grid.nz, cfg.grid.nx), 3000.0, dtype=np.float32)
    full = simulate(vel, cfg.survey, cfg.grid, cfg.modelling, downsample=False)
    down = simulate(vel, cfg.survey, cfg.grid, cfg.modelling)
    assert torch.equal(down, full[:, 1::2, :])


def test_simulate_refuses_bad_velocity():
    cfg = tiny_config()
    vel = np.full((cfg.grid.nz, cfg.grid.nx), 3000.0, dtype=np.float32)
    vel[3, 3] = 5000.0
    with pytest.raises(HpcinvError, match="exceeds the pinned modelling.max_vel_mps=4500"):
        simulate(vel, cfg.survey, cfg.grid, cfg.modelling)
    vel[3, 3] = 0.0
    with pytest.raises(HpcinvError, match="finite and > 0"):
        simulate(vel, cfg.survey, cfg.grid, cfg.modelling)
    with pytest.raises(HpcinvError, match="does not match grid"):
        simulate(vel[:, :10], cfg.survey, cfg.grid, cfg.modelling)


@pytest.mark.parametrize(
    "override, match",
    [
        ("survey.f0_hz=25.0", r"points per wavelength.*use survey.f0_hz <= 8.89 or grid.dx_m <= 5.33"),
        ("modelling.max_vel_mps=4000.0", r"models reach 4500 m/s.*max_vel_mps >= 4500"),
        (
            "survey.source_x_m=[2000.0]",
            r"survey.source_x_m at 2000 m is outside the grid; valid positions are 0 .. 945",
        ),
        ("survey.receiver_depth_m=900.0", r"receiver_depth_m at 900 m is outside"),
        ("survey.nt=200", r"record of 0.4 s.*use survey.nt >= 3"),
        ("survey.downsample=40", r"Nyquist 6.25 Hz.*survey.downsample <= 12"),
        ("survey.n_receivers=100", r"100 receivers do not fit"),
    ],
)
def test_validation_names_bad_value_and_fix(override, match):
    cfg = tiny_config(override)
    with pytest.raises(HpcinvError, match=match):
        validate_physics(cfg, *cfg.velocity.synthetic.velocity_bounds())


def test_validation_report_and_paper_preset():
    from hpcinv.config import DataConfig, load_config
    from tests.conftest import CONFIGS

    cfg = load_config(DataConfig, CONFIGS / "fcnvmb_paper.yaml")
    report = validate_physics(cfg, *cfg.velocity.synthetic.velocity_bounds())  # water: 1500 m/s
    assert report.points_per_wavelength == pytest.approx(1500 / (2.5 * 9 * 10))
    assert report.step_ratio >= 1 and report.inner_dt_s <= cfg.survey.dt_s
    assert two_way_time_s(1000, 2000, 2000) == pytest.approx(1.0)


def test_mirrored_model_equals_reversed_shots_and_receivers():
    """On a symmetric survey, the simulator's gathers of the flipped model are the original gathers
    with shot order and receivers reversed: mirror augmentation is exact."""
    from hpcinv.physics.forward import model_shots
    from hpcinv.physics.survey import make_geometry, mirror, mirror_asymmetry
    from hpcinv.velocity import salt_model

    cfg = tiny_config("grid.nx=65")  # 5 shots at cells 0, 16, 32, 48, 64; a receiver in every column
    geometry = make_geometry(cfg.survey, cfg.grid)
    assert mirror_asymmetry(geometry.source_cells, geometry.receiver_cells, cfg.grid.nx) is None
    vel = torch.from_numpy(salt_model(cfg.velocity.synthetic, cfg.grid, 0, 3)).double()
    assert not torch.equal(vel, vel.flip(-1))  # an asymmetric model: the check below can fail
    gathers = model_shots(vel, cfg)
    flipped = model_shots(vel.flip(-1).contiguous(), cfg)
    expect, expect_vel = mirror(gathers, vel)
    assert torch.equal(expect_vel, vel.flip(-1))
    assert relative_l2(flipped.numpy(), expect.numpy()) < 1e-6
    assert relative_l2(flipped.numpy(), gathers.numpy()) > 0.05  # the mirror is not the identity here

    # 64 columns: the middle shot lands on cell 32, whose mirror image (31) holds no shot
    odd = tiny_config()
    g = make_geometry(odd.survey, odd.grid)
    assert "source 2 at cell (z, x) = (0, 32) has no mirror image at (0, 31)" in mirror_asymmetry(
        g.source_cells, g.receiver_cells, odd.grid.nx
    )


def test_mirror_some_flips_the_chosen_samples_only():
    from hpcinv.train.engine import mirror_some

    g = torch.randn(6, 5, 7, 9)
    v = torch.randn(6, 1, 4, 9)
    rng = torch.Generator().manual_seed(0)
    out_g, out_v = mirror_some(g, v, 0.5, rng)
    flipped = [i for i in range(6) if not torch.equal(out_g[i], g[i])]
    assert 0 < len(flipped) < 6  # seed 0 flips some, not all
    for i in range(6):
        want = (g[i].flip(0, 2), v[i].flip(-1)) if i in flipped else (g[i], v[i])
        assert torch.equal(out_g[i], want[0]) and torch.equal(out_v[i], want[1])
    assert torch.equal(mirror_some(g, v, 0.0, rng)[0], g)


def test_deepwave_kernels_take_torch_thread_count_in_the_modelling_thread():
    """deepwave's CPU kernels run on their own OpenMP runtime: without hpcinv setting it, a worker told
    to use one thread would model on every core. The count is per thread, so it is set where modelling
    runs -- here a fresh thread, as the generation's modelling thread is."""
    import threading

    from hpcinv.physics.forward import deepwave_openmp

    omp = deepwave_openmp()
    assert omp is not None, "deepwave's bundled OpenMP runtime was not found"
    cfg = tiny_config()
    vel = np.full((cfg.grid.nz, cfg.grid.nx), 2000.0, np.float32)
    before, seen = torch.get_num_threads(), {}

    def model(threads: int) -> None:
        torch.set_num_threads(threads)
        simulate(vel, cfg.survey, cfg.grid, cfg.modelling)
        seen[threads] = omp.omp_get_max_threads()

    try:
        for threads in (1, 3):  # 3: neither this machine's core count nor OpenMP's default here
            t = threading.Thread(target=model, args=(threads,))
            t.start()
            t.join()
    finally:
        torch.set_num_threads(before)
    assert seen == {1: 1, 3: 3}
