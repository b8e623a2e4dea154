"""The ``hpcinv`` command line: a table over the stages (:mod:`hpcinv.stages`), plus the tools.

    hpcinv quickstart [--out DIR] [key.sub=value ...]
    hpcinv generate CONFIG --out DIR [--address HOST:PORT] [--workers N] [--in-process] [--restart] [--part I/K]
    hpcinv import-gathers CONFIG --gathers {FILE.npy | LINE.sgy} --out DIR [--key K] [--scale S] [--pad-m M]
    hpcinv train CONFIG --out RUN_DIR [--address HOST:PORT | --in-process]
    hpcinv predict RUN_OR_CHECKPOINT --data DATASET --out DIR [--split S] [--samples N] [--workers N] [--device D]
    hpcinv refine [CONFIG] --data DATASET --init {RUN_OR_CHECKPOINT | STORE | smooth} --out DIR
                  [--split S] [--samples N] [--address HOST:PORT] [--workers N] [--in-process]
    hpcinv evaluate RUN_OR_CHECKPOINT_OR_STORE [...] --data DATASET --out DIR [--split S] [--baseline DATASET[:SPLIT]]
    hpcinv field-report [CONFIG] --data DATASET --models NAME=STORE [...] --out DIR [velan.min_time_s=0.4 ...]
    hpcinv verify DIR [--no-checksums]
    hpcinv doctor [--gpu] [--no-probe] [--no-deepwave]
    hpcinv config show PRESET [key.sub=value ...]
    hpcinv config env
    hpcinv cluster [--cluster-dir DIR] [--object-store-gb G] STAGE ...   (under srun, one task per node)

Every stage takes ``key.sub=value`` overrides of its config anywhere on the line (``refine.lr_mps=20``,
``dataset.n_samples=64``, ``figures=3``): the one spelling of a setting. User errors (bad config, bad
input, bad data) print one line, ``hpcinv: error: ...``, and exit 2 (with ``-v`` also the traceback of
their cause). Anything else is a bug or a crash, not the user's input: one line ``hpcinv: internal
error: ...`` naming a file that holds the full traceback (``$HPCINV_LOG_DIR``, else the temporary
folder), exit 1; ``-v`` prints the traceback too. SIGINT and SIGTERM print one line, ``hpcinv:
interrupted ...``, and exit 130 / 143.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from importlib.metadata import PackageNotFoundError, version

from hpcinv.argv import OneLineParser, add_model_flags, model_from_flags, parse_with_overrides
from hpcinv.config import ClusterConfig, load_config
from hpcinv.errors import HpcinvError, Interrupted
from hpcinv.stages import STAGES, Stage, execution_from, parser_for, request_from


class _Parser(OneLineParser):
    prefix = "hpcinv"


def _package_version() -> str:
    try:
        return version("hpcinv")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _show(stage: Stage, result: dict) -> None:
    """What a stage prints on stdout: the report's table and path (evaluate, quickstart), else its summary
    as JSON."""
    if stage.name == "evaluate":
        print(result["table"], end="")
        print(f"report: {result['out']}/metrics.md")
    elif stage.name == "quickstart":
        print(f"report: {result['report']}")
    else:
        print(json.dumps(result, indent=1))


def _stage_command(stage: Stage):
    def command(args: argparse.Namespace) -> int:
        request = request_from(stage, args)  # a bad config is reported here, before torch and Ray load
        # stdout carries only the result; Ray's forwarded worker logs go to stderr
        with contextlib.redirect_stdout(sys.stderr):
            result = stage.run(request, execution_from(args))
        _show(stage, result)
        return 0

    return command


def _cmd_verify(args: argparse.Namespace) -> int:
    from hpcinv.store import verify_dataset

    report = verify_dataset(args.dir, checksums=not args.no_checksums)
    for problem in report.problems:
        print(f"FAIL {problem}")
    status = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{status}: {report.shards_ok} shards / {report.samples_ok} samples verified in {args.dir}")
    return 0 if report.ok else 1


def _cmd_config_show(args: argparse.Namespace) -> int:
    from hpcinv.config import config_kind, describe

    kind = config_kind(args.preset)
    cfg = load_config(kind, args.preset, args.overrides)
    print(f"# {args.preset}: a {kind.__name__}, resolved with {len(args.overrides)} override(s)")
    print(describe(cfg))
    return 0


def _cmd_config_env(args: argparse.Namespace) -> int:
    from hpcinv.environment import describe_environment, environment

    environment()  # a bad value is reported
    print(describe_environment())
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from hpcinv.doctor import findings

    found = findings(gpu=args.gpu, probe=not args.no_probe and not args.no_deepwave, deepwave=not args.no_deepwave)
    for finding in found:
        print(finding)
    return 1 if any(f.level == "fail" for f in found) else 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    from hpcinv.distributed.cluster import run_on_cluster

    ray_stages = [name for name, stage in STAGES.items() if stage.ray == "default"]
    if not args.command_args or args.command_args[0] not in ray_stages:
        raise HpcinvError(
            f"hpcinv cluster runs one of {', '.join(ray_stages)} (e.g. 'hpcinv cluster train CONFIG --out RUN'), "
            f"got {' '.join(args.command_args)!r}"
        )
    cluster = model_from_flags(ClusterConfig, args)
    code = run_on_cluster(lambda address: main([*args.command_args, "--address", address]), cluster)
    return code or 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hpcinv",
        description="Deep-learning seismic velocity-model building: generate, train, predict, refine, evaluate.",
        epilog="Config keys: 'hpcinv config show PRESET' prints a preset resolved, each key with its description "
        "(presets: the files in configs/); 'hpcinv config env' lists the HPCINV_* environment variables. "
        "Guides: README.md and docs/ (SLURM.md, GPU.md, REFINE.md, FORMAT.md, RESULTS.md).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"hpcinv {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    for stage in STAGES.values():
        command = sub.add_parser(stage.name, help=stage.help)
        parser_for(stage, command)
        command.set_defaults(func=_stage_command(stage))

    ver = sub.add_parser("verify", help="check a dataset's manifest, shards and checksums")
    ver.add_argument("dir")
    ver.add_argument("--no-checksums", action="store_true", help="skip sha256 (sizes and contents only)")
    ver.set_defaults(func=_cmd_verify)

    cf = sub.add_parser("config", help="show a preset resolved (with overrides), each key with its description")
    cf_sub = cf.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    show = cf_sub.add_parser("show", help="print the resolved config of PRESET with each key's description")
    show.add_argument("preset", help="a config file or a preset's name (the files in configs/, e.g. tiny)")
    show.set_defaults(func=_cmd_config_show, overrides=[])
    env = cf_sub.add_parser("env", help="print every HPCINV_* environment variable, who reads it and its value here")
    env.set_defaults(func=_cmd_config_env)

    doc = sub.add_parser(
        "doctor",
        help="preflight: can this node run the GPU paths (torch CUDA build, driver, "
        "deepwave's kernels for each GPU, NCCL, memory)? exit 1 if not",
    )
    doc.add_argument("--gpu", action="store_true", help="a GPU job is meant to run here: no GPU is a failure")
    doc.add_argument("--no-probe", action="store_true", help="skip running a one-shot deepwave model per GPU")
    doc.add_argument(
        "--no-deepwave", action="store_true", help="leave deepwave's kernels out (a node that only trains needs none)"
    )
    doc.set_defaults(func=_cmd_doctor)

    cl = sub.add_parser(
        "cluster",
        help="run generate/train/refine on a Ray cluster over this SLURM job step "
        "(srun --ntasks-per-node=1 hpcinv cluster train ...)",
    )
    add_model_flags(cl, ClusterConfig)
    cl.add_argument("command_args", nargs=argparse.REMAINDER, metavar="STAGE ...")
    cl.set_defaults(func=_cmd_cluster)
    return parser


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_with_overrides(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return args.func(args)
    except HpcinvError as exc:  # the user's input: one line (its cause with -v)
        if args.verbose:
            traceback.print_exc()
        print(f"hpcinv: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        name = signal.Signals(exc.signum).name
        print(f"hpcinv: interrupted by {name}" + (f": {exc.message}" if exc.message else ""), file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("hpcinv: interrupted by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as exc:  # a bug or a crash, not the user's input: keep the traceback
        text = traceback.format_exc()
        if args.verbose:
            print(text, file=sys.stderr, end="")
        log = _save_traceback(text)
        print(
            f"hpcinv: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]} (not a problem "
            f"with your input; full traceback in {log}, or re-run with -v)",
            file=sys.stderr,
        )
        return 1


def _save_traceback(text: str) -> str:
    """Write a traceback where the user can find it: $HPCINV_LOG_DIR, else the temporary folder."""
    import tempfile
    import time

    from hpcinv.environment import environment

    try:
        folder = environment().log_dir
    except HpcinvError:  # a bad HPCINV_* value must not hide the traceback
        folder = tempfile.gettempdir()
    try:
        fd, path = tempfile.mkstemp(prefix=f"hpcinv-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log", dir=folder)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path
    except OSError:
        return "(could not be written; re-run with -v)"


if __name__ == "__main__":
    sys.exit(main())
