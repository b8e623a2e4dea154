"""Submit refine (full-waveform inversion from a network's prediction or a smooth start) to SLURM.

    python -m launch.refine [CONFIG] --data DATASET --init START --out DIR [--split S] [--nodes N ...]
                            [refine.key=value ...]

One job spans ``--nodes`` nodes with one Ray cluster: a refine actor per CPU core (``refine.threads``
each) or per GPU. Every input is checked here, on the login node, before anything is queued. A
preempted or timed-out job is requeued and keeps every finished shard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpcinv.argv import whole
from hpcinv.config import RefineConfig, load_config
from hpcinv.folders import claim
from hpcinv.jobs import RefineJob
from hpcinv.refine.driver import plan_refine
from launch import common


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("Submit hpcinv refine to SLURM")
    p.add_argument("config", nargs="?", help="refine config (YAML; default: the built-in settings)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--init", required=True, help="run/checkpoint, predict/refine output folder, or 'smooth'")
    p.add_argument("--out", required=True, help="output folder on shared storage")
    p.add_argument("--split", help="dataset split (e.g. test)")
    p.add_argument("--samples", type=whole(1), help="only the first N samples of the split")
    return p


def run(args: argparse.Namespace) -> None:
    if args.config and "=" in args.config and not Path(args.config).exists():
        args.overrides, args.config = [args.config, *args.overrides], None
    cfg = load_config(RefineConfig, args.config, args.overrides)
    if args.after:  # inputs made by an earlier job in the chain do not exist yet: the output folder can be checked
        claim(args.out, "refined")
    else:  # the same checks as `hpcinv refine` (but the network's predictions are left to the job)
        plan_refine(args.data, args.init, args.out, cfg, split=args.split, samples=args.samples, predict_start=False)
    ex = common.executor(args, "refine")
    job = RefineJob(
        cfg, args.data, args.init, args.out, common.cluster_config(args), split=args.split, samples=args.samples
    )
    jobs = common.submit(args.folder, lambda: [ex.submit(job)])
    common.report(args, jobs, out=args.out)


def main(argv: list[str] | None = None) -> int:
    return common.main(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
