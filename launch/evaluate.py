"""Submit evaluation to SLURM (one node, no Ray).

python -m launch.evaluate RUN_OR_CHECKPOINT [...] --data DATASET --out REPORT_DIR [--split test] [SLURM options]
"""

from __future__ import annotations

import argparse
import sys

from hpcinv.cli import add_evaluate_options
from hpcinv.config import EvaluateConfig
from hpcinv.errors import HpcinvError
from hpcinv.evaluate.report import check_inputs
from hpcinv.folders import claim
from hpcinv.jobs import EvaluateJob
from launch import common


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("Submit hpcinv evaluation to SLURM")
    add_evaluate_options(p)
    return p


def run(args: argparse.Namespace) -> None:
    if args.overrides:
        raise HpcinvError(f"evaluation takes no key=value overrides, got {args.overrides}")
    settings = EvaluateConfig.from_args(args)
    if args.after:  # inputs made by an earlier job in the chain do not exist yet: the output folder can be checked
        claim(args.out, "report")
    else:  # the same checks as `hpcinv evaluate`
        check_inputs(args.runs, args.data, args.out, settings)
    ex = common.executor(args, "evaluate", nodes=1)
    job = EvaluateJob(args.runs, args.data, args.out, settings)
    jobs = common.submit(args.folder, lambda: [ex.submit(job)])
    common.report(args, jobs, out=args.out)


def main(argv: list[str] | None = None) -> int:
    return common.main(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
