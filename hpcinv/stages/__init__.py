"""The stages of hpcinv, in one table: ``generate``, ``import-gathers``, ``train``, ``predict``, ``refine``,
``evaluate``, ``field-report``, ``quickstart``.

Each is a request model (everything that decides its result) and one ``run(request, execution)``
(:mod:`hpcinv.stages.base`); its ``check(request)`` runs every check that needs no cluster. The command
line (:mod:`hpcinv.cli`), the SLURM launchers and their job (:mod:`launch`, :mod:`hpcinv.jobs`),
``hpcinv cluster`` and the quickstart are built from this table: a stage's arguments are declared once,
here, and every setting of a stage's config is also a ``key.sub=value`` override (the one spelling).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hpcinv.argv import add_model_flags, model_from_flags, whole
from hpcinv.config import (
    DataConfig,
    EvaluateConfig,
    FieldReportConfig,
    PredictConfig,
    RefineConfig,
    TrainConfig,
    build_config,
    load_config,
    merge_dicts,
    parse_overrides,
)
from hpcinv.errors import HpcinvError
from hpcinv.stages.base import Arg, Execution, Stage
from hpcinv.stages.requests import (
    EvaluateRequest,
    FieldReportRequest,
    GenerateRequest,
    ImportRequest,
    PredictRequest,
    QuickstartRequest,
    RefineRequest,
    TrainRequest,
    split_overrides,
)

__all__ = ["STAGES", "Execution", "Stage", "execution_from", "parser_for", "request_from"]


def _part(text: str) -> tuple[int, int]:
    i, sep, k = text.partition("/")
    if not (sep and i.isdigit() and k.isdigit() and int(i) < int(k)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/K with 0 <= I < K (e.g. 0/4)")
    return int(i), int(k)


def _settings(model: type[BaseModel], args: argparse.Namespace, overrides: list[str]) -> Any:
    """A stage's settings from its flags, with ``key=value`` overrides on top."""
    flags = model_from_flags(model, args).model_dump()
    return build_config(model, merge_dicts(flags, parse_overrides(overrides)))


def _config_file(args: argparse.Namespace, overrides: list[str]) -> tuple[str | None, list[str]]:
    """refine's optional CONFIG: a word with '=' that is not a file is the first override."""
    config = args.config
    if config and "=" in config and not os.path.exists(config):
        return None, [config, *overrides]
    return config, overrides


def _named_stores(entries: list[str]) -> dict[str, str]:
    """``["network=runs/p", "refined=runs/r"]`` -> {name: store}; a bare path is named after its folder."""
    models: dict[str, str] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        name, path = (name, path) if sep else (Path(entry).name, entry)
        if not name or not path:
            raise HpcinvError(f"--models entry {entry!r} must be NAME=STORE (or a store folder)")
        if name in models:
            raise HpcinvError(f"--models names {name!r} twice; give each model its own name")
        models[name] = path
    if not models:
        raise HpcinvError("give at least one velocity store with --models NAME=STORE")
    return models


def _field_report(args: argparse.Namespace, overrides: list[str]) -> FieldReportRequest:
    # (a setting's key=value after --models is an override, not a store: argparse hands it over with them)
    def setting(entry: str) -> bool:
        key, sep, _ = entry.partition("=")
        return bool(sep) and key.split(".")[0] in FieldReportConfig.model_fields and not os.path.exists(entry)

    overrides = [*overrides, *(m for m in args.models if setting(m))]
    config, overrides = _config_file(args, overrides)
    return FieldReportRequest(
        config=load_config(FieldReportConfig, config, overrides),
        data=args.data,
        models=_named_stores([m for m in args.models if not setting(m)]),
        out=args.out,
    )


def _evaluate(args: argparse.Namespace, overrides: list[str]) -> EvaluateRequest:
    # (a key=value after the inputs is an override, not an input: argparse hands it over with them)
    given = [r for r in args.runs if not ("=" in r and not os.path.exists(r))]
    overrides = [*overrides, *(r for r in args.runs if r not in given)]
    return EvaluateRequest(
        runs=given, data=args.data, out=args.out, settings=_settings(EvaluateConfig, args, overrides)
    )


def _quickstart(out: str, overrides: list[str]) -> QuickstartRequest:
    split_overrides(overrides)  # every override names a section of the dataset, the run or refine
    return QuickstartRequest(out=out, overrides=overrides)


CONFIG = Arg(("config",), "YAML config file or preset name (the files in configs/, e.g. tiny)")
OUT = Arg(("--out",), "output folder (created; re-run the same command to resume)", {"required": True})
RESTART = Arg(("--restart",), "discard another output of this command in --out", {"action": "store_true"})
DATA = Arg(("--data",), "dataset folder (made by generate or import-gathers)", {"required": True})


STAGES: dict[str, Stage] = {
    "generate": Stage(
        "generate",
        "forward-model velocity models into a sharded HDF5 dataset",
        "dataset",
        (
            CONFIG,
            OUT,
            Arg(("--restart",), "discard a dataset of another config in --out", {"action": "store_true"}),
            Arg(
                ("--part",),
                "only shards I, I+K, I+2K, ... and no manifest (one of K array tasks); a final run without "
                "--part records them all",
                {"type": _part, "metavar": "I/K"},
            ),
            Arg(
                ("--verify",),
                "how the shards already in --out are checked before they are kept: fast (one stat each: size "
                "and times as recorded) or full (their sha256: after `hpcinv verify` found one damaged)",
                {"choices": ("fast", "full"), "default": "fast"},
            ),
        ),
        lambda a, o: GenerateRequest(
            config=load_config(DataConfig, a.config, o), out=a.out, restart=a.restart, part=a.part, verify=a.verify
        ),
        "hpcinv.stages.generate",
        ray="default",
    ),
    "import-gathers": Stage(
        "import-gathers",
        "store recorded gathers (no true velocities) as a dataset",
        "imported",
        (
            Arg(("config",), "data config giving the survey, grid and modelling of the recording"),
            Arg(
                ("--gathers",),
                ".npy (or .npz with --key) of shape (N, shots, time, receivers), or a SEG-Y line of shot gathers "
                "(.sgy/.segy: survey, grid width and sampling from its trace headers)",
                {"required": True},
            ),
            Arg(("--key",), "array name in a .npz"),
            Arg(
                ("--scale",),
                "multiply the gathers by this before storing them (e.g. to fit float16); recorded, and undone "
                "whenever they are read",
                {"type": float, "default": 1.0},
            ),
            Arg(
                ("--pad-m",),
                "SEG-Y: model margin beyond the outermost source or receiver (m)",
                {"type": float, "default": 500.0},
            ),
            Arg(
                ("--wavelet",),
                "SEG-Y: the source wavelet of the config's survey, or one estimated from the recording's direct "
                "wave (recorded in the dataset's survey)",
                {"choices": ["config", "estimate"], "default": "config"},
            ),
            Arg(
                ("--wavelet-near-m",),
                "--wavelet estimate: traces within this offset of their shot (their direct wave arrives alone)",
                {"type": float, "default": 1000.0},
            ),
            Arg(
                ("--wavelet-after-s",),
                "--wavelet estimate: the window (and the wavelet) ends this long after the direct arrival; it must "
                "end before the sea-floor reflection at those offsets",
                {"type": float, "default": 0.2},
            ),
            Arg(("--out",), "dataset folder (created)", {"required": True}),
        ),
        lambda a, o: ImportRequest(
            config=load_config(DataConfig, a.config, o),
            gathers=a.gathers,
            out=a.out,
            key=a.key,
            scale=a.scale,
            pad_m=a.pad_m,
            wavelet=a.wavelet,
            wavelet_near_m=a.wavelet_near_m,
            wavelet_after_s=a.wavelet_after_s,
            # the samples to import are chosen on the command line; a config's counts are generation settings
            chosen=bool({"start_index", "n_samples"} & set(parse_overrides(o).get("dataset") or {})),
        ),
        "hpcinv.stages.import_gathers",
    ),
    "train": Stage(
        "train",
        "DDP training on Ray Train (re-run the same command to resume)",
        "run",
        (
            Arg(("config",), "YAML config file or preset name (e.g. fcnvmb_pretrain)"),
            Arg(("--out",), "run folder: checkpoints, events, W&B files, result", {"required": True}),
        ),
        lambda a, o: TrainRequest(config=load_config(TrainConfig, a.config, o), out=a.out),
        "hpcinv.stages.train",
        ray="default",
    ),
    "predict": Stage(
        "predict",
        "apply a trained network to every sample of a dataset (a velocity store)",
        "predictions",
        (
            Arg(("run",), "run folder, checkpoint folder or state.pt"),
            Arg(("--data",), "dataset folder (true velocities optional)", {"required": True}),
            OUT,
            RESTART,
        ),
        lambda a, o: PredictRequest(
            run=a.run, data=a.data, out=a.out, settings=_settings(PredictConfig, a, o), restart=a.restart
        ),
        "hpcinv.stages.predict",
        ray="optional",
        settings=PredictConfig,
    ),
    "refine": Stage(
        "refine",
        "full-waveform inversion from a network's prediction or a smooth model",
        "refined",
        (
            Arg(
                ("config",),
                "refine config file or preset name (e.g. cpu_refine; default: the built-in refine settings)",
                {"nargs": "?"},
            ),
            Arg(("--data",), "dataset folder: its gathers and survey are inverted", {"required": True}),
            Arg(
                ("--init",),
                "a run/checkpoint (its predictions), a folder made by predict or refine, or 'smooth' (a linear "
                "v(z), see refine.smooth_*)",
                {"required": True, "metavar": "START"},
            ),
            OUT,
            RESTART,
            Arg(("--split",), "dataset split (e.g. test)"),
            Arg(("--samples",), "only the first N samples of the split (a documented subset)", {"type": whole(1)}),
            Arg(("--figures",), "samples drawn in figures/", {"type": whole(0), "default": 2}),
            Arg(("--allow-survey-mismatch",), "start from a network of another survey", {"action": "store_true"}),
        ),
        lambda a, o: RefineRequest(
            config=load_config(RefineConfig, *_config_file(a, o)),
            data=a.data,
            init=a.init,
            out=a.out,
            split=a.split,
            samples=a.samples,
            figures=a.figures,
            allow_survey_mismatch=a.allow_survey_mismatch,
            restart=a.restart,
        ),
        "hpcinv.stages.refine",
        ray="default",
    ),
    "evaluate": Stage(
        "evaluate",
        "metrics, figures and data misfit of runs/checkpoints/stores on a dataset",
        "report",
        (
            Arg(
                ("runs",),
                "run folders, checkpoint folders, state.pt files, or folders made by predict / refine (several: a "
                "comparison)",
                {"nargs": "+"},
            ),
            DATA,
            Arg(("--out",), "report folder (made whole, or replacing an earlier report)", {"required": True}),
        ),
        _evaluate,
        "hpcinv.stages.evaluate",
        settings=EvaluateConfig,
        bars=False,
    ),
    "field-report": Stage(
        "field-report",
        "velocity models against a recording without a true model: misfit per shot, gathers, velocity analysis",
        "field",
        (
            Arg(("config",), "field-report settings file (default: the built-in ones)", {"nargs": "?"}),
            DATA,
            Arg(
                ("--models",),
                "velocity stores of the recording (made by predict / refine), each NAME=STORE",
                {"nargs": "+", "required": True},
            ),
            Arg(("--out",), "report folder (made whole, or replacing an earlier field report)", {"required": True}),
        ),
        lambda a, o: _field_report(a, o),
        "hpcinv.stages.field_report",
        bars=False,
    ),
    "quickstart": Stage(
        "quickstart",
        "generate, train, evaluate and refine a small model on this machine",
        "quickstart",
        (Arg(("--out",), "folder for dataset, run, report and refined models", {"default": "runs/quickstart"}),),
        lambda a, o: _quickstart(a.out, o),
        "hpcinv.stages.quickstart",
    ),
}


def parser_for(stage: Stage, parser: argparse.ArgumentParser, *, execution: bool = True) -> None:
    """Add ``stage``'s arguments to ``parser`` (with ``execution``: its Ray and progress options too)."""
    for arg in stage.args:
        parser.add_argument(*arg.flags, help=arg.help, **arg.options)
    if stage.settings is not None:
        add_model_flags(parser, stage.settings, whole_numbers=True)
    if execution and stage.bars:
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
    if execution:
        if stage.ray in ("default", "optional"):
            parser.add_argument(
                "--address", help="Ray cluster to join (HOST:PORT; default: $RAY_ADDRESS, else a local instance)"
            )
        if stage.ray == "default":
            parser.add_argument("--in-process", action="store_true", help="no Ray: do all of it in this process")
        if stage.ray in ("default", "optional") and stage.name != "train":
            parser.add_argument(
                "--workers", type=whole(1), help="actors (default: one per CPU core / its threads, or per GPU)"
            )
    parser.set_defaults(overrides=[])


def request_from(stage: Stage, args: argparse.Namespace) -> BaseModel:
    """The request of ``stage`` that parsed arguments (and their overrides) make."""
    return stage.request(args, list(getattr(args, "overrides", [])))


def execution_from(args: argparse.Namespace) -> Execution:
    return Execution(
        address=getattr(args, "address", None),
        in_process=bool(getattr(args, "in_process", False)),
        workers=getattr(args, "workers", None),
        progress=not getattr(args, "quiet", False),
    )
