"""Submit evaluation to SLURM (one node, no Ray).

python -m launch.evaluate RUN_OR_STORE [...] --data DATASET --out REPORT_DIR [--split test] [SLURM options]
"""

from __future__ import annotations

import argparse
import sys

from launch import common


def run(args: argparse.Namespace) -> None:
    request = common.checked_request("evaluate", args)
    common.submit_stage("evaluate", args, request, nodes=1, out=args.out)


def main(argv: list[str] | None = None) -> int:
    return common.main(run, common.stage_parser("evaluate", "Submit hpcinv evaluation to SLURM"), argv)


if __name__ == "__main__":
    sys.exit(main())
