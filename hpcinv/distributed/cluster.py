"""A private Ray cluster over one SLURM job step: the one bootstrap behind both launch paths.

Run one task per node (``srun --ntasks-per-node=1`` in an sbatch script, or a submitit job with
``tasks_per_node=1``); every task calls :func:`run_on_cluster` with the same ``cluster_dir`` on
shared storage:

* the task on the job's first node (``SLURM_NODEID`` 0) writes a fresh token (mode 600), starts the
  Ray head, publishes its address in ``head.json``, waits until every node of the step has joined,
  runs the work against that address, then writes ``done`` and stops its node;
* every other task waits for ``head.json``, starts a Ray worker node that joins it, and blocks until
  ``done`` appears (exit 0) or the head disappears without it (an error).

Isolation between jobs sharing a node: token authentication (``RAY_AUTH_MODE=token``) with a per-job
secret, so nobody without the job's token can connect, run code or read objects; every port chosen
free on its node at start (nothing fixed such as 6379, 10001 or 52365); a short temp dir per job,
attempt and node; no ``address="auto"`` and no ``ray stop`` (which would hit other jobs' clusters).
A requeued job (``SLURM_RESTART_COUNT``) or a later ``srun`` step gets a new attempt folder.

The node's resources come from SLURM: ``--num-cpus`` = ``SLURM_CPUS_ON_NODE``, ``--num-gpus`` =
``SLURM_GPUS_ON_NODE`` (or the visible CUDA devices), and an explicit object store (a fraction of the
job's memory on the node, ``--mem``, capped by the free space in ``/dev/shm``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hpcinv.config import ClusterConfig
from hpcinv.environment import environment
from hpcinv.errors import HpcinvError
from hpcinv.fileio import atomic_write_text

log = logging.getLogger(__name__)

T = TypeVar("T")
HEAD_FILE, DONE_FILE, TOKEN_FILE = "head.json", "done", "token"
MAX_TEMP_DIR = 40  # Ray's Unix sockets live below the temp dir; their paths must stay under 107 bytes
OBJECT_STORE_FRACTION = 0.3
MIN_OBJECT_STORE = 100 * 2**20  # Ray refuses less than ~75 MB


@dataclass(frozen=True)
class SlurmTask:
    """What this task of a SLURM job step knows about itself, from SLURM's environment."""

    job_id: str
    step_id: str
    restart: int
    node_rank: int
    n_nodes: int
    node_name: str
    cpus: int
    gpus: int
    mem_bytes: int | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlurmTask:
        env = os.environ if env is None else env
        if "SLURM_JOB_ID" not in env or "SLURM_NODEID" not in env:
            raise HpcinvError(
                "not inside a SLURM job step: run this with srun (one task per node) or through "
                "the launch/ submitit launchers"
            )
        if int(env.get("SLURM_NTASKS", "1")) != int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES", "1"))):
            raise HpcinvError(
                f"the Ray bootstrap needs exactly one task per node, got SLURM_NTASKS="
                f"{env.get('SLURM_NTASKS')} on {env.get('SLURM_NNODES')} node(s): use "
                "srun --ntasks-per-node=1"
            )
        cpus = int(env.get("SLURM_CPUS_ON_NODE", os.cpu_count() or 1))
        return cls(
            job_id=env["SLURM_JOB_ID"],
            step_id=env.get("SLURM_STEP_ID", "0"),
            restart=int(env.get("SLURM_RESTART_COUNT", "0")),
            node_rank=int(env["SLURM_NODEID"]),
            n_nodes=int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES", "1"))),
            node_name=env.get("SLURMD_NODENAME", socket.gethostname()),
            cpus=cpus,
            gpus=_gpus(env),
            mem_bytes=_mem_bytes(env, cpus),
        )

    @property
    def attempt(self) -> str:
        """Unique per job, requeue and step: the name of this cluster's folder."""
        return f"{self.job_id}.r{self.restart}.s{self.step_id}"


def _gpus(env: Mapping[str, str]) -> int:
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        return int(env["SLURM_GPUS_ON_NODE"])
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    return len([d for d in visible.split(",") if d.strip()]) if visible not in ("", "NoDevFiles") else 0


def _mem_bytes(env: Mapping[str, str], cpus: int) -> int | None:
    if env.get("SLURM_MEM_PER_NODE", "").isdigit():
        return int(env["SLURM_MEM_PER_NODE"]) * 2**20
    if env.get("SLURM_MEM_PER_CPU", "").isdigit():
        return int(env["SLURM_MEM_PER_CPU"]) * cpus * 2**20
    return None


def object_store_bytes(task: SlurmTask, requested_gb: float | None = None) -> int:
    """The object store of this node: ``requested_gb``, else 30 % of the job's memory on the node
    (of the machine's when the job set no ``--mem``), never more than 80 % of free ``/dev/shm``."""
    if requested_gb is not None:
        size = int(requested_gb * 2**30)
        if size < MIN_OBJECT_STORE:
            raise HpcinvError(f"object store of {requested_gb} GB is too small; give at least 0.1 GB")
        return size
    memory = task.mem_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    size = int(OBJECT_STORE_FRACTION * memory)
    if Path("/dev/shm").is_dir():
        size = min(size, int(0.8 * shutil.disk_usage("/dev/shm").free))
    return max(size, MIN_OBJECT_STORE)


def free_ports(n: int, host: str = "") -> list[int]:
    """``n`` distinct ports free on this node now (bound together, then released for Ray to take)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def temp_dir(task: SlurmTask, root: str | None = None) -> Path:
    root = root or environment().ray_tmp
    path = Path(root) / f"ray-{task.attempt}.n{task.node_rank}"
    if len(str(path)) > MAX_TEMP_DIR:
        raise HpcinvError(
            f"Ray temp dir {str(path)!r} is longer than {MAX_TEMP_DIR} characters (Ray's socket paths "
            "would overflow); set HPCINV_RAY_TMP to a short node-local folder such as /tmp"
        )
    return path


def _ray_env(token_path: Path) -> dict[str, str]:
    """The environment of every Ray process and client of this job."""
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
    )  # the job ends its nodes together: no drain wait
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")  # the ray of this environment, not another one on PATH
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise HpcinvError(f"the 'ray' command is not installed beside {sys.executable} nor on PATH")
    return found


def _remove_stale_temp_dirs(task: SlurmTask) -> None:
    """Temp dirs of this job's earlier attempts on this node: a requeue kills a node before it can
    clean up after itself."""
    mine = temp_dir(task)
    for path in mine.parent.glob(f"ray-{task.job_id}.r*.n{task.node_rank}"):
        if path != mine and path.name.split(".")[1][1:].isdigit() and int(path.name.split(".")[1][1:]) < task.restart:
            shutil.rmtree(path, ignore_errors=True)


def _ray_start_args(task: SlurmTask, node_ip: str, object_store_gb: float | None) -> list[str]:
    _remove_stale_temp_dirs(task)
    agent, agent_grpc, metrics, runtime_env, node_manager, object_manager = free_ports(6, node_ip)
    store = object_store_bytes(task, object_store_gb)
    args = [
        _ray_executable(),
        "start",
        "--block",
        "--disable-usage-stats",
        f"--node-ip-address={node_ip}",
        f"--node-name={task.node_name}",
        f"--temp-dir={temp_dir(task)}",
        f"--num-cpus={task.cpus}",
        f"--num-gpus={task.gpus}",
        f"--object-store-memory={store}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        "--min-worker-port=0",
        "--max-worker-port=0",
    ]
    if task.mem_bytes:
        args.append(f"--memory={max(task.mem_bytes - store, 2**30)}")
    return args


class _Node:
    """One ``ray start --block`` process: SIGTERM stops it and every Ray process it started."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, temp: Path, timeout_s: float = 30.0) -> None:
        """Stop the node, then delete its temp dir (node-local disk; its log stays in the cluster dir)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not environment().keep_ray_tmp:
            shutil.rmtree(temp, ignore_errors=True)


def _wait(what: str, timeout_s: float, ready: Callable[[], bool], node: _Node | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if node is not None and not node.alive():
            raise HpcinvError(f"Ray exited while waiting for {what} (log {node.log_path}):\n{node.log_tail()}")
        if time.monotonic() > deadline:
            raise HpcinvError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


def _port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def _terminating_on_sigterm() -> Iterator[None]:
    """Outside submitit (which handles signals itself), turn SLURM's SIGTERM into a clean exit."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _connected_nodes() -> list[str]:
    import ray

    return sorted(n.get("NodeName", "?") for n in ray.nodes() if n.get("Alive"))


def _use_token(token: Path) -> None:
    """Make this process a client of the job's cluster. Ray reads the authentication mode once, when it
    is first imported, so this must happen before anything in the process imports ray."""
    if "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE") != "token":
        raise HpcinvError(
            "ray was imported before the cluster bootstrap set RAY_AUTH_MODE=token; call "
            "run_on_cluster before importing ray in this process"
        )
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    os.environ.pop("RAY_AUTH_TOKEN", None)


GPU_CHECK_TIMEOUT_S = 300


def check_gpu_node(where: str) -> None:
    """``hpcinv doctor --gpu`` for this node, in a child process: reading each GPU's memory creates a CUDA
    context on it, which this process (the Ray head or worker launcher, alive for the whole job) must
    not keep. deepwave is left out here: the modelling and refine actors check it on their own GPU, and
    a node whose driver cannot run deepwave can still train. Its findings go to the job's log."""
    command = [sys.executable, "-m", "hpcinv.cli", "doctor", "--gpu", "--no-deepwave"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=GPU_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise HpcinvError(
            f"{where}: `hpcinv doctor --gpu --no-deepwave` did not answer in {GPU_CHECK_TIMEOUT_S} s "
            "(a hung GPU or driver?)"
        ) from None
    log.info("GPU preflight of %s:\n%s", where, proc.stdout.rstrip())
    if proc.returncode != 0:
        failed = [line[4:].strip() for line in proc.stdout.splitlines() if line.startswith("fail")]
        reason = "; ".join(failed) or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HpcinvError(f"{where} needs a working GPU, but: {reason} (`hpcinv doctor --gpu --no-deepwave`)")


def run_on_cluster(work: Callable[[str], T], cluster: ClusterConfig, *, task: SlurmTask | None = None) -> T | None:
    """Run ``work(address)`` on rank 0 of a Ray cluster spanning this SLURM step; None on other ranks.
    ``cluster``'s unset fields come from the environment (:meth:`~hpcinv.config.ClusterConfig.resolved`)."""
    task = task or SlurmTask.from_env()
    cluster = cluster.resolved()
    assert cluster.cluster_dir is not None  # (resolved() always sets it)
    if _gpus(os.environ) > 0:  # a GPU node that cannot work fails now, naming why (srun ends the step)
        check_gpu_node(f"node {task.node_rank} of SLURM job {task.job_id} (it was given GPUs)")
    folder = Path(cluster.cluster_dir) / task.attempt
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _use_token(folder / TOKEN_FILE)
    node_ip = environment().ray_node_ip or _node_ip()
    with _terminating_on_sigterm():
        if task.node_rank == 0:
            return _run_head(work, task, folder, node_ip, cluster.object_store_gb, cluster.join_timeout_s)
        _run_worker(task, folder, node_ip, cluster.object_store_gb, cluster.join_timeout_s)
        return None


def _node_ip() -> str:
    """The address other nodes reach this one at: the source address of a route outwards (no packet
    is sent), as Ray itself picks it; set HPCINV_RAY_NODE_IP to choose another network (InfiniBand)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _run_head(
    work: Callable[[str], T],
    task: SlurmTask,
    folder: Path,
    node_ip: str,
    object_store_gb: float | None,
    join_timeout_s: float,
) -> T:
    t0 = time.monotonic()
    for stale in (HEAD_FILE, DONE_FILE):
        (folder / stale).unlink(missing_ok=True)
    token = folder / TOKEN_FILE
    token.unlink(missing_ok=True)
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    import ray

    node = None
    try:  # from here on the other nodes are always released (``done``), even if the head never starts
        (gcs_port,) = free_ports(1, node_ip)
        args = [
            *_ray_start_args(task, node_ip, object_store_gb),
            "--head",
            f"--port={gcs_port}",
            "--include-dashboard=false",
        ]
        address = f"{node_ip}:{gcs_port}"
        node = _Node(args, _ray_env(token), folder / f"ray-{task.node_name}.log")
        _wait(f"the Ray head at {address}", 120, lambda: _port_open(node_ip, gcs_port), node)
        atomic_write_text(
            folder / HEAD_FILE,
            json.dumps({"address": address, "job": task.job_id, "attempt": task.attempt, "nodes": task.n_nodes}),
        )
        from hpcinv.distributed.session import init_ray

        init_ray(address)
        _wait(
            f"{task.n_nodes} Ray nodes to join", join_timeout_s, lambda: len(_connected_nodes()) >= task.n_nodes, node
        )
        log.info(
            "Ray cluster %s up in %.1f s: nodes %s, resources %s",
            address,
            time.monotonic() - t0,
            _connected_nodes(),
            ray.cluster_resources(),
        )
        return work(address)
    finally:
        atomic_write_text(folder / DONE_FILE, "")
        ray.shutdown()
        if node is not None:
            node.stop(temp_dir(task))
        token.unlink(missing_ok=True)  # a copied token is worthless once its cluster is gone


def _run_worker(
    task: SlurmTask, folder: Path, node_ip: str, object_store_gb: float | None, join_timeout_s: float
) -> None:
    started = time.time()

    def fresh(name: str) -> bool:  # written by this attempt's head, not left from an older job of the same id
        path = folder / name
        return path.is_file() and path.stat().st_mtime >= started - 60

    _wait(
        f"the Ray head of job {task.job_id} ({folder / HEAD_FILE})",
        join_timeout_s,
        lambda: fresh(HEAD_FILE) or fresh(DONE_FILE),
    )
    if fresh(DONE_FILE):  # the head finished (or failed) before this node joined
        return
    address = json.loads((folder / HEAD_FILE).read_text())["address"]
    args = [*_ray_start_args(task, node_ip, object_store_gb), f"--address={address}"]
    node = _Node(args, _ray_env(folder / TOKEN_FILE), folder / f"ray-{task.node_name}.log")
    try:
        while node.alive() and not (folder / DONE_FILE).exists():
            time.sleep(0.5)
        if not (folder / DONE_FILE).exists():
            raise HpcinvError(
                f"the Ray worker node on {task.node_name} exited (head {address} gone?); log "
                f"{node.log_path}:\n{node.log_tail()}"
            )
    finally:
        node.stop(temp_dir(task))
