"""Field data: SEG-Y shot gathers read back with their geometry, refused when they cannot be described,
a towed-streamer survey that reproduces itself through export and import, the free surface against its
image source, conditioning, and the velocity analysis against the RMS velocities of flat layers."""

import json

import numpy as np
import pytest
import segyio
import torch
from segyio import TraceField as H

from hpcinv.config import DataConfig, load_config
from hpcinv.config.data import ConditioningSection
from hpcinv.errors import HpcinvError
from hpcinv.field.condition import condition, direct_wave_mute
from hpcinv.field.segy import ShotRecord, read_shot_gathers, write_shot_gathers
from hpcinv.field.velan import dix, pick, rms_velocities, semblance
from hpcinv.generate.gathers import import_gathers
from hpcinv.physics import make_geometry
from hpcinv.physics.forward import simulate_config
from hpcinv.physics.survey import mirror_asymmetry
from hpcinv.store.dataset import ShardedDataset

DT = 0.004


def write_line(path, *, shots=2, receivers=5, edit=None):
    """A small SEG-Y line written with segyio alone: a line along y at x = 1000.0 m, coordinates in
    decimetres (scalar -10), shot i at y = 500 + 30 i m, receivers 100, 120, ... m behind it (towards
    smaller y), source depth 6.5 m (SourceDepth in cm), streamer at 9 m (elevation -900 cm)."""
    spec = segyio.spec()
    spec.format = 5
    spec.samples = np.arange(50) * DT * 1e3
    spec.tracecount = shots * receivers
    with segyio.create(str(path), spec) as f:
        f.bin.update({segyio.BinField.Interval: int(DT * 1e6), segyio.BinField.Samples: 50})
        for s in range(shots):
            for r in range(receivers):
                i = s * receivers + r
                sy, gy = 500 + 30 * s, 500 + 30 * s - 100 - 20 * r
                f.header[i] = {
                    H.FieldRecord: 11 + s,
                    H.TraceNumber: r + 1,
                    H.SourceX: 10000,
                    H.SourceY: sy * 10,
                    H.GroupX: 10000,
                    H.GroupY: gy * 10,
                    H.offset: gy - sy,
                    H.SourceGroupScalar: -10,
                    H.ElevationScalar: -100,
                    H.SourceDepth: 650,
                    H.ReceiverGroupElevation: -900,
                    H.TRACE_SAMPLE_INTERVAL: int(DT * 1e6),
                }
                f.trace[i] = np.full(50, 1000.0 * s + r + 1, dtype=np.float32)
        if edit:
            edit(f)


def test_segy_geometry_is_read_back_from_the_trace_headers(tmp_path):
    write_line(tmp_path / "line.sgy")
    record = read_shot_gathers(tmp_path / "line.sgy")
    assert record.data_STR.shape == (2, 50, 5) and record.dt_s == pytest.approx(DT)
    # positions along the line from its first point (the farthest receiver of shot 0, y = 320 m)
    assert record.origin_xy_m == pytest.approx((1000.0, 320.0)) and record.direction_xy == pytest.approx((0, 1))
    assert record.source_x_m == pytest.approx([180.0, 210.0])
    assert record.receiver_x_m[0] == pytest.approx([0, 20, 40, 60, 80])  # ordered along the line
    assert record.receiver_x_m[1] == pytest.approx([30, 50, 70, 90, 110])
    assert record.source_depth_m == pytest.approx(6.5) and record.receiver_depth_m == pytest.approx(9.0)
    assert record.field_records.tolist() == [11, 12]
    layout, offsets = record.receiver_layout()
    assert layout == "moving" and offsets == pytest.approx([-180, -160, -140, -120, -100])
    # the traces follow their receivers: the farthest (written last) comes first
    assert record.data_STR[1, 0].tolist() == [1005, 1004, 1003, 1002, 1001]
    # and the writer's file reads back the same
    write_shot_gathers(tmp_path / "again.segy", record)
    again = read_shot_gathers(tmp_path / "again.segy")
    for name in ("source_x_m", "receiver_x_m", "origin_xy_m", "direction_xy", "source_depth_m", "receiver_depth_m"):
        assert np.asarray(getattr(again, name)) == pytest.approx(np.asarray(getattr(record, name)), abs=0.01), name
    assert np.array_equal(again.data_STR, record.data_STR)


def _set(field, values):
    def edit(f):
        for i, value in values.items():
            f.header[i].update({field: value})

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set(H.TRACE_SAMPLE_INTERVAL, {3: 2000}), "mixes sample intervals"),
        (
            lambda f: [f.header[i].update({H.SourceX: 0, H.SourceY: 0, H.GroupX: 0, H.GroupY: 0}) for i in range(10)],
            "no source or group coordinates",
        ),
        (_set(H.GroupX, {7: 10500}), "not a 2-D line"),
        (_set(H.FieldRecord, {9: 13}), "different numbers of traces"),
        (_set(H.GroupY, {6: 3000}), "neither stay where"),
        (_set(H.DelayRecordingTime, {0: 100}), r"start \[0, 100\] ms after the shot"),
    ],
    ids=["sample-rates", "no-coordinates", "3d", "trace-counts", "receivers", "delay"],
)
def test_segy_files_that_cannot_be_described_are_refused(tmp_path, edit, message):
    write_line(tmp_path / "bad.sgy", edit=edit)
    with pytest.raises(HpcinvError, match=message) as err:
        read_shot_gathers(tmp_path / "bad.sgy").receiver_layout()  # (the layout is asked for by the import)
    assert "bad.sgy" in str(err.value) or "field record 12" in str(err.value)
    (tmp_path / "empty.sgy").write_bytes(b"")
    with pytest.raises(HpcinvError, match="too short"):
        read_shot_gathers(tmp_path / "empty.sgy")


def streamer_config(**modelling) -> DataConfig:
    """Three shots 5 cells apart towing 11 receivers 2 cells apart, 50-250 m behind them, on a 46-column
    grid that reaches 50 m beyond the outermost of them (so an import with --pad-m 50 rebuilds it)."""
    return load_config(
        DataConfig,
        "tiny",
        [
            "grid.nz=24",
            "grid.nx=46",
            "grid.dx_m=10.0",
            "survey.n_shots=3",
            "survey.source_x_m=[300.0,350.0,400.0]",
            "survey.receiver_offsets_m=[-250.0,-230.0,-210.0,-190.0,-170.0,-150.0,-130.0,-110.0,-90.0,-70.0,-50.0]",
            "survey.f0_hz=10.0",  # (6 points per wavelength at 2.5 f0 down to 1500 m/s)
            "survey.dt_s=0.002",
            "survey.nt=250",
            "survey.downsample=1",
            "modelling.max_vel_mps=3000.0",
            *[f"modelling.{k}={v}" for k, v in modelling.items()],
            "dataset.n_samples=1",
            "dataset.shard_size=1",
            "dataset.splits=null",
        ],
    )


def layered(cfg: DataConfig) -> np.ndarray:
    v = np.full((cfg.grid.nz, cfg.grid.nx), 1800.0, dtype=np.float32)
    v[8:16] = 2300.0
    v[16:] = 2900.0
    return v


def streamer_record(cfg: DataConfig, gathers: np.ndarray, **more) -> ShotRecord:
    """``gathers`` modelled on ``cfg``'s survey as a SEG-Y record: positions along the line, depths below
    the free surface (one cell above the grid's top row)."""
    geometry, dx = make_geometry(cfg.survey, cfg.grid), cfg.grid.dx_m
    return ShotRecord(
        data_STR=gathers,
        dt_s=cfg.survey.dt_s,
        source_x_m=geometry.source_cells[:, 1] * dx,
        receiver_x_m=geometry.receiver_cells[..., 1] * dx,
        source_depth_m=geometry.source_cells[0, 0] * dx + dx,
        receiver_depth_m=geometry.receiver_cells[0, 0, 0] * dx + dx,
        **more,
    )


def test_a_streamer_survey_reproduces_itself_through_segy_export_and_import(tmp_path):
    cfg = streamer_config(free_surface="true")
    geometry = make_geometry(cfg.survey, cfg.grid)
    assert geometry.moving and geometry.receiver_cells.shape == (3, 11, 2)
    assert geometry.receiver_cells[:, 0, 1].tolist() == [5, 10, 15]  # the streamer moves with its shot
    assert "move with each shot" in mirror_asymmetry(geometry.source_cells, geometry.receiver_cells, cfg.grid.nx)
    v = layered(cfg)
    gathers = simulate_config(v, cfg).numpy()
    # each shot modelled alone (its own receivers) is the same shot in the all-shots call
    from hpcinv.physics.forward import model_shots

    one = model_shots(torch.tensor(v), cfg, torch.tensor([1])).detach().numpy()[0]
    np.testing.assert_allclose(one, gathers[1], rtol=1e-5, atol=1e-6 * np.abs(gathers).max())

    # export in survey coordinates (an oblique line) with the depths below the free surface, one cell up
    record = streamer_record(
        cfg, gathers, field_records=np.array([101, 102, 103]), origin_xy_m=(5000.0, 7000.0), direction_xy=(0.6, 0.8)
    )
    write_shot_gathers(tmp_path / "line.segy", record)
    recording = streamer_config(free_surface="true").model_copy(update={"survey": cfg.survey.model_copy()})
    summary = import_gathers(recording, tmp_path / "line.segy", tmp_path / "imported", pad_m=50.0, progress=False)
    assert summary["samples"] == 1
    manifest = json.loads((tmp_path / "imported" / "manifest.json").read_text())
    assert manifest["segy"]["receivers"] == "moving" and manifest["segy"]["field_records"] == [101, 102, 103]
    imported = load_config(DataConfig, str(tmp_path / "imported" / "config.yaml"))
    # the first column lies --pad-m before the line's first receiver (positions along the line start there)
    assert (imported.grid.nx, imported.grid.origin_x_m) == (cfg.grid.nx, pytest.approx(-50.0, abs=0.01))
    again = make_geometry(imported.survey, imported.grid)
    assert np.array_equal(again.source_cells, geometry.source_cells)
    assert np.array_equal(again.receiver_cells, geometry.receiver_cells)
    stored, velocity = ShardedDataset(tmp_path / "imported").read(0)
    assert velocity is None and np.array_equal(stored, gathers)
    # the imported survey models the same data from the same model
    np.testing.assert_allclose(simulate_config(v, imported).numpy(), gathers, rtol=0, atol=1e-6 * np.abs(gathers).max())


def test_the_free_surface_reflects_like_an_inverted_image_source_one_cell_above_the_top_row():
    """A homogeneous model with a free top: the difference to the absorbing run is the ghost, arriving as
    from the image of the source mirrored in the plane one cell above row 0, with inverted polarity."""
    cfg = load_config(
        DataConfig,
        "tiny",
        [
            "grid.nz=60",
            "grid.nx=60",
            "grid.dx_m=5.0",
            "survey.source_x_m=[100.0]",
            "survey.receiver_x_m=[100.0]",
            "survey.source_depth_m=50.0",
            "survey.receiver_depth_m=150.0",
            "survey.f0_hz=25.0",
            "survey.dt_s=0.0005",
            "survey.nt=500",
            "survey.downsample=1",
            "modelling.max_vel_mps=2000.0",
        ],
    )
    v = np.full((60, 60), 2000.0)
    absorbing = simulate_config(v, cfg)[0, :, 0].numpy()
    free = cfg.model_copy(update={"modelling": cfg.modelling.model_copy(update={"free_surface": True})})
    ghost = simulate_config(v, free)[0, :, 0].numpy() - absorbing
    lag = (np.argmax(np.correlate(-ghost, absorbing, mode="full")) - (len(absorbing) - 1)) * cfg.survey.dt_s
    # direct path 100 m; the image source sits at -(50 + 2 * 5) m, 210 m from the receiver
    assert lag == pytest.approx((210.0 - 100.0) / 2000.0, abs=cfg.survey.dt_s)
    assert np.abs(ghost).max() == pytest.approx(np.abs(absorbing).max() * np.sqrt(100 / 210), rel=0.15)


def test_conditioning_windows_filters_mutes_and_gains():
    dt, nt = 0.004, 500
    t = np.arange(nt) * dt
    offsets = np.array([[-300.0, -1500.0]])
    low, high = np.sin(2 * np.pi * 5 * t), np.sin(2 * np.pi * 40 * t)
    data = np.stack([low + high, low + high], axis=-1)[None].astype(np.float32)  # (1, T, 2)
    band = condition(data, dt, offsets, ConditioningSection(bandpass_hz=[0.0, 12.0]))
    middle = slice(100, 400)  # (away from the filter's edge effects)
    np.testing.assert_allclose(band[0, middle, 0], low[middle], atol=0.02)
    cut = condition(data, dt, offsets, ConditioningSection(max_time_s=1.0))
    assert cut.shape == (1, 251, 2)
    gained = condition(np.ones((1, nt, 2), np.float32), dt, offsets, ConditioningSection(gain_power=0.5))
    np.testing.assert_allclose(gained[0, :, 1], np.sqrt(t), rtol=1e-6)
    # the direct wave at |offset| / 1500 m/s is muted, 0.05 s before to 0.25 s after it; the rest kept
    weights = direct_wave_mute(nt, dt, offsets[0], 1500.0, [0.05, 0.25])
    for r, arrival in enumerate((0.2, 1.0)):
        assert weights[int(round(arrival / dt)), r] == 0.0
        assert weights[int(round((arrival - 0.1) / dt)), r] == 1.0 and weights[int(round((arrival + 0.3) / dt)), r] == 1
    with pytest.raises(HpcinvError, match="Nyquist"):
        condition(data, dt, offsets, ConditioningSection(bandpass_hz=[2.0, 200.0]))
    with pytest.raises(ValueError, match="bandpass_hz"):
        ConditioningSection(bandpass_hz=[12.0, 3.0])
    with pytest.raises(ValueError, match="one layout"):
        load_config(DataConfig, "tiny", ["survey.receiver_offsets_m=[-100.0]", "survey.n_receivers=4"])


def test_velocity_analysis_recovers_the_rms_velocities_of_flat_layers():
    """Reflections of four flat layers (1500-3000 m/s) on a 3 km streamer, each a Ricker on its exact
    hyperbola: the picked RMS velocities are within 2 % of Dix's, and his inversion of them gives the
    interval velocities and depths back."""
    thickness, v_interval = [300.0, 400.0, 500.0, 600.0], [1500.0, 2000.0, 2500.0, 3000.0]
    t0, v_rms = rms_velocities(thickness, v_interval)
    dt, nt = 0.004, 1000
    offsets = np.arange(100.0, 3001.0, 25.0)
    t = np.arange(nt)[:, None] * dt
    gather = np.zeros((nt, len(offsets)))
    for t_event, v in zip(t0, v_rms, strict=True):
        arg = np.pi * 15.0 * (t - np.sqrt(t_event**2 + (offsets / v) ** 2)[None, :])
        gather += (1 - 2 * arg**2) * np.exp(-(arg**2))
    velocities = np.arange(1400.0, 3600.0, 20.0)
    sem, power = semblance(gather, offsets, dt, velocities)
    picks = pick(sem, power, dt, velocities, min_semblance=0.3)
    assert len(picks.t0_s) == 4
    np.testing.assert_allclose(picks.t0_s, t0, atol=0.02)
    np.testing.assert_allclose(picks.v_rms_mps, v_rms, rtol=0.02)
    np.testing.assert_allclose(picks.v_interval_mps, v_interval, rtol=0.03)
    np.testing.assert_allclose(picks.depth_m, np.cumsum(thickness), rtol=0.03)
    assert picks.profile(np.array([100.0, 500.0, 1000.0, 5000.0])).tolist() == picks.v_interval_mps.tolist()
    exact = dix(t0, v_rms)  # Dix inverts his own forward relation exactly
    np.testing.assert_allclose(exact.v_interval_mps, v_interval, rtol=1e-12)
    # a pick slower than the one above it (a multiple) is dropped
    sem_multiple, power_multiple = semblance(
        gather + 2 * np.exp(-((np.pi * 15.0 * (t - np.sqrt(1.0 + (offsets / 1500.0) ** 2)[None, :])) ** 2)),
        offsets,
        dt,
        velocities,
    )
    kept = pick(sem_multiple, power_multiple, dt, velocities, min_semblance=0.3)
    assert not any(abs(x - 1.0) < 0.03 for x in kept.t0_s)


def test_refine_reports_every_shot_and_band_and_never_fits_the_held_out_shot():
    from hpcinv.config import RefineSection
    from hpcinv.refine.fwi import gaussian_smooth, refine_model

    cfg = streamer_config(free_surface="true")
    truth = layered(cfg)
    observed = simulate_config(truth, cfg).numpy()
    start = gaussian_smooth(torch.tensor(truth, dtype=torch.float64), 3.0).numpy().astype(np.float32)
    rc = RefineSection(bands_hz=[10.0, None], iterations_per_band=[3, 3], holdout_shots=[2], patience=0)
    result = refine_model(start, observed, cfg, rc, (1500.0, 3000.0))
    summary = result.summary()
    assert len(summary["shot_misfits_before"]) == len(summary["shot_misfits_after"]) == 3
    assert [b["cutoff_hz"] for b in summary["bands"]] == [10.0, None]
    assert all(b["misfit_end"] < b["misfit_start"] and "holdout_end" in b for b in summary["bands"])
    # the held-out shot's misfit fell too: the model predicts data it was not fitted to
    assert summary["holdout_misfit_after"] < summary["holdout_misfit_before"]
    assert summary["holdout_misfit_after"] == pytest.approx(summary["shot_misfits_after"][2])
    # and its data take no part in the fit or the choice of model: other data there, the same model
    other = observed.copy()
    other[2] *= -3.0
    again = refine_model(start, other, cfg, rc, (1500.0, 3000.0))
    assert np.array_equal(again.velocity, result.velocity) and again.misfit_after == result.misfit_after
    with pytest.raises(HpcinvError, match="some, not all"):
        from hpcinv.refine.driver import check_settings

        manifest = {"gathers_shape": [3, 200, 11]}
        check_settings(RefineSection(holdout_shots=[0, 1, 2]), cfg, manifest)


def test_the_wavelet_of_a_recording_is_estimated_from_a_model_close_to_its_earth():
    """Data recorded with a wavelet unknown to the modelling (a Ricker of another frequency, delayed,
    polarity reversed and scaled), modelled in the same model with the survey's Ricker: the least-squares
    estimate is the recording's wavelet; a config given those samples models the recording."""
    from hpcinv.field.wavelet import estimate_wavelet
    from hpcinv.physics import source_wavelet
    from hpcinv.physics.survey import ricker

    cfg = streamer_config()
    v = layered(cfg)
    survey = cfg.survey
    other = survey.model_copy(update={"f0_hz": 11.0, "peak_time_s": 0.15})
    true_wavelet = -2.5 * ricker(other).numpy()
    recording_cfg = cfg.model_copy(
        update={"survey": survey.model_copy(update={"wavelet_samples": true_wavelet.tolist()})}
    )
    assert np.array_equal(source_wavelet(recording_cfg.survey).numpy(), true_wavelet)
    observed = simulate_config(v, recording_cfg).numpy()
    modelled = simulate_config(v, cfg).numpy()
    estimate = estimate_wavelet(observed, modelled, ricker(survey).numpy(), damping=1e-4)
    assert np.linalg.norm(estimate - true_wavelet) < 0.03 * np.linalg.norm(true_wavelet)
    given = cfg.model_copy(update={"survey": survey.model_copy(update={"wavelet_samples": estimate.tolist()})})
    again = simulate_config(v, given).numpy()
    assert np.linalg.norm(again - observed) < 0.03 * np.linalg.norm(observed)


def test_generated_gathers_are_conditioned_like_an_import(tmp_path):
    from hpcinv.stages.base import Execution
    from hpcinv.stages.generate import run as generate
    from hpcinv.stages.requests import GenerateRequest

    cfg = load_config(
        DataConfig,
        "tiny",
        ["conditioning.bandpass_hz=[2.0,20.0]", "conditioning.mute_velocity_mps=1500.0", "conditioning.gain_power=1.0"],
    )
    generate(GenerateRequest(config=cfg, out=str(tmp_path / "d")), Execution(in_process=True, progress=False))
    ds = ShardedDataset(tmp_path / "d")
    gathers, velocity = ds.read(0)
    raw = simulate_config(velocity, cfg.model_copy(update={"conditioning": ConditioningSection()})).numpy()
    geometry = make_geometry(cfg.survey, cfg.grid)
    from hpcinv.field.condition import geometry_offsets

    expected = condition(
        raw, cfg.survey.dt_s * cfg.survey.downsample, geometry_offsets(geometry, cfg.grid.dx_m), cfg.conditioning
    )
    np.testing.assert_allclose(gathers, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert not np.allclose(gathers, raw, atol=1e-3 * np.abs(raw).max())
    with pytest.raises(HpcinvError, match="shorten survey.nt"):
        from hpcinv.generate.driver import check_dataset_config

        check_dataset_config(load_config(DataConfig, "tiny", ["conditioning.max_time_s=0.1"]))


def test_field_report_from_segy_to_misfit_per_shot_velocity_analysis_and_figures(tmp_path):
    """A streamer recording exported to SEG-Y and imported, refined from a smooth start with shot 2 held
    out, and shown by `hpcinv field-report`: misfit per shot (the held-out one marked) and per band, the
    velocity analysis, a figure per shot; inputs of the wrong kind are refused before anything is written."""
    from tests.conftest import hpcinv, one_error_line

    cfg = streamer_config(free_surface="true")
    write_shot_gathers(tmp_path / "line.sgy", streamer_record(cfg, simulate_config(layered(cfg), cfg).numpy()))
    config = tmp_path / "recording.yaml"
    from hpcinv.config import save_config

    save_config(cfg, config)
    data, refined, report = tmp_path / "data", tmp_path / "refined", tmp_path / "report"
    ran = hpcinv("import-gathers", config, "--gathers", tmp_path / "line.sgy", "--out", data, "--pad-m", "50")
    assert ran.returncode == 0, ran.stderr[-2000:]
    ran = hpcinv(
        "refine", "--data", data, "--init", "smooth", "--out", refined, "--in-process", "--quiet",
        "refine.bands_hz=[10.0,null]", "refine.iterations_per_band=[2,2]", "refine.holdout_shots=[2]",
        "refine.smooth_v_top_mps=1800.0", "refine.smooth_v_bottom_mps=2900.0", "refine.v_min_mps=1700.0",
        "refine.v_max_mps=3000.0",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    ran = hpcinv("field-report", "--data", data, "--models", f"refined={refined}", "--out", report)
    assert ran.returncode == 0, ran.stderr[-2000:]
    result = json.loads((report / "field.json").read_text())
    summary = json.loads((refined / "summary.json").read_text())["per_sample"][0]
    np.testing.assert_allclose(result["shot_misfits"]["refined"], summary["shot_misfits_after"], rtol=1e-3)
    assert result["holdout_shots"] == {"refined": [2]} and len(result["bands"]["refined"]) == 2
    assert result["velocity_analysis"]["t0_s"], "the layers' reflections were picked"
    readme = (report / "README.md").read_text()
    assert "| 2 | " in readme and " *" in readme.split("| 2 | ")[1].splitlines()[0]
    assert "Held-out shots [2]" in readme
    assert sorted(p.name for p in (report / "figures").iterdir()) == [
        "gathers_shot0.png", "gathers_shot1.png", "gathers_shot2.png", "models.png", "profiles.png", "semblance.png"
    ]  # fmt: skip
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for args, said in [
        (["--models", f"x={data}"], "--models x"),
        (["--models", f"a={refined}", f"a={refined}"], "twice"),
        (["--models", f"r={refined}", "--out", str(data)], "--out"),
    ]:
        out = [] if "--out" in args else ["--out", str(tmp_path / "other")]
        line = one_error_line(hpcinv("field-report", "--data", data, *args, *out))
        assert said in line, line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_import_estimates_the_wavelet_from_the_direct_wave(tmp_path):
    """A recording made with a wavelet the config does not know (a 12 Hz Ricker peaking at 0.06 s,
    reversed and scaled), over 360 m of water: `import-gathers --wavelet estimate` recovers it from the
    direct wave alone and records it as the dataset's wavelet."""
    from hpcinv.physics.survey import ricker

    cfg = streamer_config(free_surface="true").model_copy(
        update={"grid": streamer_config().grid.model_copy(update={"nz": 40})}
    )
    v = layered(cfg)
    v[:36] = 1500.0  # 360 m of water over the layers: the direct wave arrives alone
    true_wavelet = -2.5 * ricker(cfg.survey.model_copy(update={"f0_hz": 12.0, "peak_time_s": 0.06})).numpy()
    recording = cfg.model_copy(
        update={"survey": cfg.survey.model_copy(update={"wavelet_samples": true_wavelet.tolist()})}
    )
    write_shot_gathers(tmp_path / "line.sgy", streamer_record(cfg, simulate_config(v, recording).numpy()))
    import_gathers(cfg, tmp_path / "line.sgy", tmp_path / "d", pad_m=50.0, wavelet="estimate", progress=False)
    imported = load_config(DataConfig, str(tmp_path / "d" / "config.yaml"))
    estimate = np.asarray(imported.survey.wavelet_samples)
    assert np.linalg.norm(estimate - true_wavelet) < 0.1 * np.linalg.norm(true_wavelet)
    record = json.loads((tmp_path / "d" / "manifest.json").read_text())["wavelet_estimate"]
    assert record["traces"] == 33 and record["window_misfit"] < 0.1
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["survey"]["wavelet"] == "samples"


@pytest.mark.parametrize(
    "overrides, options, message",
    [
        (["conditioning.max_time_s=0.001"], {}, "keeps 1 sample"),
        ([], {"pad_m": 1e9}, "check the coordinate scalar"),
        (["grid.dx_m=30.0"], {}, "use grid.dx_m <= 20"),
        (
            ["conditioning.mute_window_s=[10.0,10.0]", "conditioning.mute_velocity_mps=1500.0"],
            {},
            "conditioning leaves",
        ),
        ([], {"wavelet": "estimate", "wavelet_window": (1000.0, 0.0)}, "--wavelet-after-s"),
        ([], {"wavelet": "estimate", "wavelet_window": (10.0, 0.2)}, "no receiver lies within 10 m"),
    ],
    ids=["window", "width", "cells", "mute", "after", "near"],
)
def test_segy_imports_that_cannot_work_are_refused_before_anything_is_written(tmp_path, overrides, options, message):
    write_line(tmp_path / "line.sgy")
    cfg = load_config(DataConfig, "tiny", ["grid.dx_m=10.0", "survey.f0_hz=10.0", *overrides])
    with pytest.raises(HpcinvError, match=message):
        import_gathers(cfg, tmp_path / "line.sgy", tmp_path / "out", progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_segy_with_two_traces_at_one_place_is_refused(tmp_path):
    write_line(tmp_path / "dup.sgy", edit=_set(H.GroupY, {1: 4000}))  # trace 1 of shot 0 onto trace 0's place
    with pytest.raises(HpcinvError, match="two traces at the same position"):
        read_shot_gathers(tmp_path / "dup.sgy")
