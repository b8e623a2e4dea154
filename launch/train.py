"""Submit DDP training to SLURM.

    python -m launch.train CONFIG --out RUN_DIR --nodes 2 --gpus-per-node 4 --partition gpu --time 720 [key=value ...]

One Ray cluster over the job's nodes; Ray Train places ``scaling.num_workers`` ranks on it. On
preemption or at the time limit the job is requeued and training continues from the last
checkpoint in RUN_DIR (re-submitting the same command does the same after a crash).
"""

from __future__ import annotations

import argparse
import sys

from hpcinv.config import TrainConfig
from launch import common


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
    ex = common.executor(args, "train")  # the partition and node count first
    request = common.checked_request("train", args)  # with --after the datasets may still be in the making
    check_fits(request.config, args)  # type: ignore[attr-defined]
    common.submit_stage("train", args, request, ex=ex, run_dir=args.out)


def main(argv: list[str] | None = None) -> int:
    return common.main(run, common.stage_parser("train", "Submit hpcinv DDP training to SLURM"), argv)


if __name__ == "__main__":
    sys.exit(main())
