"""The ``hpcinv`` command line.

    hpcinv quickstart [--out DIR]
    hpcinv generate CONFIG --out DIR [--address HOST:PORT] [--workers N] [--in-process] [--restart] [--part I/K]
                    [key=value ...]
    hpcinv train CONFIG --out RUN_DIR [--address HOST:PORT | --in-process] [key.sub=value ...]
    hpcinv predict RUN_OR_CHECKPOINT --data DATASET --out DIR [--split S]
    hpcinv refine [CONFIG] --data DATASET --init {RUN_OR_CHECKPOINT | PREDICTIONS_DIR | smooth} --out DIR
                  [--split S] [--address HOST:PORT] [--workers N] [--in-process] [refine.key=value ...]
    hpcinv evaluate RUN_OR_CHECKPOINT_OR_STORE [...] --data DATASET --out DIR [--split S] [--baseline DATASET[:SPLIT]]
    hpcinv import-gathers CONFIG --gathers FILE.npy --out DIR [--scale S] [key=value ...]
    hpcinv verify DIR [--no-checksums]
    hpcinv doctor [--gpu] [--no-probe] [--no-deepwave]
    hpcinv config show PRESET [key.sub=value ...]
    hpcinv config env
    hpcinv cluster [--cluster-dir DIR] [--object-store-gb G] generate|train|refine ...   (under srun, one per node)

User errors (bad config, bad input, bad data) print one line, ``hpcinv: error: ...``, and exit 2 (with
``-v`` also the traceback of their cause). Anything else is a bug or a crash, not the user's input: one
line ``hpcinv: internal error: ...`` naming a file that holds the full traceback (``$HPCINV_LOG_DIR``,
else the temporary folder), exit 1; ``-v`` prints the traceback too.
SIGINT and SIGTERM print one line, ``hpcinv: interrupted ...``, and exit 130 / 143.
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
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version

from hpcinv.argv import OneLineParser, add_model_flags, model_from_flags, parse_with_overrides, whole
from hpcinv.config import ClusterConfig, DataConfig, RefineConfig, TrainConfig, load_config
from hpcinv.errors import HpcinvError, Interrupted


class _Parser(OneLineParser):
    prefix = "hpcinv"


def _package_version() -> str:
    try:
        return version("hpcinv")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _part(text: str) -> tuple[int, int]:
    i, sep, k = text.partition("/")
    if not (sep and i.isdigit() and k.isdigit() and int(i) < int(k)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/K with 0 <= I < K (e.g. 0/4)")
    return int(i), int(k)


def _cmd_generate(args: argparse.Namespace) -> int:
    cfg = load_config(DataConfig, args.config, args.overrides)  # a bad config is reported before torch loads
    from hpcinv.generate import generate

    # stdout carries only the JSON summary; Ray's forwarded worker logs go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        summary = generate(
            cfg,
            args.out,
            restart=args.restart,
            progress=not args.quiet,
            use_ray=not args.in_process,
            address=args.address,
            workers=args.workers,
            part=args.part,
        )
    print(json.dumps(asdict(summary), indent=1))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(TrainConfig, args.config, args.overrides)  # a bad config is reported before torch and Ray load
    from hpcinv.train.trainer import train

    with contextlib.redirect_stdout(sys.stderr):
        summary = train(cfg, args.out, address=args.address, in_process=args.in_process)
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hpcinv.config import EvaluateConfig
    from hpcinv.evaluate.report import evaluate

    result = evaluate(args.runs, args.data, args.out, EvaluateConfig.from_args(args))
    print(result["table"], end="")
    print(f"report: {result['out']}/metrics.md")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from hpcinv.predict import predict

    with contextlib.redirect_stdout(sys.stderr):
        summary = predict(
            args.run,
            args.data,
            args.out,
            split=args.split,
            shard_size=args.shard_size,
            allow_survey_mismatch=args.allow_survey_mismatch,
            restart=args.restart,
            progress=not args.quiet,
            samples=args.samples,
        )
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_refine(args: argparse.Namespace) -> int:
    if args.config and "=" in args.config and not os.path.exists(args.config):  # no config file: an override
        args.overrides, args.config = [args.config, *args.overrides], None
    cfg = load_config(RefineConfig, args.config, args.overrides)  # a bad config is reported before torch loads
    from hpcinv.refine import refine

    with contextlib.redirect_stdout(sys.stderr):
        summary = refine(
            args.data,
            args.init,
            args.out,
            cfg,
            split=args.split,
            restart=args.restart,
            progress=not args.quiet,
            use_ray=not args.in_process,
            address=args.address,
            workers=args.workers,
            figures=args.figures,
            allow_survey_mismatch=args.allow_survey_mismatch,
            samples=args.samples,
        )
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_import_gathers(args: argparse.Namespace) -> int:
    cfg = load_config(DataConfig, args.config, args.overrides)
    from hpcinv.config import parse_overrides
    from hpcinv.generate.gathers import import_gathers

    # the samples to import are chosen on the command line; a config's counts are generation settings
    chosen = bool({"start_index", "n_samples"} & set(parse_overrides(args.overrides).get("dataset") or {}))
    with contextlib.redirect_stdout(sys.stderr):
        summary = import_gathers(
            cfg, args.gathers, args.out, key=args.key, scale=args.scale, chosen=chosen, progress=not args.quiet
        )
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from hpcinv.quickstart import quickstart

    with contextlib.redirect_stdout(sys.stderr):
        report = quickstart(args.out, args.overrides, progress=not args.quiet)
    print(f"report: {report}")
    return 0


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
    from hpcinv.cluster import run_on_cluster

    if not args.command_args or args.command_args[0] not in ("generate", "train", "refine"):
        raise HpcinvError(
            f"hpcinv cluster runs 'generate ...', 'train ...' or 'refine ...', got {' '.join(args.command_args)!r}"
        )
    cluster = model_from_flags(ClusterConfig, args)
    code = run_on_cluster(lambda address: main([*args.command_args, "--address", address]), cluster)
    return code or 0


def add_evaluate_options(ev: argparse.ArgumentParser) -> None:
    """The options of ``hpcinv evaluate``, shared with ``python -m launch.evaluate``."""
    ev.add_argument(
        "runs",
        nargs="+",
        help="run folders, checkpoint folders, state.pt files, or folders made by "
        "predict / refine (several: a comparison)",
    )
    ev.add_argument("--data", required=True, help="dataset folder")
    ev.add_argument("--split", help="dataset split (e.g. test)")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--samples", type=whole(1), help="only the first N samples of the split (a documented subset)")
    ev.add_argument("--misfit-samples", type=whole(0), help="samples re-simulated for the data misfit (default: all)")
    ev.add_argument(
        "--baseline",
        metavar="DATASET[:SPLIT]",
        help="data whose mean model is the data-free baseline row (default: the first network's training data)",
    )
    ev.add_argument("--figures", type=whole(0), default=2, help="figures per run")
    ev.add_argument(
        "--verify",
        choices=("fast", "full"),
        default="fast",
        help="check the shards to be read: fast "
        "(sizes, headers, ranges; per-sample checksums on read) or full (also each shard's sha256)",
    )
    ev.add_argument(
        "--allow-survey-mismatch",
        action="store_true",
        help="evaluate on data of another survey than "
        "the network was trained on (a warning in the report instead of an error)",
    )


def _store_options(p: argparse.ArgumentParser, command: str) -> None:
    """What ``predict`` and ``refine`` share: the samples to cover and the output velocity store."""
    p.add_argument("--split", help="dataset split (e.g. test)")
    p.add_argument("--samples", type=whole(1), help="only the first N samples of the split (a documented subset)")
    p.add_argument("--out", required=True, help="output folder (re-run to resume)")
    p.add_argument("--restart", action="store_true", help=f"discard another {command}'s output in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


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

    gen = sub.add_parser("generate", help="forward-model velocity models into a sharded HDF5 dataset")
    gen.add_argument("config", help="YAML config file or preset name (e.g. configs/tiny.yaml or tiny)")
    gen.add_argument("--out", required=True, help="dataset folder (created; re-run to resume)")
    gen.add_argument("--restart", action="store_true", help="discard a dataset of another config in --out")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--address", help="Ray cluster to join (HOST:PORT; default: $RAY_ADDRESS, else a local instance)")
    gen.add_argument("--workers", type=whole(1), help="modelling actors (default: one per CPU core, or per GPU)")
    gen.add_argument("--in-process", action="store_true", help="no Ray: model every shard in this process")
    gen.add_argument(
        "--part",
        type=_part,
        metavar="I/K",
        help="only shards I, I+K, I+2K, ... and no manifest (one "
        "of K array tasks); a final run without --part records them all",
    )
    gen.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    gen.set_defaults(func=_cmd_generate)

    tr = sub.add_parser("train", help="DDP training on Ray Train (re-run the same command to resume)")
    tr.add_argument("config", help="YAML config file or preset name (e.g. fcnvmb_pretrain)")
    tr.add_argument("--out", required=True, help="run folder: checkpoints, events, W&B files, result")
    tr.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    tr.add_argument(
        "--in-process",
        action="store_true",
        help="no Ray: train one rank in this process (scaling.num_workers=1; no restart on a failure)",
    )
    tr.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="metrics, figures and data misfit of runs/checkpoints on a dataset")
    add_evaluate_options(ev)
    ev.set_defaults(func=_cmd_evaluate)

    pr = sub.add_parser("predict", help="apply a trained network to every sample of a dataset (a velocity store)")
    pr.add_argument("run", help="run folder, checkpoint folder or state.pt")
    pr.add_argument("--data", required=True, help="dataset folder (true velocities optional)")
    _store_options(pr, "predict")
    pr.add_argument("--shard-size", type=whole(1), default=16, help="models per output shard")
    pr.add_argument("--allow-survey-mismatch", action="store_true", help="apply a network to data of another survey")
    pr.set_defaults(func=_cmd_predict)

    rf = sub.add_parser("refine", help="full-waveform inversion from a network's prediction or a smooth model")
    rf.add_argument(
        "config",
        nargs="?",
        help="refine config file or preset name (e.g. refine_bench; default: the built-in refine settings)",
    )
    rf.add_argument("--data", required=True, help="dataset folder: its gathers and survey are inverted")
    rf.add_argument(
        "--init",
        required=True,
        metavar="START",
        help="a run/checkpoint (its predictions), a folder "
        "made by predict or refine, or 'smooth' (a linear v(z), see refine.smooth_*)",
    )
    _store_options(rf, "refine")
    rf.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    rf.add_argument(
        "--workers", type=whole(1), help="refine actors (default: one per CPU core / refine.threads, or per GPU)"
    )
    rf.add_argument("--in-process", action="store_true", help="no Ray: refine every model in this process")
    rf.add_argument("--figures", type=whole(0), default=2, help="samples drawn in figures/")
    rf.add_argument("--allow-survey-mismatch", action="store_true", help="start from a network of another survey")
    rf.add_argument("overrides", nargs="*", metavar="refine.key=value", help="config overrides")
    rf.set_defaults(func=_cmd_refine)

    ig = sub.add_parser("import-gathers", help="store recorded gathers (no true velocities) as a dataset")
    ig.add_argument("config", help="data config giving the survey, grid and modelling of the recording")
    ig.add_argument("--gathers", required=True, help=".npy (or .npz with --key) of shape (N, shots, time, receivers)")
    ig.add_argument("--key", help="array name in a .npz")
    ig.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the gathers by this before storing them (e.g. to fit float16); recorded, and undone "
        "whenever they are read",
    )
    ig.add_argument("--out", required=True, help="dataset folder (created)")
    ig.add_argument("--quiet", action="store_true", help="no progress bar")
    ig.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    ig.set_defaults(func=_cmd_import_gathers)

    qs = sub.add_parser("quickstart", help="generate, train and evaluate a small model on this machine")
    qs.add_argument("--out", default="runs/quickstart", help="folder for dataset, run and report")
    qs.add_argument("--quiet", action="store_true", help="no progress bars")
    qs.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="training overrides (train.epochs=2), or dataset ones prefixed gen. (gen.dataset.n_samples=64)",
    )
    qs.set_defaults(func=_cmd_quickstart)

    ver = sub.add_parser("verify", help="check a dataset's manifest, shards and checksums")
    ver.add_argument("dir")
    ver.add_argument("--no-checksums", action="store_true", help="skip sha256 (sizes and contents only)")
    ver.set_defaults(func=_cmd_verify)

    cf = sub.add_parser("config", help="show a preset resolved (with overrides), each key with its description")
    cf_sub = cf.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    show = cf_sub.add_parser("show", help="print the resolved config of PRESET with each key's description")
    show.add_argument("preset", help="a config file or a preset's name (the files in configs/, e.g. bench2)")
    show.add_argument("overrides", nargs="*", metavar="key.sub=value")
    show.set_defaults(func=_cmd_config_show)
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
    cl.add_argument("command_args", nargs=argparse.REMAINDER, metavar="COMMAND ...")
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
