"""The ``train`` stage: check every input, lock the run folder, then run the loop on Ray Train
(:mod:`hpcinv.distributed.train`) or as one rank in this process (``--in-process``).

``RUN_DIR`` is hpcinv's run folder (and the Ray Train run): ``config.yaml`` (resolved config),
``events.jsonl`` (start / resume / epoch events per rank), ``checkpoint_epochNNNNNN/state.pt`` (kept
``train.keep_checkpoints`` at a time, written by hpcinv atomically: see :mod:`hpcinv.checkpoint`),
``wandb/`` (offline runs) and ``result.json``. Re-running the same command continues from the newest
complete checkpoint; a run folder holding a different config is refused, naming what differs (only the settings declared
``RESUMABLE`` in :mod:`hpcinv.config` -- epochs, loader and cache settings, tracking... -- may change).

Before Ray starts, every shard the run will read is checked (``data.verify``), and the run folder
is locked (one training per folder) while its datasets are held shared (no ``generate --restart``
under a running training). SIGINT/SIGTERM stop the workers and exit with one line; nothing finished
is lost, because checkpoints are complete or absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import sys
import time
from pathlib import Path

from hpcinv.checkpoint import CHECKPOINT_PREFIX, STATE, check_archive, list_checkpoints, load_state
from hpcinv.config import TrainConfig, config_difference, load_config, role_paths, save_config, without_role
from hpcinv.errors import DataError, HpcinvError, Interrupted
from hpcinv.fileio import atomic_write_text
from hpcinv.folders import CONFIG, RESULT, claim, distinct, inspect, mark, require
from hpcinv.physics.survey import mirror_asymmetry
from hpcinv.stages.base import Execution
from hpcinv.stages.requests import TrainRequest
from hpcinv.store import folder_lock, read_manifest, require_readable
from hpcinv.store.manifest import has_velocity
from hpcinv.train.loop import read_events, run_in_process
from hpcinv.train.tracking import effective_mode

log = logging.getLogger(__name__)


def check_inputs(cfg: TrainConfig, run_dir: Path) -> dict:
    """Everything that can be checked before Ray starts; returns the training manifest."""
    train = cfg.data.train
    assert train is not None  # required by TrainConfig
    claim(run_dir, "run")
    sets = [
        ("data.train", train),
        *((f"data.mix entry {e!r}", f) for e, (f, _) in zip(cfg.data.mix, cfg.training_sets()[1:], strict=True)),
    ]
    if cfg.data.val:
        sets.append(("data.val", cfg.data.val))
    for what, path in sets:
        if inspect(path).kind == "imported":
            raise HpcinvError(
                f"{what}={path!r} holds gathers only (no true velocities), imported by `hpcinv import-gathers`: it "
                "can be predicted, refined and scored by data misfit, not trained on"
            )
        require(path, ("dataset",), what=what)
    check_no_repeats(cfg)
    source = cfg.train.init_from
    distinct(run_dir, {**dict(sets), "train.init_from": source if source and Path(source).is_dir() else None})
    manifest = read_manifest(train)
    if not manifest["complete"]:
        raise HpcinvError(f"training dataset {cfg.data.train!r} is incomplete; finish it with `hpcinv generate`")
    for name, split in (("train", cfg.data.train_split), ("val", cfg.data.val_split)):
        folder = getattr(cfg.data, name)
        if folder and split is not None:
            splits = read_manifest(folder).get("splits") or {}
            if split not in splits:
                raise HpcinvError(f"data.{name}_split={split!r} is not a split of {folder!r}; it has {sorted(splits)}")
    for name, folder in (("train", cfg.data.train), ("val", cfg.data.val)):
        if folder and not has_velocity(read_manifest(folder)):
            raise HpcinvError(
                f"data.{name}={folder!r} holds gathers only (no true velocities): it can be predicted, "
                "refined and scored by data misfit, not trained on"
            )
    for entry, (folder, split) in zip(cfg.data.mix, cfg.training_sets()[1:], strict=True):
        _check_mixed(entry, folder, split, read_manifest(folder), train, manifest)
    if cfg.data.mirror_probability > 0:
        survey = manifest["survey"]
        why = mirror_asymmetry(survey["source_cells_zx"], survey["receiver_cells_zx"], survey["nx"])
        if why:
            raise HpcinvError(
                f"data.mirror_probability={cfg.data.mirror_probability} needs a left-right symmetric "
                f"survey, but in {cfg.data.train!r} {why}; set data.mirror_probability=0"
            )
    if cfg.data.val:
        val = read_manifest(cfg.data.val)
        if (val["gathers_shape"], val["velocity_shape"]) != (manifest["gathers_shape"], manifest["velocity_shape"]):
            raise HpcinvError(
                f"validation dataset {cfg.data.val!r} has gathers {val['gathers_shape']} -> velocity "
                f"{val['velocity_shape']} but training data has {manifest['gathers_shape']} -> "
                f"{manifest['velocity_shape']}"
            )
    if cfg.train.init_from:
        spec = load_state(cfg.train.init_from)["model_spec"]
        mine = (cfg.model.name, manifest["gathers_shape"], manifest["velocity_shape"])
        theirs = (spec["config"]["name"], spec["gathers_shape"], spec["velocity_shape"])
        if mine != theirs:
            raise HpcinvError(
                f"train.init_from={cfg.train.init_from!r} holds {theirs[0]} for gathers {theirs[1]} -> "
                f"{theirs[2]}, but this run trains {mine[0]} for {mine[1]} -> {mine[2]}"
            )
    newest = list_checkpoints(run_dir)[-1:]
    if newest:  # the checkpoint a resume starts from: damaged, it is said now, before anything is written
        try:
            check_archive(newest[0] / STATE)
        except HpcinvError as exc:
            raise HpcinvError(
                f"{exc}; to resume from the checkpoint before it, move {newest[0].name} out of {str(run_dir)!r}"
            ) from None
    saved = run_dir / CONFIG
    if saved.exists():
        old = load_config(TrainConfig, saved)
        if without_role(old, "resumable") != without_role(cfg, "resumable"):
            differs = config_difference(old, cfg, ignore="resumable")
            resumable = ", ".join(".".join(path) for path in role_paths(TrainConfig, "resumable"))
            raise HpcinvError(
                f"run folder {str(run_dir)!r} holds a run with a different config: {differs}; use a new --out, "
                f"or the same config (only {resumable} may change)"
            )
    n_train = sum(len_split(read_manifest(folder), split) for folder, split in cfg.training_sets())
    if cfg.scaling.num_workers * cfg.train.batch_size > n_train:
        raise HpcinvError(
            f"{cfg.scaling.num_workers} workers x batch {cfg.train.batch_size} exceeds the {n_train} training "
            "samples; lower train.batch_size or scaling.num_workers"
        )
    full = cfg.data.verify == "full"
    for folder, split in cfg.training_sets():
        require_readable(folder, split, full=full, what="training dataset")
    if cfg.data.val:
        require_readable(cfg.data.val, cfg.data.val_split, full=full, what="validation dataset")
    return manifest


def check_no_repeats(cfg: TrainConfig) -> None:
    """A dataset (or one split of it) named twice among data.train and data.mix would be trained on twice
    as often, silently: refused, as are two splits of one dataset that overlap."""
    seen: dict[str, list[tuple[str, str | None]]] = {}
    for folder, split in cfg.training_sets():
        seen.setdefault(str(Path(folder).resolve()), []).append((folder, split))
    for entries in seen.values():
        if len(entries) < 2:
            continue
        splits = [split for _, split in entries]
        if None in splits or len(set(splits)) < len(splits):
            named = " and ".join(f"{f}:{s}" if s else f for f, s in entries)
            raise HpcinvError(
                f"data.train and data.mix name the same data twice ({named}): it would count twice in every "
                "epoch; name each dataset (or split of it) once"
            )


def _check_mixed(entry: str, folder: str, split: str | None, mixed: dict, train: str, manifest: dict) -> None:
    """A data.mix dataset must be trainable and hold the same kind of sample as data.train."""
    where = f"data.mix entry {entry!r}"
    if not mixed["complete"]:
        raise HpcinvError(f"{where}: dataset {folder!r} is incomplete; finish it with `hpcinv generate`")
    if not has_velocity(mixed):
        raise HpcinvError(f"{where}: dataset {folder!r} holds gathers only (no true velocities): not trainable")
    splits = mixed.get("splits") or {}
    if split is not None and split not in splits:
        raise HpcinvError(f"{where}: {split!r} is not a split of {folder!r}; it has {sorted(splits)}")
    for key in ("gathers_shape", "velocity_shape", "survey"):
        mine, theirs = mixed[key], manifest[key]
        if mine != theirs:
            differ = (
                [f"{mine} vs {theirs}"]
                if key != "survey"
                else sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            )
            raise HpcinvError(
                f"{where}: {folder!r} was recorded differently from data.train={train!r} ({key}: "
                f"{', '.join(map(str, differ))}); a mixture needs one survey and grid"
            )


def len_split(manifest: dict, split: str | None) -> int:
    if split is None:
        return manifest["n_samples"]
    lo, hi = manifest["splits"][split]
    return hi - lo


def run_identity(cfg: TrainConfig) -> str:
    """What a run folder holds: its config without the settings that may change on resume."""
    return hashlib.sha256(json.dumps(without_role(cfg, "resumable"), sort_keys=True).encode()).hexdigest()


def newest_checkpoint_note(run_dir: Path) -> str:
    found = list_checkpoints(run_dir)
    if not found:
        return "no checkpoint has been written yet"
    return f"the newest checkpoint, {found[-1].name}, is kept"


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    address: str | None = None,
    in_process: bool = False,
    progress: bool = True,
) -> dict:
    """Run (or resume) the training of ``cfg`` in ``run_dir``; returns the final metrics.

    On Ray Train by default (``address``: the cluster to join); ``in_process``: one rank in this
    process, without Ray (``scaling.num_workers`` must be 1; no restarts on failure); ``progress``: bars on a
    terminal (else one line per epoch)."""
    run_dir = Path(run_dir).resolve()
    check_runner(cfg, in_process)
    cfg = resolved(cfg)
    check_inputs(cfg, run_dir)
    with contextlib.ExitStack() as held:
        folders = {f for f, _ in cfg.training_sets()} | ({cfg.data.val} if cfg.data.val is not None else set())
        for folder in folders:
            held.enter_context(folder_lock(folder, shared=True, create=False))
        held.enter_context(folder_lock(run_dir, what="run"))
        done = finished(cfg, run_dir)
        if done is not None:
            log.info("%s has trained all %d epochs already: nothing to do", run_dir, cfg.train.epochs)
            return done
        if not in_process:
            from hpcinv.distributed.session import init_ray
            from hpcinv.distributed.train import check_resources

            init_ray(address)
            check_resources(cfg)
        return _train_locked(cfg, run_dir, in_process, progress)


def check_runner(cfg: TrainConfig, in_process: bool) -> None:
    """One rank in this process takes ``scaling.num_workers=1`` (and a GPU here when it asks for one)."""
    if in_process and cfg.scaling.num_workers != 1:
        raise HpcinvError(
            f"--in-process trains one rank in this process, but scaling.num_workers={cfg.scaling.num_workers}; "
            "set scaling.num_workers=1, or leave --in-process out to train on Ray"
        )
    if in_process and cfg.scaling.use_gpu:
        from hpcinv.doctor import require_gpu_ready

        require_gpu_ready("training with scaling.use_gpu=true", deepwave=False)


def resolved(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the paths in it made absolute now, so workers (any cwd) and resumed runs agree."""
    mix = [str(Path(folder).resolve()) + (f":{split}" if split else "") for folder, split in cfg.training_sets()[1:]]
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(
                update={k: str(Path(v).resolve()) for k in ("train", "val") if (v := getattr(cfg.data, k))}
                | {"mix": mix}
            )
        }
    )
    if cfg.train.init_from:
        cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"init_from": str(Path(cfg.train.init_from).resolve())})}
        )
    return cfg


def check(req: TrainRequest, execution: Execution | None = None) -> None:
    """Everything checkable before Ray starts (``python -m launch.train`` runs it too)."""
    if execution is not None:
        check_runner(req.config, execution.in_process)
    check_inputs(resolved(req.config), Path(req.out).resolve())


def run(req: TrainRequest, execution: Execution) -> dict:
    return train(
        req.config, req.out, address=execution.address, in_process=execution.in_process, progress=execution.progress
    )


def finished(cfg: TrainConfig, run_dir: Path) -> dict | None:
    """The result of a run in ``run_dir`` that has trained all of ``cfg``'s epochs (its newest checkpoint
    is the last epoch's and its result is written): re-running it starts nothing."""
    found = list_checkpoints(run_dir)
    if not found or int(found[-1].name.removeprefix(CHECKPOINT_PREFIX)) + 1 < cfg.train.epochs:
        return None
    try:
        result = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    newest = str(found[-1])
    if not isinstance(result, dict) or result.get("checkpoint") != newest:
        return None
    return result


def _fit_in_process(cfg: TrainConfig, run_dir: Path, progress_bars: bool) -> None:
    try:
        run_in_process(cfg, run_dir, progress_bars)
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None


def _train_locked(cfg: TrainConfig, run_dir: Path, in_process: bool, progress: bool) -> dict:
    if cfg.train.scale_lr_with_workers and cfg.scaling.num_workers >= 8 and not cfg.train.warmup_epochs:
        log.warning(
            "train.scale_lr_with_workers multiplies the learning rate by %d without a warm-up; large "
            "rates early in training often diverge: consider train.warmup_epochs (e.g. 5)",
            cfg.scaling.num_workers,
        )
    mark(run_dir, "run", run_identity(cfg))
    save_config(cfg, run_dir / CONFIG)
    mode = effective_mode(cfg.tracking, run_dir)  # an unreachable W&B server means offline, never a failure
    worker_cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"mode": mode})})
    # progress bars on a terminal unless --quiet; one line per epoch otherwise (in a log file bars come out all at once)
    bars = progress and sys.stderr.isatty()
    t_start = time.time()
    try:
        if in_process:
            _fit_in_process(worker_cfg, run_dir, bars)
        else:
            from hpcinv.distributed.train import fit

            fit(worker_cfg, run_dir, bars)
    except Interrupted as exc:
        raise Interrupted(
            exc.signum, f"training stopped; {newest_checkpoint_note(run_dir)}; re-run the same command to resume"
        ) from None
    all_events = read_events(run_dir)
    events = [e for e in all_events if e["time"] >= t_start]
    errors = [e for e in events if e["event"] == "error"]
    if errors:
        where = f" in epoch {errors[0]['epoch'] + 1}" if "epoch" in errors[0] else " before the first step"
        raise DataError(f"training stopped{where}: {errors[0]['message']}; {newest_checkpoint_note(run_dir)}")
    bad = [e for e in events if e["event"] == "nonfinite"]
    if bad:
        raise HpcinvError(
            f"training stopped: NaN/Inf in the loss, weights, BatchNorm statistics or optimizer state in epoch "
            f"{bad[0]['epoch'] + 1} after step {bad[0]['step']}; nothing of that epoch was saved and "
            f"{newest_checkpoint_note(run_dir)}. Lower train.lr, set train.grad_clip, or use train.precision=fp32"
        )
    ends = [e for e in all_events if e["event"] == "epoch_end" and "metrics" in e]
    found = list_checkpoints(run_dir)
    summary = {
        "run_dir": str(run_dir),
        "checkpoint": str(found[-1]) if found else None,
        "epochs_done": ends[-1]["epoch"] + 1 if ends else 0,
        "metrics": ends[-1]["metrics"] if ends else {},
        "tracking": mode,
    }
    atomic_write_text(run_dir / RESULT, json.dumps(summary, indent=1))
    return summary
