"""Nothing lost, nothing silently wrong: dataset locks, consistent resumes, verified reads, finite
checkpoints, survey-checked evaluation, interrupts, GPU requests without GPUs, unreachable W&B."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import h5py
import pytest
import torch

from hpcinv.checkpoint import list_checkpoints, load_state, nonfinite_entries
from hpcinv.config import TrackingSection
from hpcinv.errors import DataError
from hpcinv.store import ShardedDataset, folder_lock, read_manifest, verify_dataset
from hpcinv.train.loop import read_events
from tests.conftest import CONFIGS, ROOT, generate_small, hpcinv, one_error_line, run_cli

TINY = str(CONFIGS / "tiny.yaml")
TRAIN = str(CONFIGS / "tiny_train.yaml")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _zero_chunk(shard, row: int, name: str = "gathers") -> None:
    """Overwrite one sample's stored chunk with zeros, in place: the file keeps its size."""
    with h5py.File(shard, "r") as fh:
        info = fh[name].id.get_chunk_info_by_coord((row,) + (0,) * (fh[name].ndim - 1))
    with open(shard, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\0" * info.size)


def _events(run) -> list[dict]:
    return read_events(run)


def _newest_epoch(run) -> int:
    found = list_checkpoints(run)
    return int(found[-1].name.removeprefix("checkpoint_epoch")) if found else -1


def _popen(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hpcinv.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _wait(what: str, condition, proc: subprocess.Popen | None = None, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


# ------------------------------------------------------------------------------- dataset locks


@pytest.mark.slow
def test_a_second_writer_is_refused_and_the_first_dataset_verifies(tmp_path):
    out = tmp_path / "ds"
    first = _popen(
        "generate", TINY, "--out", str(out), "--quiet", "--in-process", "dataset.n_samples=200", "dataset.shard_size=4"
    )

    def shards_written() -> int:
        with contextlib.suppress(Exception):
            return len(read_manifest(out)["shards"])
        return 0

    _wait("the first shard", lambda: shards_written() >= 1, first)
    same = hpcinv("generate", TINY, "--out", str(out), "--in-process", "dataset.n_samples=200", "dataset.shard_size=4")
    line = one_error_line(same)
    assert f"dataset folder '{out}' is in use by" in line and f"pid {first.pid}" in line
    other = hpcinv(
        "generate", TINY, "--out", str(out), "--in-process", "--restart", "dataset.n_samples=8", "dataset.seed=1"
    )
    assert "is in use by" in one_error_line(other)
    assert first.poll() is None, "the first run should still be running"
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["computed_shards"] == 50
    report = verify_dataset(out)
    assert report.ok and report.samples_ok == 200, report.problems


def test_array_parts_share_the_lock_but_exclude_a_whole_run(tmp_path):
    out = tmp_path / "ds"
    args = ["generate", TINY, "--out", str(out), "--quiet", "--in-process", "dataset.n_samples=16"]
    with folder_lock(out, shared=True):  # as another part of the same array job would
        assert "is in use by" in one_error_line(hpcinv(*args))
        part = hpcinv(*args, "--part", "0/2")
        assert part.returncode == 0, part.stderr[-2000:]
        assert json.loads(part.stdout)["computed_shards"] == 1
    final = hpcinv(*args)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout)
    assert summary["skipped_shards"] == 1 and summary["computed_shards"] == 1 and verify_dataset(out).ok


def test_array_parts_keep_their_records_so_the_merge_reads_no_shard(tmp_path, monkeypatch):
    """Parts record their shards beside them; a requeued part and the merge resume from those records by
    a stat per shard (no hash, no HDF5 open), and the merge removes them once the manifest is complete."""
    import hpcinv.store.writer as writer

    opened = []
    monkeypatch.setattr(writer, "file_sha256", lambda path: opened.append(path.name))
    monkeypatch.setattr(writer, "read_shard_record", lambda path, *a: opened.append(path.name))
    out = tmp_path / "ds"
    args = ["generate", TINY, "--out", str(out), "--quiet", "--in-process", "dataset.n_samples=32"]
    for part in ("0/3", "1/3", "2/3", "1/3"):  # the last one: part 1 requeued, with nothing left to do
        ran = hpcinv(*args, "--part", part)
        assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads(ran.stdout)["computed_shards"] == 0 and json.loads(ran.stdout)["skipped_shards"] == 1
    assert len(list((out / "shards").glob("part-*-of-0003.json"))) == 3
    merged = hpcinv(*args)
    assert merged.returncode == 0, merged.stderr[-2000:]
    assert json.loads(merged.stdout)["skipped_shards"] == 4 and opened == []
    assert not list((out / "shards").glob("part-*")) and read_manifest(out)["complete"] and verify_dataset(out).ok


def test_resume_needs_config_manifest_and_request_to_agree(tiny_dataset, tmp_path):
    ds = _copy(tiny_dataset, tmp_path / "ds")
    line = one_error_line(hpcinv("generate", TINY, "--out", str(ds), "dataset.n_samples=8", "survey.f0_hz=7.0"))
    assert "dataset.n_samples is 24 there, 8 here" in line and "survey.f0_hz is 8.0 there, 7.0 here" in line
    config = ds / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 5"))
    before = {p.name: p.read_bytes() for p in (ds / "shards").iterdir()}
    line = one_error_line(hpcinv("generate", TINY, "--out", str(ds), "dataset.seed=5"))
    assert "config.yaml (hash" in line and "disagree: two different runs wrote into it" in line
    line = one_error_line(hpcinv("generate", TINY, "--out", str(ds)))
    assert "disagree" in line
    assert {p.name: p.read_bytes() for p in (ds / "shards").iterdir()} == before  # nothing touched


def test_a_damaged_manifest_is_rebuilt_from_the_shards(tiny_dataset, tmp_path):
    ds = _copy(tiny_dataset, tmp_path / "ds")
    for content in (b"\x89\x00garbage\xff", b"[1, 2, 3]", b'{"format": "hpcinv-dataset", "format_version": 2}'):
        (ds / "manifest.json").write_bytes(content)
        proc = hpcinv("verify", str(ds))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stdout.startswith("FAIL ") and "damaged manifest" in proc.stdout
    line = one_error_line(hpcinv("train", TRAIN, "--out", str(tmp_path / "r"), f"data.train={ds}"))
    assert "damaged manifest" in line
    rebuilt = hpcinv("generate", TINY, "--out", str(ds), "--quiet", "--in-process")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    summary = json.loads(rebuilt.stdout)
    assert summary["computed_shards"] == 0 and summary["skipped_shards"] == 3
    # the same manifest but for the times of the files, which the copy changed
    untimed = [{k: v for k, v in r.items() if not k.endswith("time_ns")} for r in read_manifest(tiny_dataset)["shards"]]
    assert read_manifest(ds) | {"shards": untimed} == read_manifest(tiny_dataset) | {"shards": untimed}
    assert [{k: v for k, v in r.items() if not k.endswith("time_ns")} for r in read_manifest(ds)["shards"]] == untimed


# ------------------------------------------------------------------------------- verified reads


def test_reads_check_each_shard_and_each_sample(tiny_dataset, tmp_path):
    ds = _copy(tiny_dataset, tmp_path / "ds")
    _zero_chunk(ds / "shards" / "shard-000001.h5", row=1)
    reader = ShardedDataset(ds)
    reader.read(8)  # the rest of the shard reads fine
    with pytest.raises(DataError, match=r"shard-000001\.h5: sample 9 \(row 1\) is damaged"):
        reader.read(9)
    assert verify_dataset(ds, checksums=False).ok  # same size, same header: only the chunk checksum sees it
    assert "shard-000001.h5: corrupted: sha256" in verify_dataset(ds).problems[0]
    shutil.copy(ds / "shards" / "shard-000002.h5", ds / "shards" / "shard-000000.h5")
    with pytest.raises(DataError, match=r"shard-000000\.h5: holds samples 16\.\.23 .* manifest says samples 0\.\.7"):
        ShardedDataset(ds).read(0)


def _generate(ds, *args):
    ran = hpcinv("generate", TINY, "--out", str(ds), "--quiet", "--in-process", *args)
    assert ran.returncode == 0, ran.stderr[-2000:]
    return json.loads(ran.stdout)


def _times_recorded(ds) -> bool:
    return all(
        (r["mtime_ns"], r["ctime_ns"]) == ((st := (ds / "shards" / r["name"]).stat()).st_mtime_ns, st.st_ctime_ns)
        for r in read_manifest(ds)["shards"]
    )


def test_resume_costs_a_stat_per_shard_and_damage_is_still_caught(tiny_dataset, tmp_path, monkeypatch):
    """O(manifest) resume: an unchanged shard is kept by one stat, never re-read; a copied store is hashed
    once; a shard whose times changed is hashed; damage the stat cannot see is caught on read, and
    ``--verify full`` recomputes it."""
    import hpcinv.store.writer as writer

    hashed = []
    real_sha256 = writer.file_sha256
    monkeypatch.setattr(writer, "file_sha256", lambda path: hashed.append(path.name) or real_sha256(path))
    ds = _copy(tiny_dataset, tmp_path / "ds")  # a copy: new times, so every shard is hashed once
    assert not _times_recorded(ds)
    assert _generate(ds)["skipped_shards"] == 3 and len(hashed) == 3 and _times_recorded(ds)
    hashed.clear()
    assert _generate(ds)["skipped_shards"] == 3 and hashed == []  # a complete store: a stat each, nothing read
    shard = ds / "shards" / "shard-000001.h5"
    # damage that leaves no trace in the file's metadata (a flipped block under the file system): the
    # record is given the damaged file's times, so that the stat cannot see it
    _zero_chunk(shard, row=1)
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["shards"][1] |= {"mtime_ns": shard.stat().st_mtime_ns, "ctime_ns": shard.stat().st_ctime_ns}
    (ds / "manifest.json").write_text(json.dumps(manifest))
    assert _generate(ds)["computed_shards"] == 0 and hashed == []  # trusted by its stat ...
    with pytest.raises(DataError, match=r"sample 9 \(row 1\) is damaged.*`hpcinv generate --verify full`"):
        ShardedDataset(ds).read(9)  # ... and caught by the sample's own checksum when read
    assert _generate(ds, "--verify", "full")["computed_shards"] == 1 and len(hashed) == 3
    assert verify_dataset(ds).ok and ShardedDataset(ds).read(9)[1] is not None
    # in-place damage with the modification time set back: the ctime cannot be set back
    hashed.clear()
    _zero_chunk(shard, row=2)
    recorded = next(r for r in read_manifest(ds)["shards"] if r["name"] == shard.name)
    os.utime(shard, ns=(recorded["mtime_ns"], recorded["mtime_ns"]))
    assert _generate(ds)["computed_shards"] == 1 and hashed == [shard.name] and verify_dataset(ds).ok


@pytest.mark.slow
def test_a_damaged_sample_stops_training_and_evaluation_naming_it(tiny_dataset, tiny_run, tmp_path):
    ds = _copy(tiny_dataset, tmp_path / "ds")
    _zero_chunk(ds / "shards" / "shard-000001.h5", row=1)
    run = tmp_path / "run"
    t0 = time.time()
    line = one_error_line(run_cli("train", TRAIN, "--out", str(run), f"data.train={ds}", "tracking.mode=disabled"))
    assert "training stopped in epoch 1: " in line and "shard-000001.h5: sample 9 (row 1) is damaged" in line
    assert "no checkpoint has been written yet" in line and not list_checkpoints(run)
    events = _events(run)
    assert not [e for e in events if e["event"] == "resume"]  # a data error is not retried by Ray Train
    assert len([e for e in events if e["event"] == "start"]) == 2 and time.time() - t0 < 120
    line = one_error_line(hpcinv("evaluate", str(tiny_run), "--data", str(ds), "--out", str(tmp_path / "rep")))
    assert "shard-000001.h5: sample 9 (row 1) is damaged" in line
    # data.verify=full finds it before Ray starts
    line = one_error_line(hpcinv("train", TRAIN, "--out", str(tmp_path / "r2"), f"data.train={ds}", "data.verify=full"))
    assert "shard-000001.h5: corrupted: sha256 differs" in line and not (tmp_path / "r2").exists()


def test_swapped_and_missing_shards_are_refused_before_ray(tiny_dataset, tiny_run, tmp_path):
    ds = _copy(tiny_dataset, tmp_path / "ds")
    shutil.copy(ds / "shards" / "shard-000002.h5", ds / "shards" / "shard-000000.h5")
    (ds / "shards" / "shard-000001.h5").unlink()
    t0 = time.time()
    line = one_error_line(hpcinv("train", TRAIN, "--out", str(tmp_path / "r"), f"data.train={ds}"))
    assert "training dataset" in line and "shard-000000.h5: holds samples 16..23, manifest says samples 0..7" in line
    assert "(and 1 more)" in line and time.time() - t0 < 30 and not (tmp_path / "r").exists()
    line = one_error_line(hpcinv("evaluate", str(tiny_run), "--data", str(ds), "--out", str(tmp_path / "rep")))
    assert "shard-000000.h5: holds samples 16..23" in line and not (tmp_path / "rep").exists()
    shutil.copy(tiny_dataset / "shards" / "shard-000000.h5", ds / "shards" / "shard-000000.h5")
    line = one_error_line(hpcinv("train", TRAIN, "--out", str(tmp_path / "r"), f"data.train={ds}"))
    assert "shard-000001.h5: file missing (samples 8..15)" in line


# ---------------------------------------------------------------------------- finite checkpoints


def test_the_guard_sees_nan_and_inf_beyond_the_loss():
    from hpcinv.nets import FCNVMB
    from hpcinv.train.engine import nonfinite_count, optimizer_nonfinite_count

    model = FCNVMB(3, (16, 16), 4, 2)
    loss = torch.tensor(0.5)
    assert int(nonfinite_count(model, loss)) == 0
    assert int(nonfinite_count(model, torch.tensor(float("nan")))) == 1
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var[0] = float("inf")  # the loss stays finite in train mode; the checkpoint would not
    assert int(nonfinite_count(model, loss)) == 1
    bn.running_var[0] = 1.0
    next(model.parameters()).data.view(-1)[0] = float("nan")
    assert int(nonfinite_count(model, loss)) == 1
    next(model.parameters()).data.view(-1)[1] = -float("inf")  # NaN and -Inf in one tensor: still seen
    assert int(nonfinite_count(model, loss)) == 1
    next(model.parameters()).data.view(-1)[0] = float("inf")  # +Inf and -Inf: their sum is NaN
    assert int(nonfinite_count(model, loss)) == 1
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 16, 16)).mean().backward()
    opt.step()
    assert int(optimizer_nonfinite_count(opt, torch.device("cpu"))) > 0  # NaN moments of the NaN weight


def test_diverging_training_never_writes_a_nonfinite_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    line = one_error_line(
        hpcinv(
            "train",
            TRAIN,
            "--out",
            str(run),
            "--in-process",
            f"data.train={tiny_dataset}",
            "scaling.num_workers=1",
            "train.lr=1e30",
            "train.epochs=3",
            "tracking.mode=disabled",
        )
    )
    assert "training stopped: NaN/Inf in the loss, weights, BatchNorm statistics or optimizer state" in line
    kept = list_checkpoints(run)
    assert ("no checkpoint has been written yet" in line) == (not kept)
    for folder in kept:
        assert not nonfinite_entries(load_state(folder))


def test_evaluate_refuses_a_checkpoint_holding_nan(tiny_run, tiny_dataset, tmp_path):
    state = load_state(tiny_run)
    key = next(k for k in state["model"] if k.endswith("running_var"))
    state["model"][key][0] = float("inf")
    torch.save(state, tmp_path / "state.pt")
    line = one_error_line(
        hpcinv("evaluate", str(tmp_path / "state.pt"), "--data", str(tiny_dataset), "--out", str(tmp_path / "rep"))
    )
    assert f"holds NaN/Inf values (in {key})" in line and not (tmp_path / "rep").exists()


# ----------------------------------------------------------------------- survey-checked evaluation


def test_evaluation_refuses_another_survey_unless_allowed(tiny_run, tmp_path):
    other = generate_small(
        tmp_path / "other",
        "dataset.n_samples=4",
        "dataset.shard_size=4",
        "survey.f0_hz=5.0",
        "grid.dx_m=12.0",
        "survey.source_x_m=[0.0, 150.0, 300.0, 450.0, 600.0]",
    )
    line = one_error_line(hpcinv("evaluate", str(tiny_run), "--data", str(other), "--out", str(tmp_path / "rep")))
    for key in (
        "f0_hz is 5.0 in the data but 8.0 in training",
        "dx_m is 12.0 in the data but 15.0 in training",
        "source_cells_zx differs",
    ):
        assert key in line, line
    assert "--allow-survey-mismatch" in line and not (tmp_path / "rep").exists()
    proc = hpcinv(
        "evaluate",
        str(tiny_run),
        "--data",
        str(other),
        "--out",
        str(tmp_path / "rep"),
        "--allow-survey-mismatch",
        "--misfit-samples",
        "0",
        "--figures",
        "0",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "rep" / "metrics.md").read_text()
    assert "## Warnings" in report and "survey differs from training" in report and "f0_hz" in report


def test_velocities_outside_the_trained_range_are_reported(tiny_run, tmp_path):
    slow = generate_small(
        tmp_path / "slow",
        "dataset.n_samples=4",
        "dataset.shard_size=4",
        "velocity.synthetic.v_top_mps=[1400.0, 1450.0]",
        "modelling.min_points_per_wavelength=4.0",
    )
    proc = hpcinv(
        "evaluate",
        str(tiny_run),
        "--data",
        str(slow),
        "--out",
        str(tmp_path / "rep"),
        "--misfit-samples",
        "0",
        "--figures",
        "0",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    (result,) = [r for name, r in results.items() if "baseline" not in name]
    outside = result["outside_training_range"]
    assert outside["range_mps"] == [1500.0, 4500.0] and outside["samples"] == 4 and outside["fraction_of_cells"] > 0
    assert "outside the 1500-4500 m/s the network was trained on" in (tmp_path / "rep" / "metrics.md").read_text()


# --------------------------------------------------------------------------------- interrupts


@pytest.mark.slow
def test_interrupted_training_resumes_from_the_newest_checkpoint(tiny_dataset, tmp_path):
    """SIGTERM to a run on Ray Train, SIGINT to the same run continued in one process: each exits with
    one line and keeps its checkpoints; the last run resumes from the newest one and trains each epoch once."""
    run = tmp_path / "run"
    args = ["train", TRAIN, "--out", str(run), f"data.train={tiny_dataset}", "tracking.mode=disabled"]
    args += ["scaling.num_workers=1"]  # one rank, so the run can go on on Ray or in one process alike
    newest = 0
    for sig, code, where in ((signal.SIGTERM, 143, []), (signal.SIGINT, 130, ["--in-process"])):
        proc = _popen(*args, *where, "train.epochs=60")
        _wait("a new checkpoint", lambda target=newest + 1: _newest_epoch(run) >= target, proc)
        time.sleep(0.7)  # mid-epoch, or mid-checkpoint
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == code, stderr[-3000:]
        lines = [ln for ln in stderr.splitlines() if "hpcinv: " in ln]
        assert (
            len(lines) == 1
            and f"hpcinv: interrupted by {sig.name}: training stopped; the newest checkpoint, checkpoint_epoch"
            in lines[0]
            and "re-run the same command to resume" in lines[0]
        ), stderr[-2000:]
        kept = list_checkpoints(run)
        assert 1 <= len(kept) <= 2  # keep_checkpoints: 2
        newest = _newest_epoch(run)
    epochs = newest + 3
    proc = hpcinv(*args, "--in-process", f"train.epochs={epochs}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = _events(run)
    resumes = [e for e in events if e["event"] == "resume"]
    assert resumes[-1]["epoch"] == newest + 1  # the newest checkpoint on disk, not an older one
    ends = [e["epoch"] for e in events if e["event"] == "epoch_end"]
    assert sorted(ends) == list(range(epochs))  # each once
    assert [p.name for p in list_checkpoints(run)] == [f"checkpoint_epoch{e:06d}" for e in (epochs - 2, epochs - 1)]
    assert json.loads(proc.stdout)["epochs_done"] == epochs


# ---------------------------------------------------------------------------- GPU requests


@pytest.mark.slow
def test_gpu_requests_without_gpus_fail_in_seconds(tiny_dataset, tmp_path, ray_local):
    t0 = time.time()
    line = one_error_line(hpcinv("generate", TINY, "--out", str(tmp_path / "a"), "modelling.device=cuda"))
    assert "modelling.device=cuda but the Ray cluster has no GPU" in line
    line = one_error_line(
        hpcinv("generate", TINY, "--out", str(tmp_path / "b"), "--in-process", "modelling.device=cuda")
    )
    assert "modelling.device=cuda but this machine has no usable CUDA GPU" in line
    line = one_error_line(
        hpcinv("train", TRAIN, "--out", str(tmp_path / "c"), f"data.train={tiny_dataset}", "scaling.use_gpu=true")
    )
    assert (
        "scaling.num_workers=2 x cpus_per_worker=1 (one GPU each) needs {'CPU': 2, 'GPU': 2} but the Ray cluster has"
        in line
    )
    line = one_error_line(
        hpcinv(
            "train",
            TRAIN,
            "--out",
            str(tmp_path / "d"),
            "--in-process",
            f"data.train={tiny_dataset}",
            "scaling.use_gpu=true",
            "scaling.num_workers=1",
        )
    )
    assert "training with scaling.use_gpu=true" in line
    assert time.time() - t0 < 120 and not any((tmp_path / n).exists() for n in "abcd")


# ------------------------------------------------------------------------------------ W&B


def test_an_unreachable_wandb_server_means_offline_not_failure(tiny_dataset, tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    t0 = time.time()
    proc = hpcinv(
        "train",
        TRAIN,
        "--out",
        str(run),
        "--in-process",
        f"data.train={tiny_dataset}",
        "scaling.num_workers=1",
        "train.epochs=1",
        "tracking.mode=online",
        "tracking.init_timeout_s=3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B server unreachable: http://127.0.0.1:9" in caplog.text and "wandb sync" in caplog.text
    assert json.loads(proc.stdout)["tracking"] == "offline" and len(list(run.glob("wandb/offline-run-*"))) == 1
    assert time.time() - t0 < 150


def test_a_hanging_wandb_server_bounds_init_and_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    """The driver's check passed, but the server stops answering: the rank's wandb.init gives up after
    tracking.init_timeout_s and logs offline."""
    from hpcinv.train.tracking import Tracker

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted = []

    def accept_and_never_answer():
        with contextlib.suppress(OSError):  # until the test closes the socket
            while True:
                accepted.append(server.accept())

    threading.Thread(target=accept_and_never_answer, daemon=True).start()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    t0 = time.time()
    tracker = Tracker(TrackingSection(mode="online", init_timeout_s=3.0), tmp_path / "run", {"a": 1}, enabled=True)
    assert tracker.active and tracker.mode == "offline" and time.time() - t0 < 60
    tracker.log({"x": 1.0}, step=1)
    tracker.finish()
    assert "logging offline" in caplog.text and "wandb sync" in caplog.text
    assert len(list((tmp_path / "run").glob("wandb/offline-run-*"))) == 1
    server.close()


# ---------------------------------------------------------------------------------- full disk


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path):
    mount = _small_disk(tmp_path)
    out = mount / "ds"
    script = (
        f"mount -t tmpfs -o size=1500k tmpfs {mount} && {sys.executable} -m hpcinv.cli generate {TINY} "
        f"--out {out} --quiet --workers 2; echo rc=$?; ls -A {out / 'shards'}"
    )
    stdout, error = _one_disk_full_error(script)
    assert ".tmp-" not in stdout  # no half-written shard left behind


def _one_disk_full_error(script: str) -> tuple[str, str]:
    """Run ``script`` in a mount namespace of its own; it must fail with exit code 2 and one line saying the
    disk is full. Gives its stdout and that line."""
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "rc=2" in proc.stdout, (proc.stdout, proc.stderr[-3000:])
    errors = [ln for ln in proc.stderr.splitlines() if "hpcinv: error:" in ln]
    assert len(errors) == 1 and "disk full: cannot write" in errors[0] and "Traceback" not in proc.stderr
    return proc.stdout, errors[0]


def _small_disk(tmp_path):
    """A folder to mount a small tmpfs on (in a mount namespace of its own), or skip where that is not allowed."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mount = tmp_path / "small"
    mount.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mount}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {probe.stderr.strip()}")
    return mount


@pytest.mark.slow
def test_a_full_disk_during_refine_is_one_line_and_leaves_no_truncated_figure(tiny_dataset, tmp_path):
    mount = _small_disk(tmp_path)
    out = mount / "F"
    fast = "refine.bands_hz=[null] refine.iterations_per_band=[1]"
    # room for the store (a shard of one model, the manifests), not for its first figure (~90 kB)
    script = (
        f"mount -t tmpfs -o size=80k tmpfs {mount} && {sys.executable} -m hpcinv.cli refine --data {tiny_dataset} "
        f"--init smooth --out {out} --samples 1 --in-process --quiet {fast}; echo rc=$?; ls -A {out} {out}/figures"
    )
    stdout, error = _one_disk_full_error(script)
    assert "sample_000000.png" in error
    assert ".png" not in stdout and ".tmp-" not in stdout  # no truncated figure, no temporary left
