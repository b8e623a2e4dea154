"""Training: a real 2-worker Ray Train DDP run on CPU (gloo) with W&B offline and a killed worker (on
Ray); resume, fine-tuning, a mixture of datasets and bad inputs (one rank in this process: what they
test is hpcinv's loop, not Ray)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from hpcinv.checkpoint import BN_BUFFERS, find_checkpoint, list_checkpoints, load_state
from hpcinv.train.loop import read_events
from hpcinv.train.tracking import run_id
from tests.conftest import CLI, CONFIGS, ROOT, descendants, generate_small, hpcinv, run_cli, train_in_process
from tests.wandb_offline import history, kinds

TRAIN = str(CONFIGS / "tiny_train.yaml")


def read_events_file(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _events(run: Path) -> list[dict]:
    return read_events(run)


def _train(run: Path, dataset: Path, *overrides: str, timeout: float = 400):
    proc = run_cli("train", TRAIN, "--out", str(run), f"data.train={dataset}", *overrides, timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """Three epochs of 2-rank DDP on Ray Train, with validation, weight digests and W&B offline."""
    run = tmp_path_factory.mktemp("train") / "run"
    proc = _train(run, tiny_dataset, f"data.val={tiny_dataset}", "train.epochs=3", "train.record_weights_digest=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a log that is not a terminal gets one line per epoch, and none of Ray Train's cleaner noise
    lines = [line for line in proc.stderr.splitlines() if "samples/s), loss" in line]
    assert [line.split("epoch ")[1][:4] for line in lines] == ["1/3:", "2/3:", "3/3:"], proc.stderr[-3000:]
    assert "val MAE" in lines[-1] and "ETA 0 min 00 s" in lines[-1]
    assert "Failed to query Ray Train Controller" not in proc.stderr and "it/s]" not in proc.stderr
    return run, json.loads(proc.stdout)


@pytest.mark.slow
def test_two_worker_ddp_run(trained):
    run, summary = trained
    events = _events(run)
    ends = [e for e in events if e["event"] == "epoch_end"]
    # each rank writes its own event file (no two nodes append to one file)
    assert {e["rank"] for e in read_events_file(run / "events.rank1.jsonl")} == {1}
    assert {e.get("rank", 0) for e in read_events_file(run / "events.jsonl")} == {0}
    # both ranks hold identical weights after every epoch (DDP keeps them in step)
    for epoch in range(3):
        digests = {e["rank"]: e["weights"] for e in ends if e["epoch"] == epoch}
        assert set(digests) == {0, 1} and digests[0] == digests[1]
    losses = [e["metrics"]["train/epoch_loss"] for e in ends if e["rank"] == 0]
    assert len(losses) == 3 and losses[-1] < losses[0]
    metrics = summary["metrics"]
    for key in ("val/mse", "val/mae", "val/rmse", "val/ssim", "val/psnr", "val/psnr_signal", "val/mae_pm1"):
        assert key in metrics and metrics[key] == metrics[key]  # present and not NaN
    assert metrics["val/samples"] == 24 and summary["epochs_done"] == 3
    kept = sorted(p.name for p in run.glob("checkpoint_epoch*"))
    assert kept == ["checkpoint_epoch000001", "checkpoint_epoch000002"]  # keep_checkpoints: 2
    state = load_state(run)  # the latest, read with weights_only=True
    assert state["epoch"] == 2 and state["step"] == 12
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config", "model_spec", "normaliser"} <= set(state)


@pytest.mark.slow
def test_wandb_offline_run_can_be_read_back(trained):
    run, summary = trained
    offline = list(run.glob("wandb/offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(run_id(run))
    rows = history(run)
    train_losses = [r["train/loss"] for r in rows if "train/samples_per_s" in r]
    assert len(train_losses) == 12  # log_every_steps: 1, 3 epochs x 4 steps
    val = [r for r in rows if "val/mse" in r]
    assert [r["epoch"] for r in val] == [0, 1, 2]
    assert val[-1]["val/mse"] == pytest.approx(summary["metrics"]["val/mse"])
    assert any("val/figure/path" in r for r in rows)
    assert all(k in rows[0] for k in ("train/lr", "train/samples_per_s", "train/step_time_s", "train/peak_memory_mb"))
    assert kinds(run).get("artifact", 0) >= 1  # best checkpoint
    assert "WANDB_API_KEY" not in (run / "wandb" / "debug.log").read_text()


def test_resume_continues_from_the_last_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    first = train_in_process(run, tiny_dataset, "train.epochs=3", "train.stop_after_epochs=1")
    assert first["epochs_done"] == 1
    # resumed reading from the rank cache instead of disk (a setting that may change on resume)
    train_in_process(run, tiny_dataset, "train.epochs=3", "data.cache=memory")
    events = _events(run)
    resumed = [e for e in events if e["event"] == "resume"]
    assert resumed and {e["epoch"] for e in resumed} == {1} and {e["step"] for e in resumed} == {6}
    epochs = [e["epoch"] for e in events if e["event"] == "epoch_end" and e["rank"] == 0]
    assert epochs == [0, 1, 2]  # nothing recomputed from scratch
    assert load_state(run)["epoch"] == 2
    # a finished run is not started again: the same command returns its result at once
    t0 = time.time()
    again = train_in_process(run, tiny_dataset, "train.epochs=3")
    assert again["epochs_done"] == 3 and time.time() - t0 < 5
    assert len([e for e in _events(run) if e["event"] in ("start", "resume")]) == 2


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_and_finishes(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = [
        *CLI,
        "train",
        TRAIN,
        "--out",
        str(run),
        f"data.train={tiny_dataset}",
        "train.epochs=8",
        "tracking.mode=disabled",
        "data.loader_workers=1",  # a rank with a reader process is killed, restarted and resumed
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list_checkpoints(run):  # kill once a checkpoint is on disk
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    workers = descendants(proc.pid, "ray::RayTrainWorker")
    assert workers, "no training worker process found"
    os.kill(workers[-1].pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]
    events = _events(run)
    resumed = [e for e in events if e["event"] == "resume"]
    assert resumed, "training should have restarted from a checkpoint"
    assert min(e["epoch"] for e in resumed) >= 1 and all(e["step"] == e["epoch"] * 4 for e in resumed)
    assert json.loads(stdout)["epochs_done"] == 8 and load_state(run)["epoch"] == 7


@pytest.mark.slow
def test_fine_tune_loads_weights_and_can_freeze_the_encoder(trained, tiny_dataset, tmp_path):
    source_run, _ = trained
    run = tmp_path / "ft"
    train_in_process(
        run,
        tiny_dataset,
        f"train.init_from={source_run}",
        "train.freeze_encoder=true",
        "train.epochs=1",
        "train.lr=0.0005",
    )
    init = next(e for e in _events(run) if e["event"] == "init_from")
    source = load_state(source_run)
    assert init["weights"] == init["source_weights"]  # equal before the first step
    tuned = load_state(run)["model"]
    encoder = [k for k in tuned if k.startswith(("downs.", "center.")) and not k.endswith(BN_BUFFERS)]
    decoder = [k for k in tuned if k.startswith("ups.")]
    assert encoder and all(torch.equal(tuned[k], source["model"][k]) for k in encoder)
    assert any(not torch.equal(tuned[k], source["model"][k]) for k in decoder)


def test_bad_training_inputs_fail_before_anything_starts(tiny_dataset, tiny_run, tmp_path):
    cases = [
        ([f"data.train={tmp_path / 'missing'}"], f"data.train '{tmp_path / 'missing'}' does not exist"),
        ([f"data.train={tiny_dataset}", "data.train_split=train"], "data.train_split='train' is not a split"),
        (
            [f"data.train={tiny_dataset}", "model.name=inversionnet", f"train.init_from={tiny_run}"],
            "holds fcnvmb for gathers [5, 200, 64]",
        ),
        ([f"data.train={tiny_dataset}", f"train.init_from={tmp_path}"], "no checkpoint at"),
        ([f"data.train={tiny_dataset}", f"train.init_from={tiny_dataset}"], "is a dataset made by `hpcinv generate`"),
        ([f"data.train={tiny_dataset}", "train.batch_size=20"], "exceeds the 24 training samples"),
        ([f"data.train={tiny_dataset}", "train.optimiser=sgd"], "unknown key 'train.optimiser'"),
        (
            [f"data.train={tiny_dataset}", "data.mirror_probability=0.5"],
            "data.mirror_probability=0.5 needs a left-right symmetric survey",
        ),
        ([f"data.train={tiny_dataset}", "--in-process"], "--in-process trains one rank in this process"),
        ([f"data.train={tiny_dataset}", f"data.mix=[{tiny_dataset}]"], "name the same data twice"),
    ]
    import ray

    for overrides, expect in cases:
        t0 = time.time()
        proc = hpcinv("train", TRAIN, "--out", tmp_path / "r", *overrides)
        assert proc.returncode == 2 and expect in proc.stderr, (overrides, proc.stderr[-2000:])
        assert not (tmp_path / "r").exists() and time.time() - t0 < 30
        assert not ray.is_initialized()  # refused before Ray
    proc = hpcinv("train", TRAIN, "--out", tiny_run, f"data.train={tiny_dataset}", "train.lr=0.1")
    assert proc.returncode == 2 and "holds a run with a different config: " in proc.stderr
    assert "train.lr is 0.002 there, 0.1 here" in proc.stderr  # (scaling and tracking differ too; epochs may)
    assert find_checkpoint(tiny_run).parent.name == "checkpoint_epoch000000"


def test_training_on_a_mixture_of_datasets(tiny_dataset, tmp_path):
    """data.mix adds a second dataset (another seed of the same survey): every epoch sees both, the
    checkpoint records both, and evaluate's data-free baseline averages both; another survey is refused."""
    second = generate_small(tmp_path / "second", "dataset.seed=7", "dataset.n_samples=8", "dataset.shard_size=4")
    run = tmp_path / "run"
    relative = os.path.relpath(second)  # resolved against the cwd before the workers (any cwd) see it
    train_in_process(run, tiny_dataset, f"data.mix=[{relative}]", "train.epochs=1", "data.loader_workers=2")
    ends = [e for e in _events(run) if e["event"] == "epoch_end" and "metrics" in e]
    from hpcinv.feed import Concatenated
    from hpcinv.feed.sampler import ShardAwareSampler
    from hpcinv.store import ShardedDataset

    mixed = Concatenated([ShardedDataset(tiny_dataset), ShardedDataset(second)])
    assert len(mixed) == 24 + 8 and ends[-1]["metrics"]["train/epoch_samples"] == 32  # one rank: each sample once
    # on two ranks, shards of 8, 8, 8, 4, 4 samples are dealt as 20 and 12, and the shorter rank wraps to 20
    assert [len(ShardAwareSampler(mixed.positions_by_shard(), rank, 2)) for rank in (0, 1)] == [20, 20]
    state = load_state(find_checkpoint(run))
    assert state["dataset"]["mix"] == [str(second)]

    report = tmp_path / "report"
    proc = hpcinv("evaluate", run, "--data", second, "--out", report, "--misfit-samples", "1", "--figures", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    baseline = json.loads((report / "metrics.json").read_text())["data-free baseline (mean training model)"]
    assert baseline["baseline_mix"] == [str(second)]

    other = generate_small(tmp_path / "other", "survey.f0_hz=7.0", "dataset.n_samples=8", "dataset.shard_size=4")
    proc = hpcinv("train", TRAIN, "--out", tmp_path / "r2", f"data.train={tiny_dataset}", f"data.mix=[{other}]")
    assert proc.returncode == 2 and f"data.mix entry '{other}'" in proc.stderr and "survey: f0_hz" in proc.stderr


def test_the_model_domain_unet_learns_a_tiny_set(tiny_dataset, tmp_path):
    """Loss falls and the validation MAE beats the data-free baseline (the mean model) on the tiny set."""
    import numpy as np

    from hpcinv.store import ShardedDataset

    run = tmp_path / "run"
    train_in_process(
        run,
        tiny_dataset,
        "model.name=model_domain_unet",
        f"data.val={tiny_dataset}",
        "train.epochs=12",
        "train.loss=l1",
    )
    ends = [e["metrics"] for e in _events(run) if e["event"] == "epoch_end" and e["rank"] == 0]
    assert len(ends) == 12 and ends[-1]["train/epoch_loss"] < 0.6 * ends[0]["train/epoch_loss"]
    data = ShardedDataset(tiny_dataset)
    vel = np.stack([data.read(i)[1] for i in range(len(data))]).astype(np.float64)
    baseline_mae = float(np.abs(vel - vel.mean(axis=0)).mean())
    assert ends[-1]["val/mae"] < 0.8 * baseline_mae, (ends[-1]["val/mae"], baseline_mae)
