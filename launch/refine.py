"""Submit refine (full-waveform inversion from a network's prediction or a smooth start) to SLURM.

    python -m launch.refine [CONFIG] --data DATASET --init START --out DIR [--split S] [--nodes N ...]
                            [refine.key=value ...]

One job spans ``--nodes`` nodes with one Ray cluster: a refine actor per CPU core (``refine.threads``
each) or per GPU. Every input is checked here, on the login node, as ``hpcinv refine`` checks it (the
network's predictions, and their check against the bounds, are left to the job) before anything is
queued. A preempted or timed-out job is requeued and keeps every finished shard.
"""

from __future__ import annotations

import argparse
import sys

from launch import common


def run(args: argparse.Namespace) -> None:
    request = common.checked_request("refine", args, predict_start=False)
    common.submit_stage("refine", args, request, out=args.out)


def main(argv: list[str] | None = None) -> int:
    return common.main(run, common.stage_parser("refine", "Submit hpcinv refine to SLURM"), argv)


if __name__ == "__main__":
    sys.exit(main())
