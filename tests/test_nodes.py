"""A Ray cluster of four nodes on this machine (Ray's own ``cluster_utils.Cluster``: a raylet per node),
and a whole node lost in the middle of generation, refine and training: every sample exactly once,
the stores verified, training resumed from its newest checkpoint on the nodes left.

Each node has one CPU. The drivers of generate and refine run in this process (joined to the cluster);
training runs as ``hpcinv train --address`` in a process of its own, as a user would start it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import CLI, CONFIGS, ROOT, descendants, generate_small, tiny_config

pytestmark = pytest.mark.slow

NODES = 4
STORE_BYTES = 80 * 2**20  # object store per node: the tests move small records only


@pytest.fixture(scope="module")
def cluster():
    """Four one-CPU nodes; a test that removes one adds a fresh one back."""
    import ray
    from ray.cluster_utils import Cluster

    from hpcinv.distributed.session import init_ray

    ray.shutdown()
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": STORE_BYTES, "include_dashboard": False},
    )
    for _ in range(NODES - 1):
        c.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
    c.wait_for_nodes()
    init_ray(c.address)
    assert len([n for n in ray.nodes() if n["Alive"]]) == NODES
    yield c
    ray.shutdown()
    c.shutdown()


def _restore(cluster) -> None:
    import ray

    while len(cluster.worker_nodes) < NODES - 1:
        cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
    cluster.wait_for_nodes()
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < NODES and time.monotonic() < deadline:
        time.sleep(0.5)


def _node_running(cluster, title: str):
    """A worker node (never the head, which the drivers joined) with a process titled ``title``."""
    for node in cluster.worker_nodes:
        raylet = node.all_processes["raylet"][0].process.pid
        if descendants(raylet, title):
            return node
    return None


def _wait(what: str, condition, timeout: float = 120.0, thread=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if thread is not None and not thread.is_alive():
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _in_thread(fn):
    """Run ``fn`` in a thread; its result (or error) is read with the returned function."""
    import threading

    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def result(timeout: float = 300.0):
        thread.join(timeout)
        assert not thread.is_alive(), "the driver did not finish"
        if "error" in box:
            raise box["error"]
        return box["result"]

    return thread, result


def _indices_and_sums(root: Path, key: str = "checksums") -> tuple[np.ndarray, np.ndarray]:
    """Every sample index held by a store's shard files (duplicates kept) and their stored checksums."""
    indices, sums = [], []
    for shard in sorted((root / "shards").glob("shard-*.h5")):
        with h5py.File(shard, "r") as fh:
            indices.append(fh["index"][:])
            sums.append(fh[key][:])
    return np.concatenate(indices), np.concatenate(sums)


def test_generation_loses_a_node_and_goes_on_with_the_others(cluster, tmp_path, monkeypatch):
    """Four actors on four one-CPU nodes; one node removed mid-run: its actor cannot come back (no room
    left), is given up, and the three others finish. Every sample exactly once, bit for bit the samples
    of a run without Ray."""
    import hpcinv.distributed.pool as pool
    from hpcinv.stages import Execution
    from hpcinv.stages.generate import run
    from hpcinv.stages.requests import GenerateRequest
    from hpcinv.store import read_manifest, verify_dataset

    monkeypatch.setattr(pool, "RESTART_WAIT_S", 2.0)  # (a minute in use) well before the work runs out
    overrides = ("dataset.n_samples=64", "dataset.shard_size=1")
    out = tmp_path / "ds"
    request = GenerateRequest(config=tiny_config(*overrides), out=str(out))
    thread, result = _in_thread(lambda: run(request, Execution(address=cluster.address, workers=NODES, progress=False)))
    _wait("four shards", lambda: len(list((out / "shards").glob("shard-*.h5"))) >= 4, thread=thread)
    victim = _wait("a node running a modelling actor", lambda: _node_running(cluster, "ray::ShardActor"))
    cluster.remove_node(victim, allow_graceful=False)
    summary = result()
    try:
        assert summary["computed_shards"] == 64 and read_manifest(out)["complete"]
        assert summary["extra"]["workers"] == NODES and summary["extra"]["workers_lost"] == 1
        assert verify_dataset(out).ok
        indices, sums = _indices_and_sums(out)
        assert sorted(indices.tolist()) == list(range(64))  # every sample exactly once
        reference = generate_small(tmp_path / "reference", *overrides)  # the same samples without Ray
        ref_indices, ref_sums = _indices_and_sums(reference)
        assert np.array_equal(sums[np.argsort(indices)], ref_sums[np.argsort(ref_indices)])
    finally:
        _restore(cluster)


def test_refine_loses_a_node_and_its_actor_restarts_on_another(cluster, tmp_path):
    """Three refine actors on four nodes; the node of one removed mid-run: Ray restarts that actor on the
    free node, its shard is computed again there, and nothing is lost or computed twice in the store."""
    from hpcinv.config import RefineConfig
    from hpcinv.stages import Execution
    from hpcinv.stages.refine import run
    from hpcinv.stages.requests import RefineRequest
    from hpcinv.store.velocities import VelocityStore

    data = generate_small(tmp_path / "ds", "dataset.n_samples=9", "dataset.shard_size=3")
    out = tmp_path / "refined"
    settings = {"bands_hz": [6.0, None], "iterations_per_band": [3, 3], "patience": 0, "shard_size": 1}
    request = RefineRequest(
        config=RefineConfig.model_validate({"refine": settings}), data=str(data), init="smooth", out=str(out), figures=0
    )
    thread, result = _in_thread(lambda: run(request, Execution(address=cluster.address, workers=3, progress=False)))
    _wait("one refined shard", lambda: len(list((out / "shards").glob("shard-*.h5"))) >= 1, thread=thread)
    victim = _wait("a node running a refine actor", lambda: _node_running(cluster, "ray::ShardActor"))
    cluster.remove_node(victim, allow_graceful=False)
    summary = result()
    try:
        assert summary["failures_retried"] >= 1 and summary["workers_lost"] == 0 and summary["workers"] == 3
        store = VelocityStore(out)
        indices, velocities = store.read_range(0, 9)  # every sample's checksum checked
        assert sorted(indices.tolist()) == list(range(9)) and np.isfinite(velocities).all()
        assert sorted(_indices_and_sums(out)[0].tolist()) == list(range(9))  # no shard file twice
    finally:
        _restore(cluster)


def test_training_loses_a_node_and_resumes_from_its_newest_checkpoint(cluster, tiny_dataset, tmp_path):
    """Two DDP ranks on the four nodes; the node of one removed after a checkpoint: Ray Train restarts the
    worker group on the nodes left, which resumes from the newest checkpoint and finishes the run."""
    run_dir, epochs = tmp_path / "run", 6
    proc = subprocess.Popen(
        [
            *CLI, "train", str(CONFIGS / "tiny_train.yaml"), "--out", str(run_dir), "--address", cluster.address,
            "--quiet", f"data.train={tiny_dataset}", f"train.epochs={epochs}", "train.max_failures=2",
            "scaling.placement_strategy=SPREAD", "tracking.mode=disabled",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait("a checkpoint of epoch 2", lambda: (run_dir / "checkpoint_epoch000001").is_dir(), timeout=240)
        victim = _wait("a node running a training rank", lambda: _node_running(cluster, "ray::RayTrainWorker"))
        cluster.remove_node(victim, allow_graceful=False)
        stdout, stderr = proc.communicate(timeout=400)
        assert proc.returncode == 0, stderr[-3000:]
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        resumes = [e for e in events if e["event"] == "resume"]
        assert resumes, "the worker group was not restarted"
        first = resumes[0]
        per_epoch = next(e["step"] for e in events if e["event"] == "epoch_end" and e["epoch"] == 0)
        assert first["epoch"] >= 2 and first["step"] == first["epoch"] * per_epoch  # a checkpoint, not scratch
        ends = [e["epoch"] for e in events if e["event"] == "epoch_end"]
        after = [e["epoch"] for e in events if e["event"] == "epoch_end" and e["time"] > first["time"]]
        assert after == list(range(first["epoch"], epochs))  # each epoch after the resume once, in order
        assert set(ends) == set(range(epochs))
        assert json.loads((run_dir / "result.json").read_text())["epochs_done"] == epochs
    finally:
        if proc.poll() is None:
            proc.kill()
        _restore(cluster)
