"""``hpcinv evaluate``: metrics per sample and averaged, figures, data misfit, side by side.

Each input is a run, a checkpoint, or a velocity store (the output of ``hpcinv predict`` or
``hpcinv refine``). A network is rebuilt from its checkpoint and applied to every sample of the
dataset (or split); a store's velocities are read (it must have been made from this dataset). Every
report also has a **data-free baseline** row: the mean velocity model of the first network's
training data (``--baseline DATASET[:SPLIT]`` names another), predicted for every sample whatever the
gathers. All rows are scored the same way, on the same samples and velocity range.

Before anything is written, every input is checked: the shards to be read (as ``train`` does), the
checkpoints (finite tensors; shapes; the survey they were trained on, refused on a mismatch unless
``allow_survey_mismatch``), the stores (their dataset). True velocities outside the range a network
was trained on are reported. On a gathers-only dataset only the data misfit is scored.

Outputs in ``--out``: ``metrics.json`` (per row: per-sample and mean metrics, misfits),
``metrics.md`` (the side-by-side table) and ``figures/<row>/sample_NNNNNN.png``.
Metric definitions: :mod:`hpcinv.metrics.scores`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from hpcinv.checkpoint import STATE, read_checkpoint
from hpcinv.config import EvaluateConfig, folder_and_split
from hpcinv.errors import HpcinvError
from hpcinv.evaluate.misfit import data_misfit
from hpcinv.fileio import atomic_path, atomic_write_text, parents_made
from hpcinv.folders import (
    ABSENT,
    DATASETS,
    FILE,
    METRICS_JSON,
    METRICS_MD,
    STORES,
    claim,
    distinct,
    inspect,
    mark,
    require,
)
from hpcinv.metrics import METRICS, spread, velocity_metrics
from hpcinv.predict import load_network, predict_gathers
from hpcinv.store import ShardedDataset, folder_lock, load_dataset_config, require_readable
from hpcinv.store.dataset import mean_velocity
from hpcinv.store.manifest import has_velocity, select_range
from hpcinv.store.velocities import VelocityStore

log = logging.getLogger(__name__)

TABLE_METRICS = (
    "mae",
    "rmse",
    "mae_pm1",
    "rmse_pm1",
    "ssim",
    "psnr",
    "psnr_signal",
    "spread",
    "spread_ratio",
    "misfit",
)
BASELINE = "data-free baseline (mean training model)"


@dataclass
class Row:
    """One row of the comparison: a velocity model for every evaluated sample."""

    name: str
    velocity: np.ndarray  # (n, nz, nx) m/s, the samples [lo, hi) in order
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    trained_range: tuple[float, float] | None = None
    training_data: list[tuple[str, str | None]] | None = None  # (dataset, split) pairs the network learned from


def checkpoint_name(file: Path) -> str:
    """A row's name for a checkpoint: ``run/checkpoint_epochNNNNNN``, or the folder of a bare state.pt."""
    return (
        f"{file.parent.parent.name}/{file.parent.name}"
        if file.parent.name.startswith("checkpoint_")
        else file.parent.name
    )


def network_row(
    path: str, ds: ShardedDataset, manifest: dict, dataset: str, allow_survey_mismatch: bool, batch_size: int = 16
) -> Row:
    network = load_network(path, manifest, dataset, allow_survey_mismatch)
    model, norm, state = network.model, network.norm, network.state
    preds = []
    for start in range(0, len(ds), batch_size):
        stop = min(start + batch_size, len(ds))
        preds.append(
            predict_gathers(model, norm, np.stack([ds.read(int(ds.indices[i]))[0] for i in range(start, stop)]))
        )
    info = {
        "checkpoint": str(network.checkpoint.file),
        "epoch": state.get("epoch"),
        "normaliser_range_mps": [norm.v_min, norm.v_max] if norm.velocity == "minmax" else None,
    }
    return Row(
        checkpoint_name(network.checkpoint.file),
        np.concatenate(preds),
        info,
        list(network.warnings),
        network.checkpoint.velocity_range,
        network.checkpoint.training_data,
    )


def store_row(path: str, dataset: str, manifest: dict, lo: int, hi: int) -> Row:
    store = VelocityStore(path)
    store.check_dataset(dataset, manifest, lo, hi)
    _, velocity = store.read_range(lo, hi)
    source = store.manifest["source"]
    checkpoint = source.get("checkpoint") or source.get("network_checkpoint")
    training = None
    if checkpoint and Path(checkpoint).is_file():
        training = read_checkpoint(checkpoint).training_data
    return Row(
        f"{Path(path).resolve().name} ({store.kind})",
        velocity,
        {"store": str(path), "kind": store.kind, "source": source},
        training_data=training,
    )


def baseline_row(training: list[tuple[str, str | None]], manifest: dict, n: int, name: str = BASELINE) -> Row:
    (root, split), *more = training
    mean = mean_velocity(root, split, more)
    if list(mean.shape) != list(manifest["velocity_shape"]):
        raise HpcinvError(
            f"the baseline's dataset {root!r} has models of {list(mean.shape)} cells, the evaluated one "
            f"{manifest['velocity_shape']}; pass --baseline a dataset of the same grid"
        )
    return Row(
        name,
        np.broadcast_to(mean, (n, *mean.shape)),
        {
            "baseline_dataset": str(root),
            "baseline_split": split,
            **({"baseline_mix": [f"{f}:{s}" if s else str(f) for f, s in more]} if more else {}),
        },
    )


def score(
    row: Row, ds: ShardedDataset, truth: np.ndarray | None, v_range: tuple[float, float], misfit_n: int, data_cfg
) -> dict:
    n = len(ds)
    result = {
        **row.info,
        "dataset": str(ds.root),
        "samples": n,
        "velocity_range_mps": list(v_range),
        "mean": {},
        "per_sample": {},
    }
    warnings = list(row.warnings)
    if truth is not None:
        per_sample: dict[str, list[float]] = {k: [] for k in METRICS}
        for start in range(0, n, 64):
            pred = torch.from_numpy(np.ascontiguousarray(row.velocity[start : start + 64]))[:, None]
            true = torch.from_numpy(truth[start : start + 64])[:, None]
            for key, values in velocity_metrics(pred, true, *v_range).items():
                per_sample[key].extend(values.tolist())
        result["per_sample"] = per_sample
        result["mean"] = {k: float(np.mean(v)) for k, v in per_sample.items()}
        if row.trained_range is not None:
            lo, hi = row.trained_range
            outside = (truth < lo - 1e-3) | (truth > hi + 1e-3)
            result["outside_training_range"] = {
                "range_mps": [lo, hi],
                "samples": int(outside.any(axis=(1, 2)).sum()),
                "fraction_of_cells": float(outside.mean()),
            }
            if outside.any():
                warnings.append(
                    f"{result['outside_training_range']['samples']} of {n} samples have true velocities "
                    f"outside the {lo:g}-{hi:g} m/s the network was trained on ({100 * outside.mean():.2g} "
                    "% of cells): it cannot predict those values"
                )
    result["mean"]["spread"] = spread(row.velocity)
    if truth is not None and n > 1:
        result["mean"]["spread_ratio"] = result["mean"]["spread"] / max(spread(truth), 1e-9)
    if misfit_n:
        misfits = [data_misfit(row.velocity[i], ds.read(int(ds.indices[i]))[0], data_cfg) for i in range(misfit_n)]
        result["misfit_per_sample"] = misfits
        result["misfit_samples"] = misfit_n
        result["mean"]["misfit"] = float(np.mean(misfits))
    for text in warnings:
        log.warning("%s: %s", row.name, text)
    result["warnings"] = warnings
    return result


def write_figures(
    row: Row, ds: ShardedDataset, truth: np.ndarray | None, manifest: dict, count: int, out: Path
) -> list[str]:
    from hpcinv.metrics.figures import save, velocity_figure

    folder = out / "figures" / "".join(c if c.isalnum() or c in "-_." else "_" for c in row.name)
    folder.mkdir(parents=True, exist_ok=True)
    survey, paths = manifest["survey"], []
    for i in range(min(count, len(ds))):
        index = int(ds.indices[i])
        gathers, _ = ds.read(index)
        reference = truth[i] if truth is not None else None
        fig = velocity_figure(
            reference,
            row.velocity[i],
            gathers[len(gathers) // 2],
            survey["dx_m"],
            survey["dt_s"],
            title=f"{row.name} — sample {index}",
        )
        paths.append(save(fig, folder / f"sample_{index:06d}.png"))
    return paths


def markdown_table(results: dict[str, dict]) -> str:
    units = {"mae": "m/s", "rmse": "m/s", "psnr": "dB", "psnr_signal": "dB", "spread": "m/s"}
    keys = [k for k in TABLE_METRICS if any(k in r["mean"] for r in results.values())]
    head = "| run | samples | " + " | ".join(f"{k} ({units[k]})" if k in units else k for k in keys) + " |"
    rows = [head, "|" + "---|" * (len(keys) + 2)]
    for name, r in results.items():
        cells = [f"{r['mean'][k]:.4g}" if k in r["mean"] else "–" for k in keys]
        rows.append(f"| {name} | {r['samples']} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _holder_of(held: contextlib.ExitStack):
    """A function that holds a folder read by evaluate with a shared lock until ``held`` closes: a
    dataset or a velocity store (a checkpoint is read once, a run is not held)."""
    taken: set[Path] = set()

    def hold(folder: str | Path | None) -> None:
        if folder is None or Path(folder).resolve() in taken:
            return
        try:
            kind = inspect(folder).kind
        except HpcinvError:
            return  # check_inputs says what is wrong with it
        if kind in (*DATASETS, *STORES):
            what = "dataset" if kind in DATASETS else "velocity store"
            held.enter_context(folder_lock(folder, shared=True, create=False, what=what))
            taken.add(Path(folder).resolve())

    return hold


def parse_baseline(text: str) -> tuple[str, str | None]:
    """``--baseline DATASET[:SPLIT]``: a colon needs a split after it."""
    folder, split = folder_and_split(text)
    if not folder:
        raise HpcinvError(f"--baseline {text!r} names no dataset; give DATASET or DATASET:SPLIT")
    if text.endswith(":") and split is None and not Path(text).exists():
        raise HpcinvError(
            f"--baseline {text!r} ends with ':' but names no split; give DATASET:SPLIT (e.g. {folder}:train), "
            "or DATASET alone for every sample"
        )
    return folder, split


def check_inputs(paths: list[str], dataset: str, out: str | Path, s: EvaluateConfig) -> None:
    """What every input of ``evaluate`` is, checked before anything is read: the same checks for
    ``hpcinv evaluate`` and its SLURM launcher."""
    require(dataset, DATASETS, what="--data")
    for path in paths:
        found = inspect(path)
        if found.kind not in (*STORES, "run", FILE) and not (Path(path) / STATE).is_file():
            what = found.describe() if found.kind != ABSENT else f"{str(path)!r} does not exist"
            raise HpcinvError(
                f"evaluate input {what}; give runs or checkpoints (`hpcinv train`) or velocity stores "
                "(`hpcinv predict` / `hpcinv refine`)"
            )
    baseline = [parse_baseline(s.baseline)[0]] if s.baseline else []
    for folder in baseline:
        require(folder, ("dataset",), what="--baseline")
    claim(out, "report")
    distinct(out, {"--data": dataset, **{f"input {p!r}": p for p in paths}, "--baseline": next(iter(baseline), None)})


def evaluate(paths: list[str], dataset: str, out: str | Path, settings: EvaluateConfig | None = None) -> dict:
    """Score ``paths`` (runs, checkpoints, velocity stores) and the data-free baseline on ``dataset``,
    as ``settings`` say (``misfit_samples``: the first that many samples are re-simulated for the data
    misfit; None: all). The report folder is built under a temporary name and replaces ``out`` whole
    when complete: a failed evaluation leaves nothing, a repeated one no figure of the last."""
    s = settings or EvaluateConfig()
    split, samples, misfit_samples, figures, baseline = s.split, s.samples, s.misfit_samples, s.figures, s.baseline
    allow_survey_mismatch, full_verify = s.allow_survey_mismatch, s.verify == "full"
    out = Path(out)
    with contextlib.ExitStack() as held:
        # what it reads is held from its first check to the report's last line: nothing can pull it away
        hold = _holder_of(held)
        for folder in (dataset, *paths, parse_baseline(baseline)[0] if baseline else None):
            hold(folder)
        # every input is read and checked before anything is written
        check_inputs(paths, dataset, out, s)
        manifest = require_readable(dataset, split, full=full_verify)
        lo, hi = select_range(manifest, split, samples, f"dataset {dataset!r}")
        ds = ShardedDataset(dataset, indices=np.arange(lo, hi))
        rows = [
            store_row(p, dataset, manifest, lo, hi)
            if inspect(p).kind in STORES
            else network_row(p, ds, manifest, dataset, allow_survey_mismatch)
            for p in paths
        ]
        training = (
            [parse_baseline(baseline)] if baseline else next((r.training_data for r in rows if r.training_data), None)
        )
        notes, baseline_note = [], ""
        if training is not None:
            for folder, part in training:  # (not `split`: that is the evaluated split, recorded below)
                hold(folder)
                require_readable(folder, part, what="baseline dataset")
            named = ", ".join(f"`{f}`" + (f" (split `{p}`)" if p else " (every sample)") for f, p in training)
            (folder, part), *_ = training
            label = Path(folder).name + (f":{part}" if part else "")
            name = BASELINE if not baseline else f"data-free baseline (mean model of {label})"
            rows.append(baseline_row(training, manifest, len(ds), name))
            baseline_note = f"The data-free baseline predicts the mean velocity model of {named} for every sample."
        else:
            notes.append("- no data-free baseline: no input names its training data; pass --baseline DATASET[:SPLIT]")
        truth = (  # has_velocity: every sample has its model, never None
            np.stack(cast(list[np.ndarray], [ds.read(int(i))[1] for i in ds.indices]))
            if has_velocity(manifest)
            else None
        )
        ranges = [rng for r in rows if (rng := r.info.get("normaliser_range_mps"))]
        stats = manifest["stats"].get("velocity") or manifest["stats"]["gathers"]
        v_range = tuple(ranges[0]) if ranges else (stats["min"], stats["max"])
        misfit_n = len(ds) if misfit_samples is None else min(misfit_samples, len(ds))
        data_cfg = load_dataset_config(dataset)
        results: dict[str, dict] = {}
        publish = atomic_path(out, folder=True, before_publish=lambda: claim(out, "report"))  # still a report?
        with parents_made(out), publish as building:
            mark(building, "report")
            for row in rows:
                while row.name in results:  # the same input named twice still gets its own row
                    row.name += "'"
                log.info("scoring %s on %s", row.name, dataset)
                results[row.name] = score(row, ds, truth, v_range, misfit_n, data_cfg) | {
                    "split": split,
                    "range": [lo, hi],
                }
                if figures:
                    results[row.name]["figures"] = [
                        str(out / Path(f).relative_to(building))
                        for f in write_figures(row, ds, truth, manifest, figures, building)
                    ]
            atomic_write_text(building / METRICS_JSON, json.dumps(results, indent=1))
            table = markdown_table(results)
            notes += [f"- **{name}**: {w}" for name, r in results.items() for w in r["warnings"]]
            scope = (
                f"`misfit` is the relative L2 data misfit of the re-simulated model over {misfit_n} of "
                f"{len(ds)} samples"
                if misfit_n
                else "no data misfit computed (--misfit-samples 0)"
            )
            truth_note = (
                "" if truth is not None else " The dataset holds gathers only: velocity metrics need true models."
            )
            where = (f" (split `{split}`" if split else " (") + (f", its first {hi - lo} samples)" if samples else ")")
            atomic_write_text(
                building / METRICS_MD,
                f"# Evaluation on `{dataset}`"
                + (where if where != " ()" else "")
                + f"\n\nMeans over samples; definitions in hpcinv/metrics/scores.py. {scope}.{truth_note} "
                f"{baseline_note} `spread`: RMS deviation of a row's "
                "models from their mean model (m/s), `spread_ratio`: that over the true models' spread (about 1 "
                "when predictions vary with the input as much as the truth does, 0 for the baseline).\n\n"
                + table
                + ("\n## Warnings\n\n" + "\n".join(notes) + "\n" if notes else ""),
            )
        return {"out": str(out), "table": table, "means": {n: r["mean"] for n, r in results.items()}, "warnings": notes}
