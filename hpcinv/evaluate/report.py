"""``hpcinv evaluate``: metrics per sample and averaged, figures, data misfit, comparisons.

For each run or checkpoint the network is rebuilt from the checkpoint's model spec, its
normaliser maps outputs back to m/s, and every sample of the dataset (or split) is predicted.
Before anything is written, every input is checked: the shards to be read (as ``train`` does), the
checkpoint (finite tensors; shapes), and the dataset's survey, grid and modelling settings against
those the network was trained on (a mismatch is refused, naming each differing key, unless
``allow_survey_mismatch`` makes it a warning in the report). True velocities outside the range the
network was trained on are reported.
Outputs in ``--out``: ``metrics.json`` (per run: per-sample and mean metrics, misfits),
``metrics.md`` (a side-by-side table of all runs) and ``figures/<run>/sample_NNNNNN.png``.
Metric definitions: :mod:`hpcinv.evaluate.metrics`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from hpcinv.errors import HpcinvError
from hpcinv.evaluate.metrics import METRICS, velocity_metrics
from hpcinv.evaluate.misfit import data_misfit
from hpcinv.fileio import atomic_write_text
from hpcinv.nets import build_model
from hpcinv.store import Normaliser, ShardedDataset, folder_lock, load_dataset_config, require_readable
from hpcinv.train.checkpoint import find_checkpoint, load_state, load_weights, nonfinite_entries

log = logging.getLogger(__name__)

TABLE_METRICS = ("mae", "rmse", "mae_pm1", "rmse_pm1", "ssim", "psnr", "psnr_signal", "misfit")


def run_name(path: str | Path) -> str:
    file = find_checkpoint(path)
    run = file.parent.parent if file.parent.name.startswith("checkpoint_") else file.parent
    return f"{run.name}/{file.parent.name}" if file.parent.name.startswith("checkpoint_") else file.parent.name


def survey_differences(trained: dict, data: dict) -> list[str]:
    """Keys of the survey record (geometry, wavelet, time axis, grid, modelling) that differ."""
    keys = [k for k in sorted(set(trained) | set(data)) if trained.get(k) != data.get(k)]
    return [f"{k} differs" if isinstance(data.get(k), list) or isinstance(trained.get(k), list)
            else f"{k} is {data.get(k)!r} in the data but {trained.get(k)!r} in training" for k in keys]


def _load(path: str | Path, manifest: dict, dataset: str, allow_survey_mismatch: bool = False):
    """(model, normaliser, state, warnings) of a checkpoint, checked against the dataset."""
    state = load_state(path)
    bad = nonfinite_entries(state["model"])
    if bad:
        raise HpcinvError(f"checkpoint {str(path)!r} holds NaN/Inf values (in {', '.join(bad[:3])}); the run that "
                          "wrote it diverged, so there is nothing to evaluate")
    spec = state["model_spec"]
    if (list(spec["gathers_shape"]), list(spec["velocity_shape"])) != (manifest["gathers_shape"],
                                                                       manifest["velocity_shape"]):
        raise HpcinvError(
            f"checkpoint {str(path)!r} expects gathers {spec['gathers_shape']} -> velocity {spec['velocity_shape']} "
            f"but dataset {dataset!r} holds {manifest['gathers_shape']} -> {manifest['velocity_shape']} "
            "(a different survey or grid)"
        )
    warnings = []
    trained = json.loads(state.get("dataset", {}).get("survey") or "null")
    if trained is None:
        warnings.append("the checkpoint does not record its training survey: not compared with the data")
    elif diffs := survey_differences(trained, manifest["survey"]):
        text = "; ".join(diffs)
        if not allow_survey_mismatch:
            raise HpcinvError(f"dataset {dataset!r} was recorded with another survey than checkpoint {str(path)!r} "
                              f"was trained on: {text}; evaluate on data of the training survey, or pass "
                              "--allow-survey-mismatch to score it anyway")
        warnings.append(f"survey differs from training (--allow-survey-mismatch): {text}")
    model = build_model(spec)
    load_weights(model, state, repr(str(path)))
    return model.eval(), Normaliser(**state["normaliser"]), state, warnings


def training_range(state: dict, norm: Normaliser) -> tuple[float, float] | None:
    """The velocity range the network learned to output (m/s), where the checkpoint tells it."""
    if "velocity_range_mps" in state:
        return tuple(state["velocity_range_mps"])
    return (norm.v_min, norm.v_max) if norm.velocity == "minmax" else None


@torch.no_grad()
def evaluate_one(path: str | Path, dataset: str | Path, *, split: str | None = None, batch_size: int = 8,
                 misfit_samples: int = 2, figures: int = 2, out: Path | None = None, name: str | None = None,
                 loaded: tuple | None = None, manifest: dict | None = None) -> dict:
    """``loaded``: the (model, normaliser, state, warnings) of ``path`` and ``manifest`` the dataset's
    checked manifest, if the caller already has them."""
    manifest = manifest or require_readable(dataset, split)
    model, norm, state, warnings = loaded or _load(path, manifest, str(dataset))
    warnings = list(warnings)
    trained_range = training_range(state, norm)
    outside_cells = outside_samples = total_cells = 0
    ds = ShardedDataset(dataset, norm, split=split)
    v_min, v_max = (norm.v_min, norm.v_max) if norm.velocity == "minmax" else (
        manifest["stats"]["velocity"]["min"], manifest["stats"]["velocity"]["max"])
    per_sample: dict[str, list[float]] = {k: [] for k in METRICS}
    preds: dict[int, np.ndarray] = {}
    keep = set(range(max(figures, misfit_samples)))
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        gathers = torch.stack([g for g, _ in items])
        true = norm.velocity_inv(torch.stack([v for _, v in items])[:, None])
        pred = norm.velocity_inv(model(gathers).float())
        if trained_range is not None:
            outside = (true < trained_range[0] - 1e-3) | (true > trained_range[1] + 1e-3)
            outside_cells += int(outside.sum())
            outside_samples += int(outside.flatten(1).any(dim=1).sum())
            total_cells += outside.numel()
        for key, values in velocity_metrics(pred, true, v_min, v_max).items():
            per_sample[key].extend(values.tolist())
        for j in range(len(items)):
            if start + j in keep:
                preds[start + j] = pred[j, 0].numpy()
    result = {"checkpoint": str(find_checkpoint(path)), "dataset": str(dataset), "split": split,
              "samples": len(ds), "epoch": state.get("epoch"), "velocity_range_mps": [v_min, v_max],
              "mean": {k: float(np.mean(v)) for k, v in per_sample.items()}, "per_sample": per_sample}
    if trained_range is not None:
        result["outside_training_range"] = {"range_mps": list(trained_range), "samples": outside_samples,
                                            "fraction_of_cells": outside_cells / max(total_cells, 1)}
        if outside_cells:
            warnings.append(f"{outside_samples} of {len(ds)} samples have true velocities outside the "
                            f"{trained_range[0]:g}-{trained_range[1]:g} m/s the network was trained on "
                            f"({100 * outside_cells / total_cells:.2g} % of cells): it cannot predict those values")
    for text in warnings:
        log.warning("%s: %s", name or path, text)
    result["warnings"] = warnings
    if misfit_samples:
        data_cfg = load_dataset_config(dataset)
        misfits = []
        for i in range(min(misfit_samples, len(ds))):
            gathers, _ = ds.read(int(ds.indices[i]))
            misfits.append(data_misfit(preds[i], gathers, data_cfg))
        result["misfit_per_sample"] = misfits
        result["mean"]["misfit"] = float(np.mean(misfits))
    if figures and out is not None:
        from hpcinv.evaluate.figures import close, velocity_figure

        name = name or run_name(path)
        folder = out / "figures" / name.replace("/", "_").replace("'", "_")
        folder.mkdir(parents=True, exist_ok=True)
        survey = manifest["survey"]
        paths = []
        for i in range(min(figures, len(ds))):
            gathers, vel = ds.read(int(ds.indices[i]))
            fig = velocity_figure(vel, preds[i], gathers[len(gathers) // 2], survey["dx_m"], survey["dt_s"],
                                  title=f"{name} — sample {int(ds.indices[i])}")
            file = folder / f"sample_{int(ds.indices[i]):06d}.png"
            fig.savefig(file, dpi=110)
            close(fig)
            paths.append(str(file))
        result["figures"] = paths
    return result


def markdown_table(results: dict[str, dict]) -> str:
    units = {"mae": "m/s", "rmse": "m/s", "psnr": "dB", "psnr_signal": "dB"}
    keys = [k for k in TABLE_METRICS if any(k in r["mean"] for r in results.values())]
    head = "| run | samples | " + " | ".join(f"{k} ({units[k]})" if k in units else k for k in keys) + " |"
    rows = [head, "|" + "---|" * (len(keys) + 2)]
    for name, r in results.items():
        cells = [f"{r['mean'][k]:.4g}" if k in r["mean"] else "–" for k in keys]
        rows.append(f"| {name} | {r['samples']} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def evaluate(paths: list[str], dataset: str, out: str | Path, *, split: str | None = None, misfit_samples: int = 2,
             figures: int = 2, allow_survey_mismatch: bool = False, full_verify: bool = False) -> dict:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HpcinvError(f"--out {str(out)!r} is a file; give a folder for the report")
    # every input is read and checked before anything is written
    manifest = require_readable(dataset, split, full=full_verify)
    loaded = [_load(path, manifest, str(dataset), allow_survey_mismatch) for path in paths]
    with folder_lock(dataset, shared=True, create=False):
        out.mkdir(parents=True, exist_ok=True)
        results = {}
        for path, model in zip(paths, loaded, strict=True):
            name = run_name(path)
            while name in results:  # the same checkpoint named twice still gets its own row
                name += "'"
            log.info("evaluating %s on %s", name, dataset)
            results[name] = evaluate_one(path, dataset, split=split, misfit_samples=misfit_samples, figures=figures,
                                         out=out, name=name, loaded=model, manifest=manifest)
    atomic_write_text(out / "metrics.json", json.dumps(results, indent=1))
    table = markdown_table(results)
    notes = [f"- **{name}**: {w}" for name, r in results.items() for w in r["warnings"]]
    atomic_write_text(out / "metrics.md", f"# Evaluation on `{dataset}`" + (f" (split `{split}`)" if split else "")
                      + "\n\nMeans over samples; definitions in hpcinv/evaluate/metrics.py. `misfit` is the "
                      "relative L2 data misfit of the re-simulated prediction.\n\n" + table
                      + ("\n## Warnings\n\n" + "\n".join(notes) + "\n" if notes else ""))
    return {"out": str(out), "table": table, "means": {n: r["mean"] for n, r in results.items()},
            "warnings": notes}
