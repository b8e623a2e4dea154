"""predict and refine: FWI physics, bounds, resume after killed actors and drivers, gathers-only data,
bit-identical predictions, bad inputs, and evaluate's side-by-side table with the baseline row."""

import json
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch

from hpcinv.config import RefineSection
from hpcinv.refine.fwi import gaussian_smooth, lowpass, refine_model
from hpcinv.store import ShardedDataset, load_dataset_config, plan_shards, read_manifest, write_manifest
from hpcinv.store.velocities import VelocityStore, read_store_manifest, store_manifest, write_velocity_shard
from tests.conftest import CLI, CONFIGS, ROOT, descendants, generate_small, hpcinv, one_error_line

TINY = str(CONFIGS / "tiny.yaml")
FAST = ["refine.bands_hz=[6.0, null]", "refine.iterations_per_band=[4, 6]", "refine.patience=0"]
FEWER = ["refine.bands_hz=[6.0, null]", "refine.iterations_per_band=[2, 2]", "refine.patience=0"]  # (not scored)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 6-sample tiny dataset in 2 shards."""
    return generate_small(tmp_path_factory.mktemp("refine") / "ds", "dataset.n_samples=6", "dataset.shard_size=3")


def smoothed_store(ds_root, out, sigma=3.0, n=None):
    """A velocity store holding each true model blurred by a Gaussian of ``sigma`` cells."""
    manifest = read_manifest(ds_root)
    n = n or manifest["n_samples"]
    ds = ShardedDataset(ds_root)
    new = store_manifest("prediction", "smoothed-truth", ds_root, manifest, None, (0, n), 4, {"note": "test"})
    (out / "shards").mkdir(parents=True)
    records = []
    for spec in plan_shards(n, 4):
        vel = np.stack(
            [gaussian_smooth(torch.from_numpy(ds.read(i)[1]), sigma).numpy() for i in range(spec.start, spec.stop)]
        )
        records.append(write_velocity_shard(out / "shards", spec, 0, vel, config_hash="smoothed-truth"))
    write_manifest(out, new | {"shards": records})
    return out


def test_lowpass_keeps_the_band_below_the_cutoff_and_removes_the_rest():
    dt, nt = 0.004, 500
    t = torch.arange(nt, dtype=torch.float64) * dt
    low, high = torch.sin(2 * torch.pi * 3 * t), torch.sin(2 * torch.pi * 30 * t)
    out = lowpass((low + high)[:, None], 10.0, dt)[:, 0]
    inner = slice(100, 400)  # away from the record's ends
    assert torch.allclose(out[inner], low[inner], atol=0.02)


@pytest.mark.slow
def test_fwi_from_a_smoothed_true_model_cuts_misfit_5x_and_velocity_error_within_bounds(small):
    cfg = load_dataset_config(small)
    gathers, truth = ShardedDataset(small).read(0)
    start = gaussian_smooth(torch.from_numpy(truth), 3.0).numpy()
    rc = RefineSection(bands_hz=[6.0, None], iterations_per_band=[10, 25], lr_mps=40.0, patience=0)
    bounds = (1800.0, 4200.0)  # below the salt (4500 m/s): the bound must hold against the gradient
    result = refine_model(start, gathers, cfg, rc, bounds)
    assert result.misfit_after <= result.misfit_before / 5, result.summary()
    mae = lambda v: float(np.abs(np.clip(v, 0, None) - truth).mean())  # noqa: E731
    assert mae(result.velocity) < mae(np.clip(start, *bounds)), result.summary()
    assert result.velocity.min() >= bounds[0] and result.velocity.max() <= bounds[1]
    assert len(result.history) == 35 and result.band_ends == [10, 35] and not result.kept_start


def test_safeguard_never_returns_a_model_that_fits_the_data_worse_than_its_start(small):
    cfg = load_dataset_config(small)
    gathers, truth = ShardedDataset(small).read(1)
    exact = refine_model(truth, gathers, cfg, RefineSection(bands_hz=[None], iterations_per_band=[3]), (1800.0, 4500.0))
    assert exact.misfit_before == 0.0 and exact.stopped == "start_fits" and exact.history == []
    assert exact.velocity.tobytes() == truth.tobytes()
    start = gaussian_smooth(torch.from_numpy(truth), 2.0).numpy()
    wild = RefineSection(bands_hz=[None], iterations_per_band=[3], lr_mps=1500.0, smooth_gradient_cells=0.0)
    result = refine_model(start, gathers, cfg, wild, (1800.0, 4500.0))  # steps of 1500 m/s: every one makes it worse
    assert result.band_misfits[0] > result.misfit_before and result.kept_start
    assert result.misfit_after == result.misfit_before and result.velocity.tobytes() == start.tobytes()


@pytest.mark.slow
def test_refine_from_a_store_writes_a_store_summary_and_figures_and_evaluate_compares_all(small, tmp_path):
    start = smoothed_store(small, tmp_path / "start")
    out = tmp_path / "refined"
    n = 3  # of the 6: a documented subset, as the report says
    proc = hpcinv(
        "refine", "--data", small, "--init", start, "--out", out, "--samples", n, "--in-process", "--quiet", *FAST
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == n and len(summary["per_sample"]) == n and summary["bounds_mps"] == [1800.0, 4500.0]
    assert summary["mean"]["misfit_after"] < summary["mean"]["misfit_before"]
    assert summary["mean"]["mae_after"] < summary["mean"]["mae_before"]
    assert [len(list((out / "figures").glob("*.png")))] == [2]
    store = VelocityStore(out)
    indices, vel = store.read_range(0, n)
    assert indices.tolist() == list(range(n)) and vel.min() >= 1800.0 and vel.max() <= 4500.0
    with h5py.File(out / "shards" / "shard-000000.h5") as fh:
        history = fh["misfit_history"][:]
    assert history.shape == (n, 10) and np.isfinite(history).all()
    # one report: the start, the refined models and the data-free baseline, all on the same samples
    report = tmp_path / "report"
    proc = hpcinv(
        "evaluate",
        str(start),
        str(out),
        "--data",
        str(small),
        "--split",
        "all",
        "--samples",
        str(n),
        "--out",
        str(report),
        "--baseline",
        str(small),
        "--figures",
        "1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((report / "metrics.json").read_text())
    # the evaluated split is recorded, not the baseline's (which names none here)
    assert {r["split"] for r in results.values()} == {"all"}
    assert f"(split `all`, its first {n} samples)" in (report / "metrics.md").read_text()  # the subset is said
    assert list(results) == ["start (prediction)", "refined (refined)", "data-free baseline (mean model of ds)"]
    assert all(r["samples"] == n and r["misfit_samples"] == n for r in results.values())
    refined, started = results["refined (refined)"]["mean"], results["start (prediction)"]["mean"]
    assert refined["misfit"] < started["misfit"] and refined["mae"] < started["mae"]
    assert np.isclose(refined["misfit"], summary["mean"]["misfit_after"], rtol=1e-3)
    text = (report / "metrics.md").read_text()
    assert "data-free baseline (mean model of ds)" in text and f"mean velocity model of `{small}`" in text


def _wait_for(condition, proc, what, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"refine finished before {what}"
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def _on_disk(out):
    return len(list((out / "shards").glob("shard-*.h5")))


def _check_store(out, n):
    store = VelocityStore(out)
    indices, _ = store.read_range(0, n)
    assert indices.tolist() == list(range(n))
    assert json.loads((out / "summary.json").read_text())["samples"] == n


@pytest.mark.slow
def test_killed_refine_actor_and_killed_driver_lose_nothing(small, tmp_path):
    out = tmp_path / "refined"
    args = [
        *CLI,
        "refine",
        "--data",
        str(small),
        "--init",
        "smooth",
        "--out",
        str(out),
        "--quiet",
        "--workers",
        "2",
        "--figures",
        "0",
        "refine.shard_size=1",
        *FEWER,
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _on_disk(out) >= 1, proc, "one shard was written")
    victims = descendants(proc.pid, "ray::ShardActor")
    assert victims, "no refine actor process found"
    os.kill(victims[0].pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["computed_shards"] == 6 and summary["failures_retried"] >= 1
    _check_store(out, 6)
    _, first = VelocityStore(out).read_range(0, 6)

    # the driver killed: the re-run keeps every finished shard and computes only the missing ones
    out2 = tmp_path / "again"
    args[args.index(str(out))] = str(out2)
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    _wait_for(lambda: _on_disk(out2) >= 2, proc, "two shards were written")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = _on_disk(out2)
    assert kept < 6
    # resumed in this process: where the shards are computed is not part of what the store holds
    rerun = hpcinv(*[a for a in args[3:] if a not in ("--workers", "2")], "--in-process")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["skipped_shards"] >= kept and summary["computed_shards"] + summary["skipped_shards"] == 6
    assert summary["computed_shards"] <= 6 - kept
    _check_store(out2, 6)
    _, again = VelocityStore(out2).read_range(0, 6)
    assert again.tobytes() == first.tobytes()  # deterministic: the same request gives the same models


@pytest.mark.slow
def test_predict_is_bit_identical_and_gathers_only_data_can_be_predicted_refined_and_scored(
    tiny_run, tiny_dataset, tmp_path
):
    runs = []
    for name in ("a", "b"):
        proc = hpcinv(
            "predict",
            str(tiny_run),
            "--data",
            str(tiny_dataset),
            "--out",
            str(tmp_path / name),
            "--quiet",
            "--shard-size",
            "5",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(tmp_path / name)
    first, second = (sorted(p.read_bytes() for p in (r / "shards").glob("*.h5")) for r in runs)
    assert first == second and len(first) == 5  # 24 samples in shards of 5
    manifest = read_store_manifest(runs[0])
    assert manifest["kind"] == "prediction" and manifest["complete"] and manifest["n_samples"] == 24
    assert manifest["source"]["checkpoint_sha256"] and manifest["dataset"]["range"] == [0, 24]

    # recorded gathers only: import, predict, refine from the network, score by data misfit
    ds = ShardedDataset(tiny_dataset)
    np.save(tmp_path / "g.npy", np.stack([ds.read(i)[0] for i in range(4)]))
    field = tmp_path / "field"
    proc = hpcinv(
        "import-gathers", TINY, "--gathers", tmp_path / "g.npy", "--out", field, "--quiet", "dataset.n_samples=null"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not read_manifest(field)["has_velocity"]
    proc = hpcinv("predict", str(tiny_run), "--data", str(field), "--out", str(tmp_path / "fp"), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, predicted = VelocityStore(tmp_path / "fp").read_range(0, 4)
    _, reference = VelocityStore(runs[0]).read_range(0, 4)
    assert predicted.tobytes() == reference.tobytes()  # the same gathers give the same velocities
    out = tmp_path / "fr"
    proc = hpcinv(
        "refine",
        "--data",
        str(field),
        "--init",
        str(tiny_run),
        "--out",
        str(out),
        "--in-process",
        "--quiet",
        "refine.shard_size=2",
        "refine.start_outside_max_fraction=1.0",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 4 and summary["mean"]["misfit_after"] <= summary["mean"]["misfit_before"]
    assert "mae_before" not in summary["mean"] and (out / "start" / "manifest.json").is_file()
    proc = hpcinv(
        "evaluate",
        str(out),
        "--data",
        str(field),
        "--out",
        str(tmp_path / "rep"),
        "--figures",
        "1",
        "--baseline",
        str(tiny_dataset),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    # no true velocities: the data misfit, and how much the models differ (no ratio to a truth's spread)
    assert set(results["fr (refined)"]["mean"]) == {"misfit", "spread"} and len(results) == 2
    proc = hpcinv(
        "train",
        str(CONFIGS / "tiny_train.yaml"),
        "--out",
        str(tmp_path / "t"),
        f"data.train={field}",
        "tracking.mode=disabled",
    )
    assert "holds gathers only" in one_error_line(proc)


def test_refine_bad_inputs_are_one_line_and_write_nothing(small, tiny_run, tiny_dataset, tmp_path):
    other = generate_small(tmp_path / "other", "dataset.n_samples=2", "dataset.shard_size=2", "survey.f0_hz=7.0")
    start = smoothed_store(small, tmp_path / "start")
    out = tmp_path / "out"
    cases = [
        (["--data", str(other), "--init", str(tiny_run)], "was recorded with another survey"),
        (["--data", str(tiny_dataset), "--init", str(start)], "holds velocities of dataset"),
        (["--data", str(small), "--init", "smooth", "refine.v_min_mps=3000"], "exclude the start"),
        (["--data", str(small), "--init", "smooth", "refine.v_min_mps=3000"], "clip the start into the bounds with"),
        (["--data", str(small), "--init", "smooth", "refine.v_max_mps=5000"], "max_vel_mps=4500"),
        (["--data", str(small), "--init", "smooth", "refine.v_min_mps=1000"], "dispersive"),
        (
            [
                "--data",
                str(small),
                "--init",
                "smooth",
                "refine.bands_hz=[null, 3.0]",
                "refine.iterations_per_band=[5, 5]",
            ],
            "bands_hz must rise",
        ),
        (["--data", str(small), "--init", str(tmp_path / "nope")], "nope' does not exist; give a run or checkpoint"),
        (["--data", str(small), "--init", str(small)], "is a dataset made by `hpcinv generate`, not a run"),
        (["--data", str(start), "--init", "smooth"], "is a velocity store of network predictions made by"),
        (["--data", str(small), "--init", "smooth", "refine.freeze_top_cells=48"], "freezes the whole model"),
        (["--data", str(small), "--init", "smooth", "refine.shots_per_iteration=6"], "exceeds the 5 shots"),
        (["--data", str(small), "--init", "smooth", "refine.smooth_v_top_mps=1000"], "smooth_v_top_mps"),
        (["--data", str(small), "--init", "smooth", f"refine.smooth_reference={start}"], "smooth_reference"),
        (["--data", str(small), "--init", "smooth", "refine.device=cuda"], "refine.device='cuda'"),
    ]
    for args, expected in cases:
        line = one_error_line(hpcinv("refine", *args, "--out", str(out), "--in-process"))
        assert expected in line, (args, line)
        assert not out.exists(), args
    line = one_error_line(hpcinv("predict", str(tiny_run), "--data", str(other), "--out", str(out)))
    assert "another survey" in line and not out.exists()
