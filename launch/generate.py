"""Submit dataset generation to SLURM.

    python -m launch.generate CONFIG --out DATASET [--nodes N --cpus-per-node C | --array K ...] [key=value ...]

One job spans ``--nodes`` nodes with one Ray cluster (a modelling actor per CPU or GPU). With
``--array K``, K independent jobs each model every K-th shard of the same dataset (each on its own
``--nodes``), and a last one-node job, started when all K have succeeded, verifies their shards and
writes the manifest. A preempted or timed-out job is requeued and keeps every finished shard.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from hpcinv.errors import HpcinvError
from hpcinv.jobs import StageJob
from hpcinv.store import folder_lock
from hpcinv.store.folder import open_dataset_folder
from launch import common


def build_parser() -> argparse.ArgumentParser:
    p = common.stage_parser("generate", "Submit hpcinv dataset generation to SLURM")
    p.add_argument("--array", type=int, metavar="K", help="split into K independent jobs plus a final one")
    return p


def run(args: argparse.Namespace) -> None:
    if args.array is not None and args.array < 2:
        raise HpcinvError(f"--array {args.array} is not valid: give at least 2 parts")
    if args.array and args.part:
        i, k = args.part
        raise HpcinvError(f"--part {i}/{k} and --array {args.array}: give one of them (--array makes the parts)")
    # physics, geometry, imported collection, the folder: refused here, not after queueing
    request = common.checked_request("generate", args, inputs_from_earlier_job=False)  # (its input: the config)
    if not args.array:
        common.submit_stage("generate", args, request, out=args.out)
        return
    cluster = common.cluster_config(args)
    ex = common.executor(args, "generate")  # checks the partition and node count
    with folder_lock(args.out):  # refused while another generate writes there
        # now: a config or path problem shows here, not in K jobs; --restart discards another dataset here, once
        open_dataset_folder(request.config, args.out, restart=request.restart)
    request = request.model_copy(update={"restart": False})  # (a part may not discard what the others write)
    parts = common.submit(
        args.folder,
        lambda: ex.submit_array(
            [
                StageJob("generate", request.model_copy(update={"part": (i, args.array)}), cluster)
                for i in range(args.array)
            ]
        ),
    )
    array_id = parts[0].job_id.split("_")[0]
    merge_args = argparse.Namespace(**{**vars(args), "after": array_id, "nodes": 1})
    merge_ex = common.executor(merge_args, "generate-merge")
    try:
        (merge,) = common.submit(args.folder, lambda: [merge_ex.submit(StageJob("generate", request, cluster))])
    except HpcinvError:
        subprocess.run(["scancel", array_id], check=False)  # no parts left running without their merge
        raise
    common.report(args, [*parts, merge], out=args.out)


def main(argv: list[str] | None = None) -> int:
    return common.main(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
