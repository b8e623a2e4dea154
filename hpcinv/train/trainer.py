"""The training driver: validate inputs, then run the worker loop under Ray Train's TorchTrainer.

``RUN_DIR`` is both the Ray Train run (``RunConfig(name=RUN_DIR.name, storage_path=RUN_DIR.parent)``)
and hpcinv's run folder: ``config.yaml`` (resolved config), ``events.jsonl`` (start / resume / epoch
events per rank), ``checkpoint_epochNNNNNN/state.pt`` (kept ``train.keep_checkpoints`` at a time),
``wandb/`` (offline runs) and ``result.json``. Re-running the same command continues from the
latest checkpoint; a run folder holding a different config is refused (only ``train.epochs``,
``train.stop_after_epochs``, ``train.max_failures`` and ``tracking`` may change between runs).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from hpcinv.config import TrainConfig, load_config, save_config
from hpcinv.errors import HpcinvError
from hpcinv.fileio import atomic_write_text
from hpcinv.store import read_manifest
from hpcinv.train.checkpoint import load_state
from hpcinv.train.loop import EVENTS, train_loop_per_worker

log = logging.getLogger(__name__)

MUTABLE = {("train", "epochs"), ("train", "stop_after_epochs"), ("train", "max_failures"), ("tracking",)}


def _comparable(cfg: TrainConfig) -> dict:
    data = cfg.model_dump(mode="json")
    for path in MUTABLE:
        node = data
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return data


def check_inputs(cfg: TrainConfig, run_dir: Path) -> dict:
    """Everything that can be checked before Ray starts; returns the training manifest."""
    manifest = read_manifest(cfg.data.train)
    if not manifest["complete"]:
        raise HpcinvError(f"training dataset {cfg.data.train!r} is incomplete; finish it with `hpcinv generate`")
    for name, split in (("train", cfg.data.train_split), ("val", cfg.data.val_split)):
        folder = getattr(cfg.data, name)
        if folder and split is not None:
            splits = read_manifest(folder).get("splits") or {}
            if split not in splits:
                raise HpcinvError(f"data.{name}_split={split!r} is not a split of {folder!r}; it has {sorted(splits)}")
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
    saved = run_dir / "config.yaml"
    if saved.exists():
        old = load_config(TrainConfig, saved)
        if _comparable(old) != _comparable(cfg):
            raise HpcinvError(
                f"run folder {str(run_dir)!r} holds a run with a different config; use a new --out, or the same "
                "config (only train.epochs, train.stop_after_epochs, train.max_failures and tracking may change)"
            )
    n_train = len_split(manifest, cfg.data.train_split)
    if cfg.scaling.num_workers * cfg.train.batch_size > n_train:
        raise HpcinvError(
            f"{cfg.scaling.num_workers} workers x batch {cfg.train.batch_size} exceeds the {n_train} training "
            "samples; lower train.batch_size or scaling.num_workers"
        )
    return manifest


def read_events(run_dir: Path) -> list[dict]:
    path = run_dir / EVENTS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def len_split(manifest: dict, split: str | None) -> int:
    if split is None:
        return manifest["n_samples"]
    lo, hi = manifest["splits"][split]
    return hi - lo


def check_resources(cfg: TrainConfig) -> None:
    """Ray Train would wait forever for ranks the cluster cannot place: say so instead."""
    import ray

    have = ray.cluster_resources()
    need = {"CPU": cfg.scaling.num_workers * cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        need["GPU"] = cfg.scaling.num_workers
    short = {k: v for k, v in need.items() if have.get(k, 0) < v}
    if short:
        raise HpcinvError(
            f"scaling.num_workers={cfg.scaling.num_workers} needs {need} but the Ray cluster has "
            f"{ {k: have.get(k, 0) for k in need} }; lower scaling.num_workers/cpus_per_worker or ask SLURM for "
            "more (--cpus-per-task, --gpus-per-node, --nodes)")


def train(cfg: TrainConfig, run_dir: str | Path, *, address: str | None = None) -> dict:
    """Run (or resume) the training of ``cfg`` in ``run_dir``; returns the final metrics."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from hpcinv.generate.distributed import init_ray

    run_dir = Path(run_dir).resolve()
    # Paths inside the config are resolved now, so workers (any cwd) and resumed runs agree.
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        k: str(Path(v).resolve()) for k in ("train", "val") if (v := getattr(cfg.data, k))})})
    if cfg.train.init_from:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
            update={"init_from": str(Path(cfg.train.init_from).resolve())})})
    check_inputs(cfg, run_dir)
    init_ray(address)
    check_resources(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump_json(), "run_dir": str(run_dir)},
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                     resources_per_worker={"CPU": cfg.scaling.cpus_per_worker},
                                     placement_strategy=cfg.scaling.placement_strategy),
        run_config=RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        ),
    )
    t_start = time.time()
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError wraps the worker's exception
        cause = exc
        while getattr(cause, "__cause__", None) is not None:
            cause = cause.__cause__
        if isinstance(cause, HpcinvError):
            raise HpcinvError(str(cause)) from None
        raise HpcinvError(f"training failed after {cfg.train.max_failures} restart(s): {exc}") from exc
    events = read_events(run_dir)
    bad = [e for e in events if e["event"] == "nonfinite" and e["time"] >= t_start]
    if bad:
        raise HpcinvError(
            f"training stopped: the loss became NaN/Inf in epoch {bad[0]['epoch'] + 1} after step {bad[0]['step']}; "
            "no checkpoint was written for that epoch (the last good one is kept). Lower train.lr, set "
            "train.grad_clip, or use train.precision=fp32"
        )
    ends = [e for e in events if e["event"] == "epoch_end" and "metrics" in e]
    summary = {"run_dir": str(run_dir), "checkpoint": result.checkpoint.path if result.checkpoint else None,
               "epochs_done": ends[-1]["epoch"] + 1 if ends else 0, "metrics": ends[-1]["metrics"] if ends else {}}
    atomic_write_text(run_dir / "result.json", json.dumps(summary, indent=1))
    return summary
