"""The main job end to end, shortened: generate (Ray), train (Ray Train, 2 workers), evaluate, refine (Ray
actors), report."""

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
        "refine.iterations_per_band=[4]",
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
    # the first 2 test models refined from the network's predictions, each with its figure in the report
    refined = json.loads((out / "refine" / "summary.json").read_text())
    assert [s["index"] for s in refined["per_sample"]] == [32, 33]  # the test split begins at 32
    assert all(s["misfit_after"] < s["misfit_before"] and s["iterations"] == 4 for s in refined["per_sample"])
    assert "## Refine" in text and text.count("](../refine/figures/sample_0000") == 2
    assert all((out / "refine" / "figures" / f"sample_{i:06d}.png").is_file() for i in (32, 33))
    assert set(json.loads((out / "report" / "timings.json").read_text())) >= {"train_s", "refine_s", "total_s"}
    shards = {p: p.stat().st_mtime_ns for p in (out / "refine").rglob("*.h5")}
    # re-running resumes: nothing is generated, trained or refined again
    again = run_cli(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    starts = read_events(out / "run")
    assert sum(e["event"] == "start" for e in starts) == 2  # one per rank, from the first run only
    assert shards and {p: p.stat().st_mtime_ns for p in shards} == shards
