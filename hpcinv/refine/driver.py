"""Refine driver: check every input, resolve the start, plan and resume shards, run them, report.

Everything that can be refused is refused before anything is written: the dataset (complete, its
shards readable), the start (a checkpoint trained on this survey and grid, a velocity store of this
dataset and range, or ``smooth``), the bounds (``v_max`` may not exceed the dataset's pinned
``modelling.max_vel_mps``, which fixes deepwave's stable time step; ``v_min`` may not go below the
slowest velocity the grid resolves for the wavelet; the bounds may not exclude the start). Then the
output folder is locked and filled like a generated dataset: shards written atomically by workers,
the manifest by this driver, a re-run recomputes only missing shards. At the end ``summary.json``
and figures are written.

Output folder: ``manifest.json`` + ``shards/`` (a velocity store of kind ``refined``), ``start/``
(the network's predictions, when the start is a checkpoint), ``refine.yaml`` (the config),
``summary.json``, ``figures/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcinv.checkpoint import STATE
from hpcinv.config import PredictConfig, RefineConfig, folder_and_split, save_config, without_role
from hpcinv.errors import HpcinvError
from hpcinv.fileio import atomic_write_text
from hpcinv.folders import (
    ABSENT,
    DATASETS,
    FILE,
    FOREIGN,
    REFINE_CONFIG,
    REFINE_SUMMARY,
    START,
    STORES,
    distinct,
    inspect,
    require,
)
from hpcinv.physics.forward import resolve_device, torch_threads
from hpcinv.physics.validate import MAX_FREQ_FACTOR, PLAUSIBLE_MPS
from hpcinv.predict import PredictPlan, load_network, plan_predict, predict_gathers, run_predict, store_writer
from hpcinv.refine.fwi import gaussian_smooth
from hpcinv.refine.worker import SCORES, RefineWorker
from hpcinv.store import ShardedDataset, load_dataset_config, require_readable
from hpcinv.store.dataset import mean_velocity
from hpcinv.store.folder import check_store_folder, open_store_folder
from hpcinv.store.manifest import dataset_identity, has_velocity, select_range
from hpcinv.store.velocities import VelocityStore, store_manifest
from hpcinv.store.writer import Executor, StoreWriter

log = logging.getLogger(__name__)


def slowest_resolved(data_cfg) -> float:
    """The slowest velocity (m/s) the dataset's grid resolves for its wavelet: the lowest bound allowed."""
    modelling, survey, grid = data_cfg.modelling, data_cfg.survey, data_cfg.grid
    return modelling.min_points_per_wavelength * MAX_FREQ_FACTOR * survey.f0_hz * grid.dx_m


def resolve_bounds(rc, data_cfg) -> tuple[float, float]:
    """[v_min, v_max] of the inversion, checked against the dataset's modelling settings."""
    modelling, survey, grid = data_cfg.modelling, data_cfg.survey, data_cfg.grid
    resolved_min = slowest_resolved(data_cfg)
    v_min = rc.v_min_mps if rc.v_min_mps is not None else max(resolved_min, PLAUSIBLE_MPS[0])
    v_max = rc.v_max_mps if rc.v_max_mps is not None else modelling.max_vel_mps
    if v_max > modelling.max_vel_mps * (1 + 1e-6):
        raise HpcinvError(
            f"refine.v_max_mps={v_max:g} exceeds the dataset's pinned modelling.max_vel_mps={modelling.max_vel_mps:g}: "
            "deepwave's time step is stable only up to that velocity (CFL), and the recorded data were modelled with "
            f"it; use refine.v_max_mps <= {modelling.max_vel_mps:g}"
        )
    if v_min < resolved_min * (1 - 1e-6):
        raise HpcinvError(
            f"refine.v_min_mps={v_min:g} is below {resolved_min:g} m/s, the slowest velocity the dataset's grid "
            f"(dx {grid.dx_m:g} m) resolves for its wavelet ({survey.f0_hz:g} Hz at "
            f"{modelling.min_points_per_wavelength:g} points per wavelength): modelling would be dispersive; use "
            f"refine.v_min_mps >= {resolved_min:g}"
        )
    if v_min >= v_max:
        raise HpcinvError(f"refine bounds [{v_min:g}, {v_max:g}] m/s are empty; give v_min_mps < v_max_mps")
    return v_min, v_max


def smooth_start(rc, data_cfg) -> tuple[np.ndarray, dict]:
    """The classical start: a linear v(z), or (``smooth_reference``) a dataset's mean model averaged
    laterally and smoothed in depth. Returns the model and its description."""
    nz, nx = data_cfg.grid.nz, data_cfg.grid.nx
    if rc.smooth_reference:
        root, split = folder_and_split(rc.smooth_reference)
        require(root, ("dataset",), what="refine.smooth_reference")
        require_readable(root, split, what="refine.smooth_reference dataset")
        mean = mean_velocity(root, split)
        if mean.shape != (nz, nx):
            raise HpcinvError(
                f"refine.smooth_reference {root!r} has models of {list(mean.shape)} cells, the data "
                f"{[nz, nx]}; give a dataset of the same grid"
            )
        profile = mean.mean(axis=1)
        if rc.smooth_sigma_cells:  # a laterally constant model: smoothing it in 2-D smooths the profile in depth
            wide = np.repeat(profile[:, None], 2 * int(np.ceil(3 * rc.smooth_sigma_cells)) + 2, axis=1)
            profile = gaussian_smooth(_torch(wide), rc.smooth_sigma_cells)[:, 0].numpy()
        how = {"kind": "reference_1d", "reference": rc.smooth_reference, "sigma_cells": rc.smooth_sigma_cells}
    else:
        profile = np.linspace(rc.smooth_v_top_mps, rc.smooth_v_bottom_mps, nz)
        how = {"kind": "linear_vz", "top_mps": rc.smooth_v_top_mps, "bottom_mps": rc.smooth_v_bottom_mps}
    return np.repeat(np.asarray(profile, np.float32)[:, None], nx, axis=1), how


def _torch(array):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def check_start(
    starts: np.ndarray, indices, bounds: tuple[float, float], max_fraction: float, what: str, remedy: str
) -> None:
    """Refuse a start whose models lie outside the bounds in more than ``max_fraction`` of their cells,
    saying how to fix it (``remedy``)."""
    v_min, v_max = bounds
    outside = ((starts < v_min - 1e-3) | (starts > v_max + 1e-3)).reshape(len(starts), -1).mean(axis=1)
    worst = int(np.argmax(outside))
    if outside[worst] > max_fraction:
        model = starts[worst]
        raise HpcinvError(
            f"the bounds [{v_min:g}, {v_max:g}] m/s exclude the start ({what}): {100 * outside[worst]:.3g} % of the "
            f"cells of sample {int(indices[worst])} lie outside (it spans {model.min():.0f}..{model.max():.0f} m/s, "
            f"refine.start_outside_max_fraction={max_fraction:g}); {remedy}; or clip the start into the bounds with "
            f"refine.start_outside_max_fraction={float(np.ceil(outside[worst] * 1000) / 1000):g}"
        )


def bound_limits(data_cfg) -> str:
    """What the bounds may be widened to, for the messages that advise it."""
    return (
        f"refine.v_min_mps no lower than {slowest_resolved(data_cfg):g}, refine.v_max_mps no higher than "
        f"{data_cfg.modelling.max_vel_mps:g}"
    )


def check_settings(rc, data_cfg, manifest: dict) -> None:
    """Settings that must fit the dataset's grid and survey."""
    nz, n_shots = data_cfg.grid.nz, manifest["gathers_shape"][0]
    if rc.freeze_top_cells >= nz:
        raise HpcinvError(
            f"refine.freeze_top_cells={rc.freeze_top_cells} freezes the whole model ({nz} cells deep); "
            f"give fewer than {nz}"
        )
    fitted = n_shots - len(rc.holdout_shots)
    if rc.holdout_shots and (max(rc.holdout_shots) >= n_shots or fitted < 1):
        raise HpcinvError(
            f"refine.holdout_shots={rc.holdout_shots} must name some, not all, of the data's {n_shots} shots "
            f"(indices 0 .. {n_shots - 1})"
        )
    if rc.shots_per_iteration is not None and rc.shots_per_iteration > fitted:
        raise HpcinvError(
            f"refine.shots_per_iteration={rc.shots_per_iteration} exceeds the {fitted} shots fitted; give at "
            f"most {fitted}, or null for all"
        )


def _hash(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def network_predictions(network, data: str | Path, lo: int, hi: int, batch: int = 16) -> np.ndarray:
    """The network's velocities (n, nz, nx) m/s for dataset samples [lo, hi)."""
    ds = ShardedDataset(data)
    try:
        return np.concatenate(
            [
                predict_gathers(
                    network.model, network.norm, np.stack([ds.read(i)[0] for i in range(a, min(a + batch, hi))])
                )
                for a in range(lo, hi, batch)
            ]
        )
    finally:
        ds.close()


INIT_KINDS = "a run or checkpoint (`hpcinv train`), a velocity store (`hpcinv predict` / `hpcinv refine`) or 'smooth'"


@dataclass
class RefinePlan:
    """Everything ``refine`` will do, checked; nothing written yet."""

    cfg: RefineConfig
    data: Path
    out: Path
    lo: int
    hi: int
    bounds: tuple[float, float]
    manifest: dict  # of the store to make or continue
    dataset_manifest: dict
    restart: bool
    start_store: str | None = None  # the velocity store the models start from
    start_model: np.ndarray | None = None  # or one model for every sample
    predicted: np.ndarray | None = None  # the network's predictions, written to out/start
    start_plan: PredictPlan | None = None
    inputs: dict = field(default_factory=dict)  # folders read, held shared while refine runs


def plan_refine(
    data: str | Path,
    init: str,
    out: str | Path,
    cfg: RefineConfig,
    *,
    split: str | None = None,
    restart: bool = False,
    allow_survey_mismatch: bool = False,
    samples: int | None = None,
    workers: int | None = None,
    predict_start: bool = True,
) -> RefinePlan:
    """Check every input of a refine (the dataset, the start, the bounds and settings, the output
    folder) before anything is written: the same checks for ``hpcinv refine`` and its SLURM launcher
    (which leaves the network's predictions, and their check against the bounds, to the job:
    ``predict_start=False``)."""
    rc, out = cfg.refine, Path(out)
    if workers is not None and workers < 1:
        raise HpcinvError(f"--workers must be a whole number >= 1, got {workers}")
    require(data, DATASETS, what="--data")
    manifest = require_readable(data, split)
    lo, hi = select_range(manifest, split, samples, f"dataset {str(data)!r}")
    data_cfg = load_dataset_config(data)
    bounds = resolve_bounds(rc, data_cfg)
    check_settings(rc, data_cfg, manifest)
    inputs: dict[str, str | Path | None] = {"--data": data}
    plan_args: dict[str, Any] = {}
    source: dict[str, Any]  # where the start came from, recorded in the manifest
    fingerprint: dict[str, Any]  # what decides the refined models, hashed into the store's config_hash
    if init == "smooth":
        start_model, how = smooth_start(rc, data_cfg)
        remedy = (
            "give refine.smooth_v_top_mps / smooth_v_bottom_mps within the bounds"
            if not rc.smooth_reference
            else "give a refine.smooth_reference whose models lie within the bounds"
        ) + f" ({bound_limits(data_cfg)})"
        check_start(start_model[None], [lo], bounds, rc.start_outside_max_fraction, "the smooth start", remedy)
        inputs["refine.smooth_reference"] = folder_and_split(rc.smooth_reference)[0] if rc.smooth_reference else None
        source = {"init": "smooth", "smooth": how}
        fingerprint = {"smooth": how}
        plan_args["start_model"] = start_model
    else:
        found = inspect(init)
        remedy = f"widen refine.v_min_mps / refine.v_max_mps ({bound_limits(data_cfg)})"
        if found.kind in STORES:
            given = VelocityStore(init)
            given.check_dataset(data, manifest, lo, hi)
            check_start(
                given.read_range(lo, hi)[1],
                range(lo, hi),
                bounds,
                rc.start_outside_max_fraction,
                f"velocity store {init!r}",
                remedy,
            )
            inputs["--init"] = init
            plan_args["start_store"] = str(Path(init).resolve())
            source = {
                "init": "store",
                "start": plan_args["start_store"],
                "start_kind": given.kind,
                "network_checkpoint": given.manifest["source"].get("checkpoint")
                or given.manifest["source"].get("network_checkpoint"),
            }
            fingerprint = {"store": given.manifest["config_hash"]}
        elif found.kind in ("run", FILE) or (found.kind == FOREIGN and (Path(init) / STATE).is_file()):
            network = load_network(init, manifest, str(data), allow_survey_mismatch)
            predicted = network_predictions(network, data, lo, hi) if predict_start else None
            if predicted is not None:
                check_start(
                    predicted,
                    np.arange(lo, hi),
                    bounds,
                    rc.start_outside_max_fraction,
                    f"the predictions of {init!r}",
                    remedy,
                )
            inputs["the checkpoint's run"] = network.checkpoint.run
            plan_args["start_store"] = str((out / START).resolve())
            plan_args["predicted"] = predicted
            start = PredictConfig(split=split, samples=samples, allow_survey_mismatch=allow_survey_mismatch)
            plan_args["start_plan"] = plan_predict(
                init, data, out / START, start, restart=restart, network=network, owner=out
            )
            source = {
                "init": "checkpoint",
                "start": plan_args["start_store"],
                "network_checkpoint": str(network.checkpoint.file.resolve()),
            }
            fingerprint = {"checkpoint_sha256": network.checkpoint.sha256}
        elif found.kind == ABSENT:
            raise HpcinvError(f"--init {init!r} does not exist; give {INIT_KINDS}")
        else:
            raise HpcinvError(f"--init {found.describe()}, not {INIT_KINDS}")
    distinct(out, inputs)
    settings = without_role(rc, "execution")  # how fast, not what: left out of the store's hash
    if not settings["holdout_shots"]:
        del settings["holdout_shots"]  # (added later: stores made before it keep their hash)
    source |= {"bounds_mps": list(bounds), "refine": settings}
    fingerprint |= {
        "dataset": dataset_identity(manifest),
        "range": [lo, hi],
        "bounds": list(bounds),
        "refine": settings,
    }
    new = store_manifest(
        "refined", _hash(fingerprint), data, manifest, split, (lo, hi), rc.shard_size, source, request=fingerprint
    )
    check_store_folder(out, new, restart=restart, command="refine")
    return RefinePlan(
        cfg,
        Path(data),
        out,
        lo,
        hi,
        bounds,
        new,
        manifest,
        restart,
        inputs={k: v for k, v in inputs.items() if v is not None},
        **plan_args,
    )


def inputs_held(data: str | Path, init: str, cfg: RefineConfig) -> list[tuple[str | Path, str]]:
    """(folder, what) of everything a refine reads and holds with a shared lock from its first check to its
    last shard: the dataset, ``--init`` when it is a velocity store (a checkpoint is read once, not held),
    ``refine.smooth_reference``."""
    held: list[tuple[str | Path, str]] = [(data, "dataset")]
    try:
        if init != "smooth" and inspect(init).kind in STORES:
            held.append((init, "velocity store"))
    except HpcinvError:
        pass  # plan_refine says what is wrong with it
    if cfg.refine.smooth_reference:
        held.append((folder_and_split(cfg.refine.smooth_reference)[0], "dataset"))
    return held


def worker_args(plan: RefinePlan, device: str) -> dict:
    """What a :class:`~hpcinv.refine.worker.RefineWorker` of ``plan`` takes (on ``device``, decided by the
    driver: never "auto" in a worker)."""
    manifest = plan.dataset_manifest
    v_stats = manifest["stats"].get("velocity")
    return dict(
        dataset=str(plan.data.resolve()),
        out=str(plan.out.resolve()),
        rc=plan.cfg.refine.model_copy(update={"device": device}),
        bounds=plan.bounds,
        lo=plan.lo,
        store_hash=plan.manifest["config_hash"],
        start_store=plan.start_store,
        start_model=plan.start_model,
        score_range=(v_stats["min"], v_stats["max"]) if has_velocity(manifest) else None,
    )


def in_process_executor(plan: RefinePlan) -> Executor:
    """The shards refined in this process, on ``refine.device`` (checked here) with ``refine.threads``."""
    rc = plan.cfg.refine
    device = resolve_device(rc.device, "refine.device")
    if device.type == "cuda":
        from hpcinv.doctor import require_gpu_ready

        require_gpu_ready(f"refine.device={rc.device}", probe=True)

    def run(specs):
        if specs:
            with torch_threads(rc.threads):
                worker = RefineWorker(**worker_args(plan, device.type))
                for spec in specs:
                    yield worker.run(spec)

    return run


def run_refine(plan: RefinePlan, executor: Executor, *, progress: bool, figures: int) -> tuple[dict, StoreWriter]:
    """Open (or continue) the store of ``plan``, write its start (a checkpoint's predictions), refine its
    shards through ``executor``, then ``summary.json`` and figures; the caller holds every lock."""
    out = plan.out
    store = open_store_folder(out, plan.manifest, restart=plan.restart, command="refine")
    writer = store_writer(out, store, plan.lo)  # the manifest is written (the folder claimed) now
    save_config(plan.cfg, out / REFINE_CONFIG)
    if plan.start_plan is not None:
        run_predict(plan.start_plan, progress=progress, predicted=plan.predicted)
    writer.run(executor, desc="refine", progress=progress)
    writer.finish("refine", unit="models")
    ds = ShardedDataset(plan.data, indices=np.arange(plan.lo, plan.hi))
    return write_summary(out, ds, plan.start_store, plan.start_model, figures), writer


def write_summary(
    out: Path, ds: ShardedDataset, start_store: str | None, start_model: np.ndarray | None, figures: int
) -> dict:
    """``summary.json`` (per sample and in mean: misfit before/after, and MAE/RMSE/SSIM before/after
    where true models exist) and the first ``figures`` samples' figures."""
    store = VelocityStore(out)
    samples: list[dict] = []
    histories: dict[int, np.ndarray] = {}
    for index, extra in store.details():
        samples += extra["samples"]
        histories |= {int(i): h for i, h in zip(index, extra["misfit_history"], strict=True)}
    mean = {f"misfit_{k}": float(np.mean([s[f"misfit_{k}"] for s in samples])) for k in ("before", "after")}
    if samples and "holdout_shots" in samples[0]:  # shots left out of the fit
        mean |= {
            f"holdout_misfit_{k}": float(np.mean([s[f"holdout_misfit_{k}"] for s in samples]))
            for k in ("before", "after")
        }
    if samples and "before" in samples[0]:
        for when in ("before", "after"):
            mean |= {f"{key}_{when}": float(np.mean([s[when][key] for s in samples])) for key in SCORES}
    mean |= {
        "iterations": float(np.mean([s["iterations"] for s in samples])),
        "wall_s_per_model": float(np.mean([s["wall_s"] for s in samples])),
    }
    summary = {
        "out": str(out),
        "samples": len(samples),
        "mean": mean,
        "kept_start": sum(s["kept_start"] for s in samples),
        "bounds_mps": store.manifest["source"]["bounds_mps"],
        "init": store.manifest["source"]["init"],
        "per_sample": samples,
    }
    if "before" in (samples[0] if samples else {}):
        v = ds.manifest["stats"]["velocity"]  # the range SSIM is scored on (evaluate uses the network's)
        summary["ssim_range_mps"] = [v["min"], v["max"]]
    if figures:
        summary["figures"] = _figures(out, ds, store, samples[:figures], histories, start_store, start_model)
    atomic_write_text(out / REFINE_SUMMARY, json.dumps(summary, indent=1))
    return {k: v for k, v in summary.items() if k != "per_sample"}


def _figures(
    out: Path,
    ds: ShardedDataset,
    store: VelocityStore,
    samples: list[dict],
    histories: dict,
    start_store: str | None,
    start_model: np.ndarray | None,
) -> list[str]:
    from hpcinv.metrics.figures import refine_figure, save

    folder = out / "figures"
    folder.mkdir(exist_ok=True)
    start = VelocityStore(start_store) if start_store else None
    paths = []
    for s in samples:
        index = s["index"]
        _, truth = ds.read(index)
        begin = start.read_range(index, index + 1)[1][0] if start else start_model
        assert begin is not None  # the start is a store or one model
        refined = store.read_range(index, index + 1)[1][0]
        history = histories[index][np.isfinite(histories[index])]
        fig = refine_figure(
            truth,
            begin,
            refined,
            history,
            s["band_ends"],
            ds.manifest["survey"]["dx_m"],
            title=f"sample {index}: misfit {s['misfit_before']:.3g} -> {s['misfit_after']:.3g}",
        )
        paths.append(save(fig, folder / f"sample_{index:06d}.png", dpi=100))
    return paths
