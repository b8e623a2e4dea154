"""Ray fan-out: 2 actors, an actor killed mid-run, the driver killed mid-run, an unreachable cluster."""

import contextlib
import json
import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest

from hpcinv.config import DataConfig, load_config
from hpcinv.errors import HpcinvError
from hpcinv.store import ShardedDataset, read_manifest, verify_dataset
from tests.conftest import CLI, CONFIGS, FCNVMB_NPZ, ROOT, descendants, needs_shared, run_cli

pytestmark = pytest.mark.slow  # CLI runs on Ray: not in the fast tier

TINY = str(CONFIGS / "tiny.yaml")
MANY_SHARDS = ["dataset.n_samples=64", "dataset.shard_size=2"]


@pytest.fixture
def reap():
    """Processes registered here (e.g. Ray helpers orphaned by a SIGKILLed driver) are ended afterwards."""
    procs: list[psutil.Process] = []
    yield procs
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _wait_for_shards(out, n, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "generation finished before it could be interrupted"
        try:
            if len(read_manifest(out)["shards"]) >= n:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no {n} shards after {timeout} s")


def _check_complete(out, n_samples):
    report = verify_dataset(out)
    assert report.ok, report.problems
    manifest = read_manifest(out)
    indices = []
    ds = ShardedDataset(out)
    for rec in manifest["shards"]:
        import h5py

        with h5py.File(out / "shards" / rec["name"]) as fh:
            indices.extend(fh["index"][:].tolist())
    assert sorted(indices) == list(range(n_samples)), "every global index exactly once"
    return ds


def test_killed_modelling_actor_is_replaced_and_nothing_is_lost(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [*CLI, "generate", TINY, "--out", str(out), "--quiet", "--workers", "2", *MANY_SHARDS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_shards(out, 2, proc)
    victims = descendants(proc.pid, "ray::ShardActor")
    assert victims, "no modelling actor process found"
    os.kill(victims[0].pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert stdout.strip().startswith("{"), stdout[:3000]
    summary = json.loads(stdout)
    assert summary["computed_shards"] == 32 and summary["extra"]["failures_retried"] >= 1
    _check_complete(out, 64)


def test_killed_driver_resumes_computing_only_missing_shards(tmp_path, reap):
    out = tmp_path / "ds"
    args = [*CLI, "generate", TINY, "--out", str(out), "--quiet", "--workers", "2", *MANY_SHARDS]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_shards(out, 4, proc)
    actors = descendants(proc.pid, "ray::ShardActor")
    reap.extend(descendants(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Ray ends the dead driver's actors; one may still finish the shard in hand (such files are
    # adopted), so count the shards once every actor process is gone, not after a guessed pause.
    _, alive = psutil.wait_procs(actors, timeout=60)
    assert actors and not alive, f"actors of the killed driver still running: {alive}"
    on_disk = len(list((out / "shards").glob("shard-*.h5")))
    assert 4 <= on_disk < 32
    rerun = run_cli(*args[3:])
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped_shards"] + summary["computed_shards"] == 32
    assert summary["computed_shards"] <= 32 - on_disk
    assert summary["skipped_shards"] >= on_disk
    _check_complete(out, 64)


def test_unreachable_ray_address_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "ds"
    t0 = time.time()
    proc = run_cli("generate", TINY, "--out", str(out), "--address", "127.0.0.1:1")
    assert proc.returncode == 2 and time.time() - t0 < 60
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach a Ray cluster at '127.0.0.1:1'" in lines[0]
    assert not out.exists()
    proc = run_cli("generate", TINY, "--out", str(out), "--address", "nonsense")
    assert "is not of the form HOST:PORT" in proc.stderr and not out.exists()


def test_splits_are_recorded_and_selectable(tmp_path):
    out = tmp_path / "ds"
    proc = run_cli(
        "generate",
        TINY,
        "--out",
        str(out),
        "--quiet",
        "--in-process",
        "dataset.n_samples=10",
        "dataset.shard_size=4",
        "dataset.splits={train: 0.8, val: 0.1, test: 0.1}",
    )
    assert proc.returncode == 0, proc.stderr
    assert read_manifest(out)["splits"] == {"train": [0, 8], "val": [8, 9], "test": [9, 10]}
    assert ShardedDataset(out, split="train").indices.tolist() == list(range(8))
    assert ShardedDataset(out, split="test").indices.tolist() == [9]
    with pytest.raises(HpcinvError, match="no split 'valid'"):
        ShardedDataset(out, split="valid")
    bad = run_cli("generate", TINY, "--out", str(tmp_path / "b"), "dataset.n_samples=10", "dataset.splits={a: 3, b: 3}")
    assert bad.returncode == 2 and "must be whole counts summing to n_samples=10" in bad.stderr
    assert not (tmp_path / "b").exists()


@needs_shared
def test_fcnvmb_sim_data_preset_models_the_reference_models(tmp_path):
    from hpcinv.generate.driver import check_dataset_config

    cfg = load_config(DataConfig, CONFIGS / "fcnvmb_sim_data.yaml", [f"velocity.path={FCNVMB_NPZ}"])
    source, physics = check_dataset_config(cfg)
    assert len(source) == 1700 and cfg.dataset.split_ranges(1700) == {"train": [0, 1600], "test": [1600, 1700]}
    ref = np.load(FCNVMB_NPZ)
    assert np.array_equal(source.model(0), ref["train"][0]) and np.array_equal(source.model(1600), ref["test"][0])
    # one real sample at paper size, 2 shots, to keep the test short
    out = tmp_path / "ds"
    proc = run_cli(
        "generate",
        str(CONFIGS / "fcnvmb_sim_data.yaml"),
        "--out",
        str(out),
        "--quiet",
        "--in-process",
        f"velocity.path={FCNVMB_NPZ}",
        "dataset.n_samples=1",
        "dataset.splits=null",
        "survey.n_shots=2",
    )
    assert proc.returncode == 0, proc.stderr
    g, v = ShardedDataset(out).read(0)
    assert g.shape == (2, 400, 301) and g.dtype == np.float16 and np.array_equal(v, ref["train"][0])
