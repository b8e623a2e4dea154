"""The main job end to end, shortened: generate (Ray), train (Ray Train, 2 workers), evaluate, report."""

import json

import pytest

from hpcinv.train.loop import read_events
from tests.conftest import run_cli
from tests.wandb_offline import history

pytestmark = pytest.mark.slow  # CLI runs on Ray: not in the fast tier


def test_shortened_quickstart_writes_a_report(tmp_path):
    out = tmp_path / "qs"
    args = [
        "quickstart",
        "--out",
        str(out),
        "--quiet",
        "gen.dataset.n_samples=40",
        "gen.dataset.splits={train: 24, val: 8, test: 8}",
        "train.epochs=2",
        "train.batch_size=4",
    ]
    proc = run_cli(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out / "report" / "README.md"
    assert proc.stdout.strip() == f"report: {report}"
    text = report.read_text()
    assert "| run/checkpoint_epoch000001 | 8 |" in text and "misfit" in text and "wandb sync" in text
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    result, baseline = metrics["run/checkpoint_epoch000001"], metrics["data-free baseline (mean training model)"]
    assert result["samples"] == 8 and 0 < result["mean"]["ssim"] <= 1 and baseline["baseline_split"] == "train"
    assert result["misfit_samples"] == 8 and "data-free baseline (mean training model) | 8 |" in text
    assert len(list((out / "report" / "figures").glob("*/*.png"))) == 6
    assert any("val/mse" in row for row in history(out / "run"))
    # re-running resumes: nothing is generated or trained again
    again = run_cli(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    starts = read_events(out / "run")
    assert sum(e["event"] == "start" for e in starts) == 2  # one per rank, from the first run only
