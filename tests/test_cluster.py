"""The Ray bootstrap's reading of a SLURM allocation, and its refusal outside one (no SLURM needed)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from hpcinv.cli import main
from hpcinv.config import ClusterConfig
from hpcinv.distributed.cluster import SlurmTask, _remove_stale_temp_dirs, object_store_bytes, temp_dir
from hpcinv.errors import HpcinvError
from tests.conftest import CLI, CONFIGS


def test_cluster_bootstrap_outside_slurm_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    proc = subprocess.run(
        [*CLI, "cluster", "train", str(CONFIGS / "tiny_train.yaml"), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "not inside a SLURM job step" in proc.stderr, proc.stderr


def test_slurm_task_reads_allocation_from_environment():
    env = {
        "SLURM_JOB_ID": "77",
        "SLURM_NODEID": "1",
        "SLURM_NNODES": "2",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_NTASKS": "2",
        "SLURM_CPUS_ON_NODE": "8",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_MEM_PER_NODE": "16000",
        "SLURM_RESTART_COUNT": "3",
        "SLURM_STEP_ID": "0",
        "SLURMD_NODENAME": "gpu17",
    }
    task = SlurmTask.from_env(env)
    assert (task.cpus, task.gpus, task.mem_bytes, task.node_name) == (8, 4, 16000 * 2**20, "gpu17")
    assert task.attempt == "77.r3.s0" and str(temp_dir(task, "/tmp")) == "/tmp/ray-77.r3.s0.n1"
    assert object_store_bytes(task) <= int(0.3 * 16000 * 2**20)
    assert object_store_bytes(task, 2.0) == 2 * 2**30
    cuda = SlurmTask.from_env({**env, "SLURM_GPUS_ON_NODE": "", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert cuda.gpus == 2
    with pytest.raises(HpcinvError, match="one task per node, got SLURM_NTASKS=4"):
        SlurmTask.from_env({**env, "SLURM_NTASKS": "4"})
    with pytest.raises(HpcinvError, match="longer than 40 characters"):
        temp_dir(task, "/a/very/long/node/local/scratch/path")
    with pytest.raises(HpcinvError, match="too small"):
        object_store_bytes(task, 0.01)


def test_a_requeued_node_removes_the_temp_dirs_of_earlier_attempts(monkeypatch):
    """A requeue kills Ray nodes before they can clean up; the next attempt on that node does it."""
    root = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))
    try:
        monkeypatch.setenv("HPCINV_RAY_TMP", str(root))
        env = {
            "SLURM_JOB_ID": "42",
            "SLURM_NODEID": "0",
            "SLURM_NNODES": "1",
            "SLURM_NTASKS": "1",
            "SLURM_RESTART_COUNT": "2",
        }
        names = ["ray-42.r0.s0.n0", "ray-42.r1.s1.n0", "ray-42.r1.s0.n1", "ray-42.r2.s0.n0", "ray-420.r0.s0.n0"]
        for name in names:
            (root / name).mkdir()
        _remove_stale_temp_dirs(SlurmTask.from_env(env))
        # Kept: another node's, this attempt's, another job's.
        assert sorted(p.name for p in root.iterdir()) == ["ray-42.r1.s0.n1", "ray-42.r2.s0.n0", "ray-420.r0.s0.n0"]
    finally:
        shutil.rmtree(root)


def test_cluster_settings_come_from_flags_then_environment(tmp_path, monkeypatch):
    env = {"HPCINV_CLUSTER_DIR": str(tmp_path / "rdv"), "HPCINV_OBJECT_STORE_GB": "8", "SLURM_SUBMIT_DIR": "/sub"}
    assert ClusterConfig().resolved(env) == ClusterConfig(cluster_dir=str(tmp_path / "rdv"), object_store_gb=8.0)
    given = ClusterConfig(cluster_dir="rel", object_store_gb=2.0, join_timeout_s=60)
    monkeypatch.chdir(tmp_path)
    assert given.resolved(env) == ClusterConfig(
        cluster_dir=str(tmp_path / "rel"), object_store_gb=2.0, join_timeout_s=60
    )
    assert ClusterConfig().resolved({"SLURM_SUBMIT_DIR": "/sub"}).cluster_dir == "/sub/.hpcinv-ray"
    with pytest.raises(HpcinvError, match="HPCINV_OBJECT_STORE_GB='lots'"):
        ClusterConfig().resolved({"HPCINV_OBJECT_STORE_GB": "lots"})


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--object-store-gb", "0.01"],
            "--object-store-gb 0.01 is not valid: input should be greater than or equal to 0.1",
        ),
        (["--join-timeout-s", "-1"], "--join-timeout-s -1.0 is not valid: input should be greater than 0"),
    ],
)
def test_bad_cluster_flags_are_one_line_before_any_node_starts(flags, message, capsys):
    assert main(["cluster", *flags, "train", str(CONFIGS / "tiny_train.yaml"), "--out", "nowhere"]) == 2
    assert message in capsys.readouterr().err
