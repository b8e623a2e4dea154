"""The launchers, a table over the stages (:mod:`hpcinv.stages`): SLURM options, the checks before
submission, the submitit executor, the one job (:class:`hpcinv.jobs.StageJob`), output.

``python -m launch.STAGE`` takes the stage's own arguments (as ``hpcinv STAGE`` does, without the
execution options: the job runs on a Ray cluster over its nodes) and the SLURM flags. It validates
everything it can on the login node -- the stage's own checks (config, inputs, output folder), the
partition, node count and resources -- so a bad request fails at once with one line, never as a job
that pends forever or dies after waiting in the queue. With ``--after JOBID`` the inputs may still be
in the making: only the output folder is checked. It prints one JSON object: the job id(s), the log
paths and, with ``--wait``, the job's result.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
from pydantic import BaseModel

from hpcinv.argv import OneLineParser, add_model_flags, model_from_flags, parse_with_overrides
from hpcinv.config import ClusterConfig, SlurmConfig, parse_overrides
from hpcinv.errors import HpcinvError
from hpcinv.folders import claim
from hpcinv.jobs import StageJob
from hpcinv.stages import STAGES, parser_for, request_from


class _Parser(OneLineParser):
    prefix = "launch"


def parser(description: str) -> argparse.ArgumentParser:
    """The launcher's parser: the SLURM flags, made from :class:`~hpcinv.config.SlurmConfig` (its defaults
    and descriptions), the Ray cluster's from :class:`~hpcinv.config.ClusterConfig` (its folder is
    ``--folder``/ray), plus ``--slurm KEY=VALUE`` and ``--wait``."""
    p = _Parser(description=description)
    p.set_defaults(overrides=[])  # key.sub=value words anywhere on the line (see parse)
    s = p.add_argument_group("SLURM")
    add_model_flags(s, SlurmConfig)
    add_model_flags(p.add_argument_group("Ray cluster"), ClusterConfig, skip=("cluster_dir",))
    s.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --slurm exclusive=true --slurm reservation=r1 (repeatable)",
    )
    s.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like ``p.parse_args``, with ``key.sub=value`` overrides allowed anywhere on the line (as ``hpcinv``)."""
    return parse_with_overrides(p, argv)


def _sinfo(*fields: str) -> list[list[str]]:
    # sbatch submits; submitit refuses to build its executor without srun (which starts the tasks)
    missing = [cmd for cmd in ("sinfo", "sbatch", "srun") if shutil.which(cmd) is None]
    if missing:
        raise HpcinvError(
            f"SLURM's commands are not on PATH (missing: {', '.join(missing)}): submit from a login node of the "
            "cluster, or bring up a local one with 'sudo slurm/local-cluster.sh up'"
        )
    proc = subprocess.run(["sinfo", "-h", "-o", "|".join(fields)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        said = "; ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
        raise HpcinvError(f"sinfo failed, is the SLURM controller up? {said[-400:]}")
    return [line.split("|") for line in proc.stdout.splitlines() if line.strip()]


def slurm_config(args: argparse.Namespace) -> SlurmConfig:
    """The SLURM flags, validated; a bad value is one line naming the flag and what is valid."""
    return model_from_flags(SlurmConfig, args)


def check_request(args: argparse.Namespace) -> str:
    """The partition to use, after checking the flags and that it exists, is up and can give ``args.nodes`` nodes."""
    slurm_config(args)  # the flags' values first (one line naming a bad one)
    cluster_config(args)
    rows = _sinfo("%P", "%D", "%a")  # partition (the default one marked *), nodes, availability
    nodes: dict[str, int] = {}
    avail: dict[str, str] = {}
    default = None
    for name, count, state in rows:
        if name.endswith("*"):
            name = default = name[:-1]
        nodes[name] = nodes.get(name, 0) + int(count)
        avail[name] = state
    partition = args.partition or default
    if partition is None:
        raise HpcinvError(f"the cluster has no default partition: give --partition, one of {sorted(nodes)}")
    if partition not in nodes:
        raise HpcinvError(f"partition {partition!r} does not exist on this cluster; partitions: {sorted(nodes)}")
    if avail[partition] != "up":  # down, drain, inact: the job would pend until an administrator changes that
        up = sorted(name for name, state in avail.items() if state == "up")
        raise HpcinvError(f"partition {partition!r} is {avail[partition]}; partitions up: {up}")
    if args.nodes > nodes[partition]:
        raise HpcinvError(f"--nodes {args.nodes} is more than partition {partition!r} has ({nodes[partition]} nodes)")
    return partition


def executor(args: argparse.Namespace, stage: str, *, nodes: int | None = None) -> submitit.SlurmExecutor:
    """A submitit executor for one task per node, with every SLURM option of the command line."""
    extra = {}
    for item in args.slurm:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HpcinvError(f"--slurm {item!r} is not KEY=VALUE (e.g. --slurm reservation=r1)")
        extra[key.replace("-", "_")] = parse_overrides([f"v={value}"])["v"]
    # requeueable whatever the cluster's JobRequeue default: submitit requeues on preemption and timeout
    extra.setdefault("requeue", True)
    partition = check_request(args)  # first: submitit's executor itself fails with a traceback where srun is missing
    ex = submitit.SlurmExecutor(folder=Path(args.folder) / "%j", max_num_timeout=args.max_timeouts)
    params = dict(
        partition=partition,
        nodes=nodes or args.nodes,
        ntasks_per_node=1,
        cpus_per_task=args.cpus_per_node,
        time=args.time,
        signal_delay_s=args.signal_delay_s,
        job_name=args.job_name or f"hpcinv-{stage}",
        setup=list(args.setup),
        additional_parameters=extra,
    )
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    if args.mem_gb:
        params["mem"] = f"{int(args.mem_gb * 1024)}M"
    for key in ("account", "qos", "constraint"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    if args.after:
        params["dependency"] = f"afterok:{args.after}"
    ex.update_parameters(**params)
    return ex


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    """The Ray cluster of the job: its flags, validated, and its rendezvous folder in ``--folder``."""
    return model_from_flags(ClusterConfig, args, cluster_dir=str(Path(args.folder).resolve() / "ray"))


def describe(job: submitit.Job) -> dict:
    return {"job_id": job.job_id, "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}


def submit(folder: str | Path, submit_fn: Callable[[], list[submitit.Job]]) -> list[submitit.Job]:
    """Submit; if sbatch refuses, one clear line and none of submitit's files left in ``folder``."""
    folder = Path(folder)
    before = set(folder.iterdir()) if folder.is_dir() else None
    captured = io.StringIO()  # submitit prints sbatch's stderr itself; it goes into our one line instead
    try:
        with contextlib.redirect_stderr(captured):
            jobs = submit_fn()
    except submitit.core.utils.FailedJobError as exc:
        if folder.is_dir():
            for path in set(folder.iterdir()) - (before or set()):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if before is None and not any(folder.iterdir()):
                folder.rmdir()
        reason = " ".join(line.removeprefix("sbatch: error: ").strip() for line in str(exc).splitlines())
        raise HpcinvError(f"sbatch refused the job: {reason}") from None
    sys.stderr.write(captured.getvalue())
    return jobs


def report(args: argparse.Namespace, jobs: list[submitit.Job], final: submitit.Job | None = None, **info) -> None:
    """Print the job ids and logs; with ``--wait``, wait for the last job and add its result."""
    final = final or jobs[-1]
    out = {**info, "jobs": [describe(j) for j in jobs], "folder": str(Path(args.folder).resolve())}
    print(json.dumps(out, indent=1), flush=True)
    if args.wait:
        for job in jobs:
            job.wait()
        result = final.results()[0]  # rank 0 ran the work; the other ranks only hosted Ray nodes
        print(json.dumps({"job_id": final.job_id, "result": result}, indent=1, default=str))


def stage_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The launcher of stage ``name``: its arguments (from the table of stages) and the SLURM flags."""
    p = parser(description)
    parser_for(STAGES[name], p, execution=False)
    return p


def checked_request(
    name: str, args: argparse.Namespace, *, inputs_from_earlier_job: bool = True, **check: Any
) -> BaseModel:
    """The request of stage ``name``, checked as the command checks it (with ``--after``, where its inputs
    are made by an earlier job: only its output folder)."""
    stage = STAGES[name]
    request = request_from(stage, args)
    if args.after and inputs_from_earlier_job:
        claim(request.out, stage.makes)  # type: ignore[attr-defined]
    else:
        stage.check(request, None, **check)
    return request


def submit_stage(
    name: str,
    args: argparse.Namespace,
    request: BaseModel,
    *,
    nodes: int | None = None,
    ex: submitit.SlurmExecutor | None = None,
    **info: Any,
) -> None:
    """Submit one :class:`~hpcinv.jobs.StageJob` of ``request`` (through ``ex``, made here unless given)
    and report it."""
    ex = ex or executor(args, name, nodes=nodes)
    job = StageJob(name, request, cluster_config(args))
    jobs = submit(args.folder, lambda: [ex.submit(job)])
    report(args, jobs, **info)


def main(run: Callable[[argparse.Namespace], None], p: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parse(p, argv)
    try:
        run(args)
    except HpcinvError as exc:
        print(f"launch: error: {exc}", file=sys.stderr)
        return 2
    except submitit.core.utils.UncompletedJobError as exc:
        print(f"launch: error: the job did not complete: {exc}", file=sys.stderr)
        return 1
    except submitit.core.utils.FailedJobError as exc:
        print(f"launch: error: the job failed: {exc}", file=sys.stderr)
        return 1
    return 0
