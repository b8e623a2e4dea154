"""Importers for velocity-model collections and resampling onto the dataset grid.

Every importer returns an array shaped (N, nz, nx), depth first, in m/s:

* ``fcnvmb`` — FCNVMB ``.mat`` files (key ``vmodel`` or ``svmodel``; MATLAB v5 via scipy, v7.3 via
  h5py). ``path`` is one file, a folder of them, or a glob; files are taken in natural order
  (``vmodel2.mat`` before ``vmodel10.mat``).
* ``npz`` — an array ``key`` of a NumPy ``.npz`` (e.g. ``train`` in the FCNVMB reference file).
* ``openfwi`` — an OpenFWI ``.npy`` of shape (N, 1, nz, nx), memory-mapped.
* ``segy`` — one model per SEG-Y file, one trace per column (segyio, geometry ignored).
* ``binary`` — raw little-endian float32 with ``shape`` [nz, nx] or [n, nz, nx], C or Fortran order.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hpcinv.config import VelocitySection
from hpcinv.errors import HpcinvError

MAT_KEYS = ("vmodel", "svmodel")


def _natural_key(path: Path) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name)]


def _expand(path: str, *suffixes: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.rglob("*") if f.suffix.lower() in suffixes), key=_natural_key)
    elif any(ch in path for ch in "*?["):
        files = sorted((Path(f) for f in glob.glob(path, recursive=True)), key=_natural_key)
    else:
        files = [p]
    if not files:
        raise HpcinvError(f"no {'/'.join(suffixes)} files found at {path!r}")
    for f in files:
        if not f.is_file():
            raise HpcinvError(f"velocity file {str(f)!r} does not exist")
    return files


def _read_mat(path: Path, key: str | list[str] | None) -> np.ndarray:
    keys = (key,) if isinstance(key, str) else tuple(key or MAT_KEYS)
    try:
        from scipy.io import loadmat

        data = loadmat(path)
        found = next((k for k in keys if k in data), None)
        if found is None:
            names = sorted(k for k in data if not k.startswith("__"))
            raise HpcinvError(f"{str(path)!r} has none of the keys {list(keys)}; it holds {names}")
        return np.asarray(data[found], dtype=np.float32)
    except NotImplementedError:  # MATLAB v7.3 is HDF5, stored transposed
        import h5py

        with h5py.File(path, "r") as fh:
            found = next((k for k in keys if k in fh), None)
            if found is None:
                raise HpcinvError(f"{str(path)!r} has none of the keys {list(keys)}; it holds {list(fh)}") from None
            return np.asarray(fh[found], dtype=np.float32).T
    except (ValueError, OSError) as exc:
        raise HpcinvError(f"cannot read MATLAB file {str(path)!r}: {exc}") from exc


def _as_stack(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr
    raise HpcinvError(f"{what}: expected a 2-D model or a 3-D stack (N, nz, nx), got shape {arr.shape}")


def read_collection(cfg: VelocitySection) -> np.ndarray:
    """Read the collection named by ``cfg`` as (N, nz, nx); may be a read-only memory map."""
    source, path = cfg.source, cfg.path
    assert path is not None  # guaranteed by VelocitySection validation
    try:
        if source == "fcnvmb":
            stacks = [_as_stack(_read_mat(f, cfg.key), str(f)) for f in _expand(path, ".mat")]
            return np.concatenate(stacks).astype(np.float32, copy=False)
        if source == "npz":
            with np.load(_expand(path, ".npz")[0]) as npz:
                keys = [cfg.key] if isinstance(cfg.key, str) else list(cfg.key or [])
                if not keys and len(npz.files) == 1:
                    keys = [npz.files[0]]
                if not keys or any(key not in npz.files for key in keys):
                    raise HpcinvError(f"velocity.key must name arrays among {npz.files} in {path!r}, got {cfg.key!r}")
                return np.concatenate([_as_stack(np.asarray(npz[k], dtype=np.float32), f"{path}[{k}]") for k in keys])
        if source == "openfwi":
            arr = np.load(_expand(path, ".npy")[0], mmap_mode="r")
            if arr.ndim != 4 or arr.shape[1] != 1:
                raise HpcinvError(f"OpenFWI file {path!r} must be shaped (N, 1, nz, nx), got {arr.shape}")
            return arr[:, 0]
        if source == "segy":
            import segyio

            models = []
            for f in _expand(path, ".sgy", ".segy"):
                with segyio.open(f, "r", ignore_geometry=True) as fh:
                    models.append(segyio.tools.collect(fh.trace[:]).T.astype(np.float32))
            return np.stack(models)
        if source == "binary":
            f = _expand(path, ".bin")[0]
            shape = tuple(cfg.shape or ())
            count = int(np.prod(shape))
            nbytes = f.stat().st_size
            if nbytes != 4 * count:
                raise HpcinvError(
                    f"binary file {str(f)!r} holds {nbytes} bytes but shape {list(shape)} of float32 needs {4 * count}"
                )
            arr = np.fromfile(f, dtype="<f4").reshape(shape, order=cfg.order)
            return _as_stack(np.ascontiguousarray(arr), str(f))
    except HpcinvError:
        raise
    except Exception as exc:  # unreadable or malformed file: one clear line, naming it
        raise HpcinvError(f"cannot read velocity collection {path!r} as {source}: {exc}") from exc
    raise HpcinvError(f"unknown velocity source {source!r}")


def axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights that resample one axis whose first and last samples stay at its ends.

    Upsampling: linear interpolation. Downsampling by f = (n_in − 1)/(n_out − 1) > 1: each output
    sample is the mean of the input, read as cells of width 1, over its footprint [c − f/2, c + f/2]
    (area averaging), so a layer thinner than the new spacing is averaged in instead of being kept or
    dropped by where it happens to fall (plain interpolation at f = 4 is exact decimation,
    ``v[::4]``). Near the ends the footprint shrinks to stay centred, so the end samples are kept and
    a linear trend is reproduced exactly. torch's antialiased interpolation assumes cell-centred grids whose
    corners move; hpcinv's grids are node-based (sources sit on the first and last columns).
    """
    if n_in == 1:
        return np.ones((n_out, 1))
    if n_out == 1:
        return np.full((1, n_in), 1.0 / n_in)
    f = (n_in - 1) / (n_out - 1)
    centres = np.arange(n_out) * f
    if f <= 1:
        lo = np.clip(np.floor(centres).astype(np.int64), 0, n_in - 2)
        w = centres - lo
        weights = np.zeros((n_out, n_in))
        weights[np.arange(n_out), lo] = 1 - w
        weights[np.arange(n_out), lo + 1] += w
        return weights
    half = np.minimum(f / 2, np.minimum(centres + 0.5, n_in - 0.5 - centres))
    left, right = (centres - half)[:, None], (centres + half)[:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(right, cells + 0.5) - np.maximum(left, cells - 0.5), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resample(vel_NZX: np.ndarray, nz: int, nx: int, mode: str = "bilinear") -> np.ndarray:
    """Resample models onto an (nz, nx) grid spanning the same extent (corners kept).

    ``bilinear``: linear interpolation along an axis that is refined, area averaging along one that is
    coarsened (:func:`axis_weights`); ``nearest``: the nearest sample (keeps sharp values, aliases).
    """
    vel_NZX = np.asarray(vel_NZX, dtype=np.float32)
    if vel_NZX.shape[-2:] == (nz, nx):
        return vel_NZX
    if mode == "nearest":
        t = torch.from_numpy(np.array(vel_NZX, dtype=np.float32))[:, None]  # a writable copy (inputs may be read-only)
        return F.interpolate(t, size=(nz, nx), mode="nearest-exact")[:, 0].numpy()
    wz, wx = axis_weights(vel_NZX.shape[-2], nz), axis_weights(vel_NZX.shape[-1], nx)
    return (wz @ vel_NZX.astype(np.float64) @ wx.T).astype(np.float32)


def check_models(vel_NZX: np.ndarray, what: str, first_index: int = 0) -> None:
    """Refuse NaN/Inf or non-positive velocities, naming the first bad model and value."""
    vel = np.asarray(vel_NZX)
    bad = ~np.isfinite(vel) | (vel <= 0)
    if bad.any():
        n, z, x = (int(i) for i in np.argwhere(bad)[0])
        raise HpcinvError(
            f"{what}: model {first_index + n} has velocity {float(vel[n, z, x])} at (z={z}, x={x}); "
            "velocities must be finite and > 0 m/s"
        )
