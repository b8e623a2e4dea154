"""The Ray Train adapter: the training loop (:mod:`hpcinv.train.loop`, which knows nothing of Ray) on
``scaling.num_workers`` DDP ranks of Ray Train's ``TorchTrainer`` (gloo on CPU, NCCL on GPU).

``RUN_DIR`` is both the Ray Train run (``RunConfig(name=RUN_DIR.name, storage_path=RUN_DIR.parent)``)
and hpcinv's run folder. Each worker builds the loop's :class:`~hpcinv.train.loop.Rank` from Ray
Train's context (rank, world, node, device, ``prepare_model`` for DDP, ``report``, Ray's progress bar).
``train.max_failures`` restarts the worker group after a lost process; a deterministic error (bad data,
NaN) ends the run through the event log, never a restart. SIGINT/SIGTERM abort the run cleanly.

On the console a run shows hpcinv's lines (epochs, progress bars, warnings): Ray Train's own INFO lines
("Requesting resources", "Setting up process group", one "Reporting training result" per rank and
epoch) go only to Ray's log files (``LoggingConfig(log_level=WARNING)`` and a filter on the workers'
console handler).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from ray.experimental.tqdm_ray import tqdm as ray_tqdm
from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from hpcinv.config import TrainConfig
from hpcinv.errors import HpcinvError, Interrupted, TrainingFailed
from hpcinv.train.loop import Rank, run_rank

CONSOLE_QUIET = (
    "Reporting training result",  # Ray Train's per-report debug lines
    '{"__magic_token__"',  # a progress bar's state: its stdout copy draws the bar; this copy only adds a blank line
)


class _NotOnConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CONSOLE_QUIET)


def _quiet_console() -> None:
    """Ray Train's per-report lines off the worker's console (its log files keep them)."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PlainRayHandler":  # Ray Train's console handler (not the file ones)
            handler.addFilter(_NotOnConsole())


def _worker(loop_config: dict) -> None:
    """What Ray Train runs on every worker: the loop, as this rank."""
    _quiet_console()
    cfg = TrainConfig.model_validate_json(loop_config["config"])
    ctx = ray.train.get_context()
    rank = Rank(
        ctx.get_world_rank(),
        ctx.get_world_size(),
        ctx.get_local_world_size(),
        ray.train.torch.get_device(),
        ray.get_runtime_context().get_node_id(),
        ray.train.torch.prepare_model,
        ray.train.report,
        ray_tqdm,
    )
    torch.set_num_threads(cfg.scaling.cpus_per_worker)
    run_rank(cfg, Path(loop_config["run_dir"]), rank, loop_config.get("progress_bars", True))


def check_resources(cfg: TrainConfig) -> None:
    """Ray Train would wait forever for ranks the cluster cannot place: say so instead."""
    cfg.scaling.check_fits(
        ray.cluster_resources(),
        "the Ray cluster",
        "lower scaling.num_workers/cpus_per_worker or ask SLURM for more (--cpus-per-task, --gpus-per-node, --nodes)",
    )


def _fit(trainer: TorchTrainer) -> None:
    """``trainer.fit()``; SIGINT or SIGTERM aborts the run (workers stopped) and raises :class:`Interrupted`.

    Ray Train registers its own SIGINT handler inside ``fit`` (it aborts the run and exits 1 without a
    word); hpcinv installs its handler in that place instead, for both signals. The handler only asks
    the controller to abort: ``fit`` then returns or raises, and the signal decides what that means. A
    second signal interrupts at once.
    """
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}
    received: list[int] = []

    def install(controller) -> None:
        def handler(signum, frame):
            if received:
                raise Interrupted(received[0])
            received.append(signum)
            with contextlib.suppress(Exception):
                controller.abort.remote()

        for s in signals:
            signal.signal(s, handler)

    if hasattr(trainer, "_register_sigint_handler"):
        trainer._register_sigint_handler = install
    try:
        trainer.fit()
    except Exception:
        if not received:
            raise
    finally:
        for s, h in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(s, h)
    if received:
        raise Interrupted(received[0])


def fit(cfg: TrainConfig, run_dir: Path, progress_bars: bool) -> None:
    """Run the loop of ``cfg`` in ``run_dir`` on Ray Train (Ray joined already); a worker's user error is
    re-raised as itself, anything Ray Train's restarts did not cure as :class:`TrainingFailed`."""
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": cfg.model_dump_json(), "run_dir": str(run_dir), "progress_bars": progress_bars},
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker},
            placement_strategy=cfg.scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # Ray Train's INFO lines to its files only
        ),
    )
    try:
        _fit(trainer)
    except Interrupted:
        raise
    except Exception as exc:  # TrainingFailedError wraps the worker's exception
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, HpcinvError):
            raise HpcinvError(str(cause)) from None
        raise TrainingFailed(f"training failed after {cfg.train.max_failures} restart(s): {exc}") from exc
