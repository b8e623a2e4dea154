"""Evaluation: metrics definitions, data misfit, reports on runs and bare checkpoints, bad input."""

import json

import numpy as np
import pytest
import torch

from hpcinv.config import DataConfig, load_config
from hpcinv.evaluate.misfit import data_misfit
from hpcinv.metrics import velocity_metrics
from hpcinv.store import ShardedDataset
from tests.conftest import generate_small, hpcinv, one_error_line


def test_metrics_definitions_on_known_errors():
    true = torch.full((2, 1, 8, 10), 3000.0)
    pred = true.clone()
    pred[1] += 150.0  # a uniform 150 m/s error on sample 1
    m = velocity_metrics(pred, true, 1500.0, 4500.0)
    assert m["mae"].tolist() == [0.0, 150.0] and m["rmse"][1] == pytest.approx(150.0)
    assert m["mae_pm1"][1] == pytest.approx(150.0 * 2 / 3000.0)
    assert m["psnr"][1] == pytest.approx(10 * np.log10(3000.0**2 / 150.0**2))
    assert m["psnr_signal"][1] == pytest.approx(10 * np.log10(3000.0**2 / 150.0**2))
    assert m["ssim"][0] == pytest.approx(1.0, abs=1e-6) and m["ssim"][1] < 1.0


def test_data_misfit_is_zero_for_the_true_model_and_grows_with_error(tiny_dataset):
    cfg = load_config(DataConfig, tiny_dataset / "config.yaml")
    gathers, vel = ShardedDataset(tiny_dataset).read(4)
    assert data_misfit(vel, gathers, cfg) < 1e-5  # only float32 storage rounding
    small = data_misfit(vel * 1.02, gathers, cfg)
    large = data_misfit(vel * 1.10, gathers, cfg)
    assert 1e-3 < small < large
    # a dataset generated on GPUs records modelling.device=cuda: it is scored wherever evaluate runs
    on_gpus = cfg.model_copy(update={"modelling": cfg.modelling.model_copy(update={"device": "cuda"})})
    assert data_misfit(vel * 1.02, gathers, on_gpus) == pytest.approx(small, rel=1e-6)


def test_evaluate_a_run_and_a_bare_checkpoint_side_by_side(tiny_run, tiny_dataset, tmp_path):
    ckpt = next(tiny_run.glob("checkpoint_epoch*/state.pt"))
    proc = hpcinv(
        "evaluate",
        str(tiny_run),
        str(ckpt),
        "--data",
        str(tiny_dataset),
        "--out",
        str(tmp_path / "r"),
        "--misfit-samples",
        "1",
        "--figures",
        "1",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert len(results) == 3  # one row per run in the comparison, and the data-free baseline
    baseline = results.pop("data-free baseline (mean training model)")
    assert baseline["baseline_split"] is None and baseline["mean"]["mae"] > 0
    assert baseline["mean"]["spread"] < 1e-6 and baseline["mean"]["spread_ratio"] < 1e-6  # one model for all
    means = [r["mean"] for r in results.values()]
    assert means[0] == means[1]  # the run's latest checkpoint is that state.pt
    for r in results.values():
        assert r["samples"] == 24 and len(r["per_sample"]["mae"]) == 24 and r["mean"]["misfit"] > 0
        assert r["mean"]["spread"] > 0 and 0 < r["mean"]["spread_ratio"] < 2
    table = (tmp_path / "r" / "metrics.md").read_text()
    assert table.count("| run |") == 1 and "misfit" in table and "mae (m/s)" in table
    pngs = list((tmp_path / "r" / "figures").glob("*/*.png"))
    assert len(pngs) == 3 and all(p.stat().st_size > 10_000 for p in pngs)


def test_evaluate_bad_inputs(tiny_run, tiny_dataset, tmp_path):
    other = generate_small(tmp_path / "other", "dataset.n_samples=2", "survey.n_shots=3")
    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cases = [
        ([str(tiny_run), "--data", str(other)], "expects gathers [5, 200, 64]"),
        ([str(tmp_path / "nothing"), "--data", str(tiny_dataset)], "nothing' does not exist; give runs"),
        ([str(tiny_run), "--data", str(tmp_path / "nodata")], "nodata' does not exist"),
        ([str(tiny_run), "--data", str(tmp_path / "a-file")], "a-file' is a file, not a folder"),
        ([str(tiny_run), "--data", str(tiny_dataset), "--split", "nope"], "has no split 'nope'"),
        ([str(tmp_path / "junk.pt"), "--data", str(tiny_dataset)], "is not a checkpoint"),
        ([str(tiny_dataset), "--data", str(tiny_dataset)], "is a dataset made by `hpcinv generate`; give runs"),
        ([str(tiny_run), "--data", str(tiny_run)], "is a training run made by `hpcinv train`, not a dataset"),
        ([str(tiny_run), "--data", str(tiny_dataset), "--figures", "-1"], "'-1' is not a whole number >= 0"),
        ([str(tiny_run), "--data", str(tiny_dataset), "--baseline", f"{tiny_dataset}:"], "names no split"),
        ([str(tiny_run), "--data", str(tiny_dataset), "--baseline", str(tiny_run)], "--baseline"),
    ]
    for args, expect in cases:
        line = one_error_line(hpcinv("evaluate", *args, "--out", str(tmp_path / "rep")))
        assert expect in line, (args, line)
        assert not (tmp_path / "rep").exists()  # nothing is written for a refused evaluation
    line = one_error_line(hpcinv("evaluate", str(tiny_run), "--data", str(tiny_dataset), "--out", tmp_path / "a-file"))
    assert "a-file' is a file, not a folder" in line and (tmp_path / "a-file").read_text() == "mine"


def test_spread_measures_how_much_models_differ():
    from hpcinv.metrics import spread

    same = np.full((5, 4, 6), 3000.0)
    assert spread(same) == 0.0
    two = np.stack([np.full((4, 6), 2900.0), np.full((4, 6), 3100.0)])
    assert spread(two) == pytest.approx(100.0)
