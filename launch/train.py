"""Submit DDP training to SLURM.

    python -m launch.train CONFIG --out RUN_DIR --nodes 2 --gpus-per-node 4 --partition gpu --time 720 [key=value ...]

One Ray cluster over the job's nodes; Ray Train places ``scaling.num_workers`` ranks on it. On
preemption or at the time limit the job is requeued and training continues from the last
checkpoint in RUN_DIR (re-submitting the same command does the same after a crash).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpcinv.config import TrainConfig, load_config
from hpcinv.jobs import TrainJob
from hpcinv.train.trainer import check_inputs
from launch import common


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("Submit hpcinv DDP training to SLURM")
    p.add_argument("config", help="training config (YAML)")
    p.add_argument("--out", required=True, help="run folder on shared storage (re-submit to resume)")
    return p


def check_fits(cfg: TrainConfig, args: argparse.Namespace) -> None:
    """The ranks must fit the allocation, or Ray Train would wait for resources that never come."""
    have = {"CPU": args.nodes * args.cpus_per_node, "GPU": args.nodes * args.gpus_per_node}
    cfg.scaling.check_fits(
        have,
        f"the allocation (--nodes {args.nodes} x --cpus-per-node {args.cpus_per_node}, "
        f"--gpus-per-node {args.gpus_per_node})",
        "lower scaling.num_workers/cpus_per_worker or ask for more",
    )


def run(args: argparse.Namespace) -> None:
    cfg = load_config(TrainConfig, args.config, args.overrides)
    ex = common.executor(args, "train")  # checks the partition and node count first
    check_fits(cfg, args)
    if not args.after:  # with --after the datasets may still be in the making
        check_inputs(cfg, Path(args.out))
    jobs = common.submit(args.folder, lambda: [ex.submit(TrainJob(cfg, args.out, common.cluster_config(args)))])
    common.report(args, jobs, run_dir=args.out)


def main(argv: list[str] | None = None) -> int:
    return common.main(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
