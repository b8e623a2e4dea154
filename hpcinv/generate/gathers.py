"""``hpcinv import-gathers``: recorded gathers without true velocities, stored as a dataset.

Field data, or any gathers a user wants a velocity model for, become a dataset like a generated one
(same shards, checksums, manifest, survey record), with ``has_velocity: false``: ``predict``,
``refine`` and ``evaluate`` (data misfit only) work on it; ``train`` refuses it. The data config gives
the survey, grid and modelling settings the gathers were recorded (or modelled) with: ``refine``
re-simulates with exactly those. The folder is built under a temporary name and renamed into place
when complete, so an interrupted import leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hpcinv.config import DataConfig, config_hash, save_config
from hpcinv.errors import HpcinvError
from hpcinv.fileio import atomic_path
from hpcinv.physics.survey import make_geometry, n_output_samples
from hpcinv.store.manifest import CONFIG, read_manifest, write_manifest
from hpcinv.store.schema import new_manifest, survey_attrs
from hpcinv.store.shard import SHARD_DIR, plan_shards, write_shard


def _load(path: str | os.PathLike, key: str | None) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise HpcinvError(f"--gathers {str(path)!r} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                if key is None or key not in archive:
                    raise HpcinvError(f"--gathers {str(path)!r} is an .npz: give --key, one of {sorted(archive)}")
                return archive[key]
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise HpcinvError(f"--gathers {str(path)!r} is not a readable .npy/.npz file ({exc})") from None


def import_gathers(
    cfg: DataConfig,
    gathers: str | os.PathLike,
    out: str | os.PathLike,
    *,
    key: str | None = None,
    progress: bool = True,
) -> dict:
    out = Path(out)
    if out.exists():
        raise HpcinvError(f"--out {str(out)!r} already exists; give a new folder")
    data = _load(gathers, key)
    geometry = make_geometry(cfg.survey, cfg.grid)  # sources and receivers inside the grid
    expected = (geometry.n_shots, n_output_samples(cfg.survey), geometry.n_receivers)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4 or tuple(data.shape[1:]) != expected:
        raise HpcinvError(
            f"--gathers holds an array of shape {list(data.shape)}, but the config's survey records "
            f"[N, {expected[0]} shots, {expected[1]} samples, {expected[2]} receivers]"
        )
    n = data.shape[0]
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"n_samples": n})})
    cfg.dataset.split_ranges(n)
    physics = {"v_min_mps": None, "v_max_mps": None, "note": "recorded gathers: no velocity models"}
    manifest = new_manifest(cfg, n, physics) | {"has_velocity": False, "imported_from": str(Path(gathers).resolve())}
    digest = config_hash(cfg)
    records = []
    with atomic_path(out, folder=True) as tmp:
        (tmp / SHARD_DIR).mkdir()
        save_config(cfg, tmp / CONFIG)
        for spec in tqdm(plan_shards(n, cfg.dataset.shard_size), desc="import", disable=not progress):
            block = np.asarray(data[spec.start : spec.stop], dtype=np.float32)
            if not np.isfinite(block).all():
                bad = spec.start + int(np.argwhere(~np.isfinite(block).reshape(len(block), -1).all(axis=1))[0][0])
                raise HpcinvError(f"--gathers sample {bad} holds NaN or Inf values")
            records.append(
                write_shard(
                    tmp / SHARD_DIR,
                    spec,
                    None,
                    block,
                    config_hash=digest,
                    survey=survey_attrs(cfg),
                    gathers_dtype=cfg.dataset.gathers_dtype,
                )
            )
        write_manifest(tmp, manifest | {"shards": records})
    final = read_manifest(out)
    return {"out": str(out), "samples": final["n_samples"], "shards": len(final["shards"]), "has_velocity": False}
