"""The per-rank training loop, run by Ray Train on every DDP rank (:mod:`hpcinv.distributed.train`) or as
one rank in this process (:func:`run_in_process`); it knows nothing of Ray.

Each rank: restores the newest complete checkpoint on disk (rank 0 picks it and rolls the event log
back to it, so a resumed epoch is never logged twice), or loads ``train.init_from`` for
fine-tuning; builds the network from the dataset's shapes, applies activation checkpointing /
precision, wraps the model for data parallelism (the runner's ``prepare_model``: DDP), reads its own
shards (shard-aware sampler), and every epoch validates, saves a full-state checkpoint (rank 0) and
reports its metrics to the runner. Rank 0 alone talks to W&B.

Every step starts with one all-reduce of two flags -- a damaged sample read on any rank, and NaN/Inf
anywhere in the loss, weights or BatchNorm buffers after the previous step -- so all ranks stop at
the same step, before a checkpoint could hold such values. Such stops, and any other deterministic
error (a missing file, a bad checkpoint), are written to the event log and end the run cleanly on
every rank: Ray Train's ``FailureConfig`` restarts workers for lost processes, never for errors that
a restart would only repeat. The driver turns the event into one error line.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from hpcinv.checkpoint import (
    CHECKPOINT_PREFIX,
    checkpoint_dir,
    list_checkpoints,
    load_state,
    payload,
    remove_partial_checkpoints,
    save_checkpoint,
    unwrap,
    weights_digest,
)
from hpcinv.config import TrainConfig
from hpcinv.errors import DataError, HpcinvError
from hpcinv.feed import Normalised, Normaliser
from hpcinv.feed.batches import RawBatches, available_host_bytes
from hpcinv.feed.device import DeviceFeed, batches_of, normalised
from hpcinv.feed.mixture import Concatenated
from hpcinv.feed.sampler import ShardAwareSampler
from hpcinv.feed.source import batch_source
from hpcinv.fileio import atomic_write_text
from hpcinv.folders import EVENTS
from hpcinv.metrics import velocity_metrics
from hpcinv.nets import count_parameters, model_spec
from hpcinv.physics.forward import torch_threads
from hpcinv.store import ShardedDataset, read_manifest
from hpcinv.store.manifest import pooled_stats
from hpcinv.train.engine import (
    Trainer,
    local_prepare,
    loss_function,
    mirror_some,
    optimizer_nonfinite_count,
    peak_memory_mb,
)
from hpcinv.train.parallel import autocast

# ------------------------------------------------------------------------------------ pieces


def normaliser_for(cfg: TrainConfig, manifest: dict) -> Normaliser:
    v_range = None
    if cfg.data.v_range_mps:
        v_min, v_max = cfg.data.v_range_mps  # two values: checked by TrainDataSection
        v_range = (v_min, v_max)
    return Normaliser.from_manifest(manifest, cfg.data.gathers_norm, cfg.data.velocity_norm, v_range)


def velocity_range(norm: Normaliser, manifest: dict) -> tuple[float, float]:
    if norm.velocity == "minmax":
        return norm.v_min, norm.v_max
    return manifest["stats"]["velocity"]["min"], manifest["stats"]["velocity"]["max"]


def events_file(run_dir: Path, rank: int) -> Path:
    """Rank 0 writes ``events.jsonl``, rank k ``events.rank<k>.jsonl``: one writer per file, so ranks on
    several nodes never interleave a line (appends from several NFS clients are not atomic)."""
    return run_dir / (EVENTS if rank == 0 else f"events.rank{rank}.jsonl")


def append_event(run_dir: Path, event: dict) -> None:
    """One JSON line per event, in the file of the event's rank (rank 0 when it names none)."""
    line = (json.dumps({"time": time.time(), **event}) + "\n").encode()
    fd = os.open(events_file(run_dir, int(event.get("rank", 0))), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def all_reduce_sum(values: list, device: torch.device) -> list[float]:
    """Sum numbers (or 0-d tensors, which stay on the device until now) over all ranks: one collective
    and one device-to-host copy."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def epoch_batches(
    batches: Iterator, n_batches: int, blank: tuple[torch.Tensor, torch.Tensor]
) -> Iterator[tuple[torch.Tensor, torch.Tensor, float, str | None]]:
    """Exactly ``n_batches`` ``(gathers, target, weight, read_error)`` from the device feed.

    Ranks learn of a damaged sample only at the next check (every ``train.check_every_steps`` steps and
    at the epoch's end), and until then every rank must keep taking part in DDP's gradient all-reduce.
    So after a damaged read a rank repeats its last good batch (or ``blank``) with weight 0 and carries
    the message; the run stops at the check, and no checkpoint ever holds the weights of those steps.
    """
    error, last = None, blank
    for _ in range(n_batches):
        if error is None:
            try:
                last = next(batches)
            except DataError as exc:
                error = DataError.message_of(exc)
            except StopIteration:
                raise HpcinvError(f"the training input ended before the epoch's {n_batches} batches") from None
        yield (*last, 0.0 if error else 1.0, error)


def _event_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events*.jsonl"))


def _read_lines(path: Path) -> list[dict]:
    """A file's events; a line cut short by a process killed while appending it is skipped."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events


def read_events(run_dir: Path) -> list[dict]:
    """The run's event log: every rank's file, merged in time order."""
    events = [e for path in _event_files(run_dir) for e in _read_lines(path)]
    return sorted(events, key=lambda e: e.get("time", 0.0))


def rollback_events(run_dir: Path, last_epoch: int) -> list[int]:
    """Drop ``epoch_end`` events of epochs after ``last_epoch`` (the checkpoint a run resumes from): those
    epochs run again. Returns the epochs dropped."""
    dropped = set()
    for path in _event_files(run_dir):
        events = _read_lines(path)
        keep = [e for e in events if not (e["event"] == "epoch_end" and e["epoch"] > last_epoch)]
        if len(keep) < len(events):
            dropped |= {e["epoch"] for e in events if e["event"] == "epoch_end" and e["epoch"] > last_epoch}
            atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in keep))
    return sorted(dropped)


@torch.no_grad()
def validation_metrics(
    model,
    ds: ShardedDataset,
    positions: np.ndarray,
    cfg: TrainConfig,
    norm: Normaliser,
    v_range: tuple[float, float],
    device: torch.device,
) -> tuple[dict, str | None, bool]:
    """Metrics in m/s over this rank's share of the validation set, summed over all ranks; then this
    rank's data error (or None) and whether any rank met one.

    Ranks may hold different numbers of validation batches, so the forward pass uses the unwrapped
    module: DDP's forward is a collective (buffer broadcast) and would wait for the other ranks.
    """
    model = unwrap(model)
    model.eval()
    sums = {k: 0.0 for k in ("mse", "rmse", "mae", "mae_pm1", "rmse_pm1", "ssim", "psnr", "psnr_signal", "loss")}
    count, error = 0, None
    loss_fn = loss_function(cfg.train.loss)
    reader = RawBatches(ds)
    for batch in batches_of(positions, cfg.train.batch_size):
        try:
            gathers, target = normalised(*reader[batch], norm, device)
        except DataError as exc:
            error = DataError.message_of(exc)
            break
        with autocast(cfg.train.precision, device):
            pred = model(gathers)
        pred = pred.float()
        sums["loss"] += float(loss_fn(pred, target, reduction="sum")) / target[0].numel()
        m = velocity_metrics(norm.velocity_inv(pred), norm.velocity_inv(target), *v_range)
        for key, value in m.items():
            sums[key] += float(value.sum())
        count += len(batch)
    keys = sorted(sums)
    totals = all_reduce_sum([sums[k] for k in keys] + [count, error is not None], device)
    n = max(totals[-2], 1)
    model.train()
    metrics = {f"val/{k}": v / n for k, v in zip(keys, totals[:-2], strict=True)} | {"val/samples": int(totals[-2])}
    return metrics, error, totals[-1] > 0


# ------------------------------------------------------------------------------------ the loop


class Stop(Exception):
    """Every rank ends the run cleanly; the driver reports ``event`` (already in the event log)."""


def _restore(cfg: TrainConfig, run_dir: Path, rank: int, device: torch.device) -> tuple[dict | None, list[int]]:
    """The newest complete checkpoint on disk (chosen by rank 0, so all ranks agree), after rank 0 has
    removed half-written ones and rolled the event log back to it."""
    chosen, dropped, problem = -1, [], None
    if rank == 0:
        try:
            remove_partial_checkpoints(run_dir)
            found = list_checkpoints(run_dir)
            if found:
                chosen = int(found[-1].name.removeprefix(CHECKPOINT_PREFIX))
            dropped = rollback_events(run_dir, chosen)
        except HpcinvError as exc:
            chosen, problem = -2, str(exc)
    # every rank takes part in this all-reduce, whatever happened above (it is also a barrier)
    chosen = int(all_reduce_sum([chosen + 2 if rank == 0 else 0], device)[0]) - 2
    if chosen == -2:
        raise HpcinvError(problem or "rank 0 could not prepare the run folder to resume (see its error)")
    return (load_state(checkpoint_dir(run_dir, chosen)) if chosen >= 0 else None), dropped


@dataclass
class Rank:
    """This rank's place among the ranks, and what the runner around the loop provides: Ray Train
    (:mod:`hpcinv.distributed.train`) or this process (:func:`run_in_process`)."""

    index: int
    world: int
    local_world: int  # ranks on this node (they share its host memory)
    device: torch.device
    node: str | None
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module]  # wrap for data parallelism (a collective)
    report: Callable[[dict], None]  # an epoch's metrics, to the runner
    bar: Callable[..., Any]  # a progress bar (tqdm's arguments)


def run_in_process(cfg: TrainConfig, run_dir: Path, progress_bars: bool = True) -> None:
    """The loop as one rank in this process, without Ray (``hpcinv train --in-process``): on the first
    GPU with ``scaling.use_gpu``, else on the CPU with ``scaling.cpus_per_worker`` threads. (The Ray
    Train runner is :mod:`hpcinv.distributed.train`.)"""
    device = torch.device("cuda", 0) if cfg.scaling.use_gpu else torch.device("cpu")
    rank = Rank(0, 1, 1, device, socket.gethostname(), local_prepare, lambda metrics: None, tqdm)
    with torch_threads(cfg.scaling.cpus_per_worker):
        run_rank(cfg, run_dir, rank, progress_bars)


def run_rank(cfg: TrainConfig, run_dir: Path, me: Rank, progress_bars: bool = True) -> None:
    """The loop as rank ``me`` (the runner, Ray Train or this process, made ``me``): restore, train,
    validate, checkpoint. A deterministic stop is already in the event log when this returns."""
    with contextlib.suppress(Stop):
        _train(cfg, run_dir, me, progress_bars)


def _stop_if(flag: float, rank: int, run_dir: Path, event: dict, mine: bool = True) -> None:
    """All ranks call this with the same reduced ``flag``; the ranks concerned log ``event``, all stop."""
    if flag:
        if mine:
            append_event(run_dir, {"rank": rank, **event})
        raise Stop


def epoch_line(metrics: dict, epochs: int, elapsed_s: float, epochs_run: int) -> str:
    """One line per epoch, kept on the console after the epoch's bar is gone and in logs that are not a
    terminal: samples/s, losses, validation and an ETA."""
    epoch, seconds = metrics["epoch"], metrics["train/epoch_time_s"]
    left = (epochs - epoch - 1) * elapsed_s / max(epochs_run, 1)
    text = (
        f"epoch {epoch + 1}/{epochs}: {metrics['train/epoch_samples']} samples in {seconds:.1f} s "
        f"({metrics['train/epoch_samples'] / max(seconds, 1e-9):.1f} samples/s), "
        f"loss {metrics['train/epoch_loss']:.4g}"
    )
    if "val/mae" in metrics:
        text += f", val MAE {metrics['val/mae']:.1f} m/s, SSIM {metrics['val/ssim']:.3f}"
    return text + f"; ETA {int(left // 60)} min {int(left % 60):02d} s"


def _train(cfg: TrainConfig, run_dir: Path, me: Rank, progress_bars: bool = True) -> None:
    from hpcinv.train.tracking import Tracker

    rank, world, device = me.index, me.world, me.device

    # ---- setup: any error here is deterministic; every rank learns of it through one all-reduce
    error = None
    host_available = available_host_bytes()  # before the collective below: before any rank of the node allocates
    try:
        state, rolled_back = _restore(cfg, run_dir, rank, device)  # a collective: every rank comes here first
        if device.type == "cuda":
            from hpcinv.doctor import require_gpu_ready

            require_gpu_ready("training with scaling.use_gpu=true", device, deepwave=False)  # its own GPU only
        sets = cfg.training_sets()
        manifests = [read_manifest(folder) for folder, _ in sets]
        manifest = manifests[0]
        # a mixture is normalised as one dataset, by the statistics of all its samples
        pooled = manifest if len(manifests) == 1 else {**manifest, "stats": pooled_stats(manifests)}
        norm = normaliser_for(cfg, pooled)
        v_range = velocity_range(norm, pooled)
        parts = [ShardedDataset(folder, split=split) for folder, split in sets]
        train_ds = parts[0] if len(parts) == 1 else Concatenated(parts)
        sampler = ShardAwareSampler(
            train_ds.positions_by_shard(), rank, world, seed=cfg.train.seed, window=cfg.data.shuffle_window_shards
        )
        source, close_source = batch_source(train_ds, sampler, cfg, device, me.local_world, host_available)
        val_ds = ShardedDataset(cfg.data.val, split=cfg.data.val_split) if cfg.data.val else None
        val_positions = np.arange(len(val_ds))[rank::world] if val_ds is not None else None
        spec = model_spec(cfg.model, manifest["gathers_shape"], manifest["velocity_shape"])
        n_batches = -(-len(sampler) // cfg.train.batch_size)  # per rank and epoch, the same on every rank
        trainer = Trainer(cfg, spec, device, world, n_batches)
        init_state = None
        if state is not None:
            trainer.load_state_dict(state)
        elif cfg.train.init_from:
            init_state = load_state(cfg.train.init_from)
            trainer.load_weights(init_state, repr(cfg.train.init_from))
    except HpcinvError as exc:
        error = DataError.message_of(exc) if isinstance(exc, DataError) else str(exc)
    (flag,) = all_reduce_sum([error is not None], device)
    _stop_if(flag, rank, run_dir, {"event": "error", "message": error}, mine=error is not None)
    trainer.distribute(me.prepare_model)

    if init_state is not None and rank == 0:
        append_event(
            run_dir,
            {
                "event": "init_from",
                "path": cfg.train.init_from,
                "weights": weights_digest(trainer.net),
                "source_weights": weights_digest(init_state["model"]),
            },
        )
    start_epoch = trainer.epoch
    append_event(
        run_dir,
        {
            "event": "resume" if state else "start",
            "rank": rank,
            "world": world,
            "epoch": start_epoch,
            "step": trainer.step,
            "node": me.node,
            "slurm_node": os.environ.get("SLURMD_NODENAME"),
        }
        | ({"rolled_back_epochs": rolled_back} if rolled_back else {}),
    )

    tracker = Tracker(
        cfg.tracking, run_dir, cfg.model_dump(mode="json") | {"parameters": count_parameters(trainer.net)}, rank == 0
    )
    run = _Run(cfg, run_dir, rank, world, device, trainer, tracker)
    feed = DeviceFeed(norm, device, cfg.data.prefetch_batches)
    t_run = time.perf_counter()
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            sampler.set_epoch(epoch)
            bar = (
                me.bar(total=len(sampler) * world, desc=f"epoch {epoch + 1}/{cfg.train.epochs}")
                if rank == 0 and progress_bars
                else None
            )
            t_epoch = time.perf_counter()
            batches = feed(source())
            try:
                total_loss, total_seen = run.epoch(epoch, epoch_batches(batches, n_batches, run.blank(manifest)), bar)
            finally:
                batches.close()
                if bar is not None:
                    bar.close()
            metrics = {
                "epoch": epoch,
                "step": trainer.step,
                "train/epoch_loss": total_loss / max(total_seen, 1),
                "train/epoch_samples": int(total_seen),
                "train/epoch_time_s": time.perf_counter() - t_epoch,
                "lr": trainer.optimizer.param_groups[0]["lr"],
            }
            if val_ds is not None:
                metrics |= run.validate(epoch, val_ds, val_positions, norm, v_range)
            trainer.epoch = epoch + 1
            append_event(
                run_dir,
                {"event": "epoch_end", "rank": rank, "epoch": epoch, "step": trainer.step}
                | ({"weights": weights_digest(trainer.net)} if cfg.train.record_weights_digest else {})
                | ({"metrics": metrics} if rank == 0 else {}),
            )
            if rank == 0:  # written, not print()ed: Ray Train's patched print logs it twice
                sys.stderr.write(
                    epoch_line(metrics, cfg.train.epochs, time.perf_counter() - t_run, epoch + 1 - start_epoch) + "\n"
                )
                sys.stderr.flush()
            stopping = (
                cfg.train.stop_after_epochs is not None and epoch + 1 - start_epoch >= cfg.train.stop_after_epochs
            )
            score = metrics.get("val/mse", metrics["train/epoch_loss"])
            improved = score < trainer.best
            trainer.best = min(trainer.best, score)
            if rank == 0 and (
                (epoch + 1) % cfg.train.checkpoint_every_epochs == 0 or trainer.epoch == cfg.train.epochs or stopping
            ):
                saved = save_checkpoint(
                    run_dir,
                    epoch,
                    payload(trainer.state_dict(), cfg, spec, norm, metrics, v_range, manifest),
                    cfg.train.keep_checkpoints,
                )
                if improved:
                    tracker.artifact(
                        f"model-{run_dir.name}",
                        saved / "state.pt",
                        {"epoch": epoch, **{k: v for k, v in metrics.items() if isinstance(v, int | float)}},
                    )
            me.report(metrics)
            if rank == 0:
                tracker.log({k: v for k, v in metrics.items() if isinstance(v, int | float)}, step=trainer.step)
                if cfg.tracking.figures and tracker.active:
                    _log_figure(
                        tracker, trainer.model, val_ds or parts[0], norm, manifest, device, cfg, epoch, trainer.step
                    )
            if stopping:
                break
    finally:
        close_source()
        tracker.finish()


class _Run:
    """What the Ray loop adds around a :class:`Trainer` for one epoch: mirroring, the periodic and
    end-of-epoch checks (one all-reduce each; every rank stops together), progress and W&B step logs."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, rank: int, world: int, device, trainer: Trainer, tracker):
        self.cfg, self.run_dir, self.rank, self.world, self.device = cfg, run_dir, rank, world, device
        self.trainer, self.tracker = trainer, tracker

    def blank(self, manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch a rank repeats with weight 0 when its first read of an epoch fails."""
        return (
            torch.zeros((1, *manifest["gathers_shape"]), device=self.device),
            torch.zeros((1, 1, *manifest["velocity_shape"]), device=self.device),
        )

    def check(self, epoch: int, read_error: str | None, extra_bad=0, more: tuple = ()) -> list[float]:
        """One collective: a damaged read on any rank or NaN/Inf anywhere (the steps since the last check,
        and ``extra_bad``) stops every rank, logged once. Returns ``more`` summed over the ranks."""
        t = self.trainer
        bad_values, bad_data, *rest = all_reduce_sum(
            [t.nonfinite + extra_bad, read_error is not None, *more], self.device
        )
        event = {"event": "error", "epoch": epoch, "step": t.step, "message": read_error}
        _stop_if(bad_data, self.rank, self.run_dir, event, mine=read_error is not None)
        event = {"event": "nonfinite", "epoch": epoch, "step": t.step}
        _stop_if(bad_values, self.rank, self.run_dir, event, self.rank == 0)
        return rest

    def epoch(self, epoch: int, batches, bar) -> tuple[float, float]:
        """Train one epoch; returns the loss summed over every rank's samples, and their number."""
        cfg, t = self.cfg, self.trainer
        t.model.train()
        t.nonfinite.zero_()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        seen, read_error = 0, None
        # which samples are mirrored: a function of (seed, epoch, rank), so a resumed epoch repeats it
        mirror_rng = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch * 1_009 + self.rank)
        for b, (gathers, target, weight, read_error) in enumerate(batches):
            t0 = time.perf_counter()
            if cfg.data.mirror_probability > 0:
                gathers, target = mirror_some(gathers, target, cfg.data.mirror_probability, mirror_rng)
            loss = t.train_batch(gathers, target, weight, b)
            if weight:
                loss_sum += loss.double() * len(gathers)
                seen += len(gathers)
            if bar is not None:
                bar.update(len(gathers) * self.world)
            if self.rank == 0 and t.step % cfg.tracking.log_every_steps == 0:
                dt = time.perf_counter() - t0
                self.tracker.log(
                    {
                        "train/loss": float(loss),
                        "train/lr": t.optimizer.param_groups[0]["lr"],
                        "train/samples_per_s": len(gathers) * self.world / dt,
                        "train/step_time_s": dt,
                        "train/peak_memory_mb": peak_memory_mb(self.device),
                        "epoch": epoch,
                    },
                    step=t.step,
                )
            if (b + 1) % cfg.train.check_every_steps == 0 and b + 1 < t.batches_per_epoch:
                self.check(epoch, read_error)
        # never skipped before a checkpoint: every step since the last check, the optimizer state a
        # checkpoint will hold (identical on every rank), and damaged reads
        total_loss, total_seen = self.check(
            epoch, read_error, optimizer_nonfinite_count(t.optimizer, self.device), (loss_sum, seen)
        )
        return total_loss, total_seen

    def validate(self, epoch: int, val_ds, positions, norm: Normaliser, v_range) -> dict:
        metrics, val_error, any_error = validation_metrics(
            self.trainer.model, val_ds, positions, self.cfg, norm, v_range, self.device
        )
        event = {"event": "error", "epoch": epoch, "step": self.trainer.step, "message": val_error}
        _stop_if(any_error, self.rank, self.run_dir, event, mine=val_error is not None)
        return metrics


def _log_figure(tracker, model, ds: ShardedDataset, norm: Normaliser, manifest: dict, device, cfg, epoch, step):
    from hpcinv.metrics.figures import close, velocity_figure

    try:
        gathers, vel = Normalised(ds, norm)[0]
        raw_gathers = ds.read(int(ds.indices[0]))[0]
    except DataError as exc:  # the rank that trains on this sample stops the run; a figure is not worth it
        tracker.warn(f"no figure for epoch {epoch + 1}: {exc}")
        return
    model.eval()
    with torch.no_grad(), autocast(cfg.train.precision, device):
        pred = unwrap(model)(gathers[None].to(device)).float()
    model.train()
    survey = manifest["survey"]
    fig = velocity_figure(
        norm.velocity_inv(vel).numpy(),
        norm.velocity_inv(pred[0, 0]).cpu().numpy(),
        raw_gathers[len(gathers) // 2],
        survey["dx_m"],
        survey["dt_s"],
        title=f"epoch {epoch + 1}",
    )
    tracker.image("val/figure", fig, step=step)
    close(fig)
