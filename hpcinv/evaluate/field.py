"""``hpcinv field-report``: velocity models judged against a recording that has no true model.

For one recording (a sample of an imported dataset, or any dataset) and velocity models of it (the
stores ``predict`` and ``refine`` write, each named), the report shows what a user can check without a
truth:

* each model's data misfit per shot, re-simulated with the dataset's own survey, wavelet and
  conditioning; a refine store's held-out shots (``refine.holdout_shots``) are marked, and its misfit per
  frequency band is tabled;
* the recording beside each model's gathers, shot by shot (one colour scale);
* a classical velocity analysis of the recording (semblance → RMS picks → Dix interval velocities,
  :mod:`hpcinv.field.velan`) beside each model's velocity profile, and each model's RMS velocities drawn
  over the semblance panel, where a model that explains the moveout follows the semblance peaks.

The folder (``field.json``, ``README.md``, ``figures/``) is built under a temporary name and replaces
``--out`` whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from hpcinv.config import DataConfig, FieldReportConfig, load_config
from hpcinv.errors import HpcinvError
from hpcinv.field.condition import geometry_offsets
from hpcinv.field.velan import pick, rms_velocities, semblance
from hpcinv.fileio import atomic_path
from hpcinv.folders import CONFIG, DATASETS, STORES, claim, distinct, mark, require
from hpcinv.metrics import figures as fig
from hpcinv.physics import make_geometry, source_wavelet
from hpcinv.physics.forward import simulate_config
from hpcinv.store.dataset import ShardedDataset
from hpcinv.store.manifest import read_manifest
from hpcinv.store.velocities import VelocityStore

FIELD_JSON = "field.json"


def check_inputs(data: str, models: dict[str, str], out: str | Path) -> None:
    """Every input's kind and the output's place, before anything is read."""
    require(data, DATASETS, what="--data")
    for name, path in models.items():
        require(path, STORES, what=f"--models {name}")
    claim(out, "field")
    distinct(out, {"--data": data, **{f"--models {n}": p for n, p in models.items()}})


def field_report(data: str, models: dict[str, str], out: str | Path, settings: FieldReportConfig) -> dict:
    """Write the report (see the module docstring); returns its ``field.json`` contents."""
    check_inputs(data, models, out)
    manifest = read_manifest(data)
    cfg = load_config(DataConfig, str(Path(data) / CONFIG))
    if settings.sample >= manifest["n_samples"]:
        raise HpcinvError(f"sample={settings.sample} is not in {data!r} (samples 0 .. {manifest['n_samples'] - 1})")
    observed, _ = ShardedDataset(data).read(settings.sample)
    observed = np.asarray(observed, dtype=np.float64)
    geometry = make_geometry(cfg.survey, cfg.grid)
    offsets = geometry_offsets(geometry, cfg.grid.dx_m)
    dt = cfg.survey.dt_s * cfg.survey.downsample
    dx = cfg.grid.dx_m

    velocities: dict[str, np.ndarray] = {}
    extras: dict[str, dict] = {}
    for name, path in models.items():
        store = VelocityStore(path)
        store.check_dataset(data, manifest, settings.sample, settings.sample + 1)
        index, velocity = store.read_range(settings.sample, settings.sample + 1)
        velocities[name] = np.asarray(velocity[0], dtype=np.float64)
        for shard_index, extra in store.details():
            for i, summary in zip(shard_index, extra.get("samples") or [], strict=False):
                if int(i) == settings.sample:
                    extras[name] = summary

    modelled = {name: simulate_config(v, cfg, dtype=torch.float64).numpy() for name, v in velocities.items()}
    norms = np.linalg.norm(observed.reshape(len(observed), -1), axis=1)
    per_shot = {
        name: (np.linalg.norm((m - observed).reshape(len(observed), -1), axis=1) / norms).tolist()
        for name, m in modelled.items()
    }
    total = {name: float(np.linalg.norm(m - observed) / np.linalg.norm(observed)) for name, m in modelled.items()}

    vs = settings.velan
    scan = np.arange(vs.v_min_mps, vs.v_max_mps + vs.v_step_mps / 2, vs.v_step_mps)
    wavelet = source_wavelet(cfg.survey).numpy()
    shift_s = float(np.argmax(np.abs(wavelet)) * cfg.survey.dt_s) if vs.time_shift_s is None else vs.time_shift_s
    shift = int(round(shift_s / dt))
    if shift >= observed.shape[1] - 1:
        raise HpcinvError(
            f"velan.time_shift_s={shift_s:g} leaves nothing of the {(observed.shape[1] - 1) * dt:g} s record; give less"
        )
    aligned = np.zeros_like(observed)
    aligned[:, : observed.shape[1] - shift] = observed[:, shift:]
    sem, power = semblance(aligned, np.abs(offsets), dt, scan, window_s=vs.window_s, max_stretch=vs.max_stretch)
    try:
        picks = pick(
            sem,
            power,
            dt,
            scan,
            min_semblance=vs.min_semblance,
            min_separation_s=vs.min_separation_s,
            min_time_s=vs.min_time_s,
            min_interval_mps=vs.min_interval_mps,
        )
        picked = {
            "t0_s": picks.t0_s.tolist(),
            "v_rms_mps": picks.v_rms_mps.tolist(),
            "semblance": picks.semblance.tolist(),
            "v_interval_mps": picks.v_interval_mps.tolist(),
            "depth_m": picks.depth_m.tolist(),
        }
    except HpcinvError:
        picks, picked = None, {}
    nz, nx = cfg.grid.nz, cfg.grid.nx
    if settings.profile_x_m is None:
        midpoints = (geometry.source_cells[:, 1][:, None] + np.atleast_2d(geometry.receiver_cells[..., 1])) / 2
        column = int(round(float(np.mean(midpoints))))
    else:
        column = int(round(settings.profile_x_m / dx))
    if not 0 <= column < nx:
        raise HpcinvError(f"profile_x_m={settings.profile_x_m} is outside the grid (0 .. {(nx - 1) * dx:g} m)")
    depth = np.arange(nz) * dx

    result = {
        "data": str(data),
        "sample": settings.sample,
        "models": models,
        "misfit": total,
        "shot_misfits": per_shot,
        "holdout_shots": {n: e.get("holdout_shots", []) for n, e in extras.items() if e.get("holdout_shots")},
        "bands": {n: e["bands"] for n, e in extras.items() if e.get("bands")},
        "velocity_analysis": picked,
        "velocity_analysis_time_shift_s": shift * dt,
        "profile_x_m": column * dx,
        "profiles": {name: v[:, column].tolist() for name, v in velocities.items()},
    }
    with atomic_path(out, folder=True) as tmp:
        mark(tmp, "field")
        figures = tmp / "figures"
        figures.mkdir()
        drawn = []
        drawn.append(fig.save(fig.models_figure(velocities, dx, column), figures / "models.png"))
        for shot in range(len(observed)):
            drawn.append(
                fig.save(
                    fig.gathers_figure(observed[shot], {n: m[shot] for n, m in modelled.items()}, dt, f"shot {shot}"),
                    figures / f"gathers_shot{shot}.png",
                )
            )
        # each model's profile as flat layers of one cell: what its reflections' moveout would say
        curves = {name: rms_velocities(np.full(nz, dx), v[:, column]) for name, v in velocities.items()}
        drawn.append(fig.save(fig.semblance_figure(sem, dt, scan, picks, curves), figures / "semblance.png"))
        drawn.append(
            fig.save(
                fig.profiles_figure({n: v[:, column] for n, v in velocities.items()}, depth, picks, column * dx),
                figures / "profiles.png",
            )
        )
        result["figures"] = [str(Path(out) / "figures" / Path(p).name) for p in drawn]
        (tmp / FIELD_JSON).write_text(json.dumps(result, indent=1))
        (tmp / "README.md").write_text(_readme(result, models, extras))
    return result


def _readme(result: dict, models: dict[str, str], extras: dict[str, dict]) -> str:
    names = list(models)
    shots = len(next(iter(result["shot_misfits"].values())))
    held = {n: set(h) for n, h in result["holdout_shots"].items()}
    lines = [
        "# Field report",
        "",
        f"Recording: sample {result['sample']} of `{result['data']}`; models: "
        + ", ".join(f"{n} (`{p}`)" for n, p in models.items())
        + ".",
        "",
        "## Data misfit per shot",
        "",
        "Relative L2 misfit of each model's re-simulated gathers (the dataset's survey, wavelet and conditioning) "
        "against the recording; * marks a shot held out of that model's refine (never fitted).",
        "",
        "| shot | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for s in range(shots):
        cells = [f"{result['shot_misfits'][n][s]:.4f}{' *' if s in held.get(n, set()) else ''}" for n in names]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("| all | " + " | ".join(f"{result['misfit'][n]:.4f}" for n in names) + " |")
    for name, bands in result["bands"].items():
        lines += [
            "",
            f"## Refine bands of {name}",
            "",
            "| band (Hz) | fitted shots: start → end | held out: start → end |",
        ]
        lines.append("|---|---|---|")
        for b in bands:
            held_text = f"{b['holdout_start']:.4f} → {b['holdout_end']:.4f}" if "holdout_start" in b else "–"
            cut = "full" if b["cutoff_hz"] is None else f"≤ {b['cutoff_hz']:g}"
            lines.append(f"| {cut} | {b['misfit_start']:.4f} → {b['misfit_end']:.4f} | {held_text} |")
        summary = extras.get(name, {})
        if "holdout_misfit_before" in summary:
            lines.append(
                f"\nHeld-out shots {summary['holdout_shots']}: full-band misfit {summary['holdout_misfit_before']:.4f} "
                f"→ {summary['holdout_misfit_after']:.4f}."
            )
    va = result["velocity_analysis"]
    lines += ["", "## Velocity analysis of the recording", ""]
    if va:
        lines += [
            "Semblance of hyperbolic moveout over every shot, RMS velocity picks, Dix interval velocities "
            f"(profiles drawn at x = {result['profile_x_m']:g} m); the recording moved "
            f"{result['velocity_analysis_time_shift_s']:.3f} s earlier first (the source wavelet's peak time).",
            "",
            "| t0 (s) | v_rms (m/s) | semblance | interval v (m/s) | depth (m) |",
            "|---|---|---|---|---|",
        ]
        for row in zip(va["t0_s"], va["v_rms_mps"], va["semblance"], va["v_interval_mps"], va["depth_m"], strict=True):
            lines.append("| {:.3f} | {:.0f} | {:.2f} | {:.0f} | {:.0f} |".format(*row))
    else:
        lines.append("No reflection was picked (no semblance peak above `velan.min_semblance`).")
    lines += ["", "## Figures", ""]
    lines += [f"![{Path(p).stem}](figures/{Path(p).name})" for p in result["figures"]]
    return "\n".join(lines) + "\n"
