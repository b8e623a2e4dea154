"""Submit prediction to SLURM: a network applied to every sample of a dataset by one actor per core or
GPU of the job's nodes (one Ray cluster).

    python -m launch.predict RUN --data DATASET --out PRED [--split S] [--device cuda] [--nodes N ...]

Every input is checked here, on the login node, as ``hpcinv predict`` checks it.
"""

from __future__ import annotations

import argparse
import sys

from launch import common


def run(args: argparse.Namespace) -> None:
    request = common.checked_request("predict", args)
    common.submit_stage("predict", args, request, out=args.out)


def main(argv: list[str] | None = None) -> int:
    return common.main(run, common.stage_parser("predict", "Submit hpcinv predict to SLURM"), argv)


if __name__ == "__main__":
    sys.exit(main())
