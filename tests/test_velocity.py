import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from hpcinv.config import DataConfig, SaltModelSection, build_config, config_hash, without_role
from hpcinv.errors import ConfigError, HpcinvError
from hpcinv.velocity import make_source, model_statistics, read_collection, resample, salt_model
from tests.conftest import FCNVMB_NPZ, OPENFWI_NPZ, VIKING_SEGY, needs_shared, tiny_config


def test_salt_model_is_pure_function_of_seed_and_index():
    cfg = tiny_config()
    a = salt_model(cfg.velocity.synthetic, cfg.grid, 3, 17)
    b = salt_model(cfg.velocity.synthetic, cfg.grid, 3, 17)
    assert a.dtype == np.float32 and a.shape == (cfg.grid.nz, cfg.grid.nx)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, salt_model(cfg.velocity.synthetic, cfg.grid, 3, 18))
    assert not np.array_equal(a, salt_model(cfg.velocity.synthetic, cfg.grid, 4, 17))


def test_salt_model_identical_in_another_process():
    cfg = tiny_config()
    here = salt_model(cfg.velocity.synthetic, cfg.grid, 0, 5).tobytes().hex()
    code = (
        "from tests.conftest import tiny_config; from hpcinv.velocity import salt_model;"
        "c = tiny_config(); print(salt_model(c.velocity.synthetic, c.grid, 0, 5).tobytes().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == here


@needs_shared
def test_default_statistics_resemble_fcnvmb_set():
    """Default generator vs the 1,600 FCNVMB training models: velocity histogram, salt, layers."""
    cfg = build_config(DataConfig, {})
    ours = model_statistics(np.stack([salt_model(SaltModelSection(), cfg.grid, 0, i) for i in range(150)]))
    ref = model_statistics(np.load(FCNVMB_NPZ)["train"][:150])
    assert 2000 <= ours["v_min"] < 2300 and ours["v_max"] == 4500
    assert abs(ours["salt_fraction"] - ref["salt_fraction"]) < 0.08
    assert abs(ours["layers_mean"] - ref["layers_mean"]) < 1.5
    assert abs(ours["v_mean"] - ref["v_mean"]) < 200
    # histograms over 500 m/s bins: total variation distance
    assert 0.5 * np.abs(np.subtract(ours["histogram"], ref["histogram"])).sum() < 0.25


def test_synthetic_layers_increase_with_depth_without_salt():
    cfg = tiny_config("velocity.synthetic.n_salt=[0, 0]", "velocity.synthetic.fault_probability=0.0")
    v = salt_model(cfg.velocity.synthetic, cfg.grid, 0, 1)
    column = v[:, cfg.grid.nx // 2]
    assert np.all(np.diff(column) >= 0) and column[-1] > column[0]


@needs_shared
def test_import_npz_fcnvmb_set_with_resampling():
    cfg = tiny_config("velocity.source=npz", f"velocity.path={FCNVMB_NPZ}", "velocity.key=test", "dataset.n_samples=3")
    src = make_source(cfg)
    assert len(src) == 3
    v = src.models(0, 3)
    raw = np.load(FCNVMB_NPZ)["test"][:3]
    assert v.shape == (3, 48, 64)
    assert v.min() >= raw.min() - 1e-3 and v.max() <= raw.max() + 1e-3
    assert v[0, 0, 0] == pytest.approx(raw[0, 0, 0]) and v[0, -1, -1] == pytest.approx(raw[0, -1, -1])
    assert src.bounds()[1] == pytest.approx(4500.0)


def test_import_fcnvmb_mat_folder_in_natural_order(tmp_path):
    models = [np.full((20, 30), 2000.0 + 100 * i) for i in range(11)]
    for i, m in enumerate(models, start=1):
        scipy.io.savemat(tmp_path / f"vmodel{i}.mat", {"vmodel": m})
    arr = read_collection(tiny_config("velocity.source=fcnvmb", f"velocity.path={tmp_path}").velocity)
    assert arr.shape == (11, 20, 30) and arr.dtype == np.float32
    assert arr[:, 0, 0].tolist() == [2000.0 + 100 * i for i in range(11)]  # vmodel10 after vmodel9


@needs_shared
def test_import_openfwi_npy(tmp_path):
    flat = np.load(OPENFWI_NPZ)["FlatVelA"][:4, None]
    np.save(tmp_path / "model1.npy", flat)
    cfg = tiny_config(
        "velocity.source=openfwi",
        f"velocity.path={tmp_path / 'model1.npy'}",
        "grid.nz=70",
        "grid.nx=70",
        "dataset.n_samples=null",
    )
    assert np.array_equal(make_source(cfg).models(0, 4), flat[:, 0])


@needs_shared
def test_import_segy_as_model():
    arr = read_collection(tiny_config("velocity.source=segy", f"velocity.path={VIKING_SEGY}").velocity)
    import segyio

    with segyio.open(VIKING_SEGY, ignore_geometry=True) as fh:
        first_trace = fh.trace[0]
        n_traces = fh.tracecount
    assert arr.shape == (1, len(first_trace), n_traces)
    np.testing.assert_array_equal(arr[0, :, 0], first_trace)


def test_import_binary_c_and_fortran(tmp_path):
    m = np.arange(6 * 8, dtype="<f4").reshape(6, 8) + 1500
    m.tofile(tmp_path / "c.bin")
    np.asfortranarray(m).T.copy().tofile(tmp_path / "f.bin")  # z fastest on disk
    c = read_collection(
        tiny_config("velocity.source=binary", f"velocity.path={tmp_path / 'c.bin'}", "velocity.shape=[6, 8]").velocity
    )
    f = read_collection(
        tiny_config(
            "velocity.source=binary", f"velocity.path={tmp_path / 'f.bin'}", "velocity.shape=[6, 8]", "velocity.order=F"
        ).velocity
    )
    assert np.array_equal(c[0], m) and np.array_equal(f[0], m)
    with pytest.raises(HpcinvError, match="bytes"):
        read_collection(
            tiny_config(
                "velocity.source=binary", f"velocity.path={tmp_path / 'c.bin'}", "velocity.shape=[7, 8]"
            ).velocity
        )


def test_bad_collections_are_refused_naming_the_model(tmp_path):
    bad = np.full((3, 10, 12), 2500.0, dtype=np.float32)
    bad[2, 4, 5] = np.nan
    np.savez(tmp_path / "nan.npz", v=bad)
    cfg = tiny_config("velocity.source=npz", f"velocity.path={tmp_path / 'nan.npz'}", "dataset.n_samples=null")
    with pytest.raises(HpcinvError, match=r"model 2 has velocity nan"):
        make_source(cfg).bounds()
    bad[2, 4, 5] = -1.0
    np.savez(tmp_path / "neg.npz", v=bad)
    with pytest.raises(HpcinvError, match=r"model 2 has velocity -1.0.*> 0"):
        make_source(
            tiny_config("velocity.source=npz", f"velocity.path={tmp_path / 'neg.npz'}", "dataset.n_samples=null")
        ).bounds()
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(HpcinvError, match="junk.mat"):
        make_source(tiny_config("velocity.source=fcnvmb", f"velocity.path={tmp_path / 'junk.mat'}"))
    with pytest.raises(ConfigError, match="velocity.path"):
        tiny_config("velocity.source=npz")


def test_resample_keeps_extent_and_range():
    v = np.linspace(2000, 4000, 7 * 9, dtype=np.float32).reshape(1, 7, 9)
    out = resample(v, 13, 17)
    assert out.shape == (1, 13, 17)
    assert out[0, 0, 0] == pytest.approx(v[0, 0, 0]) and out[0, -1, -1] == pytest.approx(v[0, -1, -1])
    assert out.min() >= v.min() - 1e-3 and out.max() <= v.max() + 1e-3


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_downsampling_averages_thin_layers_instead_of_aliasing(phase):
    """1-cell stripes every 4 rows, downsampled 4x: every interior row is the stripes' mean, whatever
    rows the stripes fall on (plain interpolation keeps the stripe or the background: v[::4])."""
    v = np.full((1, 201, 301), 2000.0, dtype=np.float32)
    v[:, phase::4] = 3000.0
    out = resample(v, 51, 76)
    np.testing.assert_allclose(out[0, 1:-1], 2250.0, rtol=1e-6)
    across = np.full((1, 201, 301), 2000.0, dtype=np.float32)
    across[:, :, phase::4] = 3000.0  # the same along x (301 -> 76 is also 4x)
    np.testing.assert_allclose(resample(across, 51, 76)[0, :, 1:-1], 2250.0, rtol=1e-6)
    smooth = np.linspace(2000, 4000, 201, dtype=np.float32)[None, :, None].repeat(301, axis=2)
    np.testing.assert_allclose(resample(smooth, 51, 76)[0, :, 0], np.linspace(2000, 4000, 51), rtol=1e-5)


def test_water_layer_and_salt_velocity_range():
    """Water replaces only the cells above a seabed within the drawn thickness (+15 % undulation), and
    leaves every other cell of the model bit-identical; a salt range draws one salt velocity per model."""
    dry = tiny_config("velocity.synthetic.fault_probability=0.0")
    wet = tiny_config("velocity.synthetic.fault_probability=0.0", "velocity.synthetic.water_depth_m=[60, 150]")
    dx = wet.grid.dx_m
    thicknesses = []
    for i in range(8):
        a = salt_model(dry.velocity.synthetic, dry.grid, 0, i)
        b = salt_model(wet.velocity.synthetic, wet.grid, 0, i)
        water = b == 1500.0
        assert np.array_equal(a[~water], b[~water])
        rows = water.sum(axis=0)  # water cells per column, all at the top
        assert all(water[:r, c].all() for c, r in enumerate(rows))
        assert rows.min() >= 1 and rows.max() * dx <= 150 * 1.15 + dx
        thicknesses.append(rows.mean() * dx)
    assert np.ptp(thicknesses) > 20  # thickness is drawn per model
    assert wet.velocity.synthetic.velocity_bounds()[0] == 1500.0
    assert dry.velocity.synthetic.velocity_bounds()[0] == 2000.0

    ranged = tiny_config("velocity.synthetic.salt_velocity_mps=[4000, 5000]", "velocity.synthetic.n_salt=[1, 1]")
    salts = {float(salt_model(ranged.velocity.synthetic, ranged.grid, 0, i).max()) for i in range(6)}
    assert len(salts) == 6 and all(4000 <= s <= 5000 for s in salts)
    assert ranged.velocity.synthetic.velocity_bounds()[1] == 5000.0
    with pytest.raises(ConfigError, match=r"salt_velocity_mps must be \[low, high\]"):
        tiny_config("velocity.synthetic.salt_velocity_mps=[5000, 4000]")


def test_salt_sheets_leave_sediments_below_and_old_streams_unchanged():
    """Sheets are tabular salt with slower rock below them; with sheets off (the default) every model
    is bit-identical to what the generator made before sheets existed (no extra random draw)."""
    only_sheets = tiny_config(
        "velocity.synthetic.dome_probability=0.0",
        "velocity.synthetic.sheet_probability=1.0",
        "velocity.synthetic.n_salt=[1, 1]",
    )
    below = 0
    for i in range(8):
        v = salt_model(only_sheets.velocity.synthetic, only_sheets.grid, 0, i)
        salt = v >= 4500.0 - 1e-3
        assert salt.any()
        columns = np.flatnonzero(salt.any(axis=0))
        rows = [np.flatnonzero(salt[:, c]) for c in columns]
        assert all(np.all(np.diff(r) == 1) for r in rows)  # one contiguous run of salt per column
        below += sum(
            r[-1] < v.shape[0] - 1 and v[r[-1] + 1 :, c].max() < 4500.0 for r, c in zip(rows, columns, strict=True)
        )
    assert below > 0  # sediments under the salt, unlike a dome
    # with sheets off (the default) the stream is the one of the generator before sheets: pinned here
    # (velocities rounded to 1 m/s) from the models that version made
    mixed = tiny_config("velocity.synthetic.dome_probability=0.3")
    models = [salt_model(mixed.velocity.synthetic, mixed.grid, 0, i) for i in range(6)]
    digest = hashlib.sha256(b"".join(np.round(m).astype(np.int32).tobytes() for m in models)).hexdigest()
    assert digest == "6ac7050f6b431f3527437d1edc9c12466f40ef9c1fab3f1657597306afb30401"
    # and a dataset made before sheets keeps its identity: the key is left out of the hash at its default
    before = without_role(mixed, "execution")  # as the hash saw it then: no sheets, no water (at its default)
    for key in ("sheet_probability", "water_depth_m", "water_velocity_mps"):
        del before["velocity"]["synthetic"][key]
    for section, key in (
        ("survey", "receiver_offsets_m"),
        ("survey", "wavelet_samples"),
        ("modelling", "free_surface"),
        ("grid", "origin_x_m"),
    ):
        del before[section][key]  # (field data, added later still)
    del before["conditioning"]
    assert hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest() == config_hash(mixed)
