"""The reader of a sharded HDF5 dataset: random access, nothing preloaded (also a torch ``Dataset`` of
raw samples; :mod:`hpcinv.feed` normalises and batches them for training).

Each reader process opens the shards it touches lazily (HDF5 handles are never shared across a
fork) and reads one chunk per sample. ``dataset[i]`` returns ``(gathers_STR, vel_ZX)`` float32
tensors as stored.

Reads are checked: a shard is opened only if its range and config hash are its manifest record's (a
swapped or foreign file is refused), and each sample's bytes must match the checksum stored for it
(dataset format 2), so a damaged sample raises :class:`~hpcinv.errors.DataError` naming the shard
and the sample instead of returning wrong numbers.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from hpcinv.errors import DataError
from hpcinv.store.manifest import has_velocity, read_manifest, split_range
from hpcinv.store.shard import CHECKSUM_ALGORITHM, SHARD_DIR, sample_checksums

NO_VELOCITY = np.zeros(0, np.float32)  # what a gathers-only sample's velocity checksum covers
# Open shard files kept per reader. HDF5 keeps a chunk cache per open dataset, so 10k shards held open
# cost gigabytes and slowed a 100k-sample epoch 2.2 x (benchmarks/scale.py); the shard-aware sampler
# reads a shard's samples close together, so a few dozen open files are enough.
MAX_OPEN_SHARDS = 64


class ShardedDataset(Dataset):
    def __init__(
        self, root: str | os.PathLike, indices: list[int] | np.ndarray | None = None, split: str | None = None
    ):
        """``split`` selects one of the manifest's splits (e.g. ``"train"``); ``indices`` any subset."""
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if not self.manifest["complete"]:
            raise DataError(
                f"dataset {str(root)!r} is incomplete ({self.manifest['samples_written']} of "
                f"{self.manifest['n_samples']} samples); re-run `hpcinv generate` on it to finish"
            )
        self.has_velocity = has_velocity(self.manifest)
        # gathers imported with --scale are stored times it: read() undoes it
        self.gathers_scale = float(self.manifest.get("gathers_scale", 1.0))
        shards = self.manifest["shards"]
        self._starts = [r["start"] for r in shards]
        self._names = [r["name"] for r in shards]
        self._records = {r["name"]: r for r in shards}
        n = self.manifest["n_samples"]
        if split is not None:
            lo, hi = split_range(self.manifest, split, f"dataset {str(root)!r}")
            base = np.arange(lo, hi)
            self.indices = base if indices is None else base[np.asarray(indices, dtype=np.int64)]
        else:
            self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"sample indices must lie in [0, {n})")
        self._files: dict[str, h5py.File] = {}
        self._sums: dict[str, np.ndarray | None] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.indices)

    def _file(self, name: str) -> h5py.File:
        """The open shard ``name``: at most ``MAX_OPEN_SHARDS`` stay open (least recently used closed
        first), so neither handles nor HDF5's per-file caches grow with the number of shards."""
        if self._pid != os.getpid():  # forked into a reader process: never reuse the parent's handles
            self._files, self._sums, self._pid = {}, {}, os.getpid()
        fh = self._files.pop(name, None)
        if fh is None:
            fh = self._open(name)
            while len(self._files) >= MAX_OPEN_SHARDS:
                oldest = next(iter(self._files))
                self._files.pop(oldest).close()
                self._sums.pop(oldest, None)
        self._files[name] = fh  # (re)inserted last: dicts keep insertion order
        return fh

    def _open(self, name: str) -> h5py.File:
        path, rec = self.root / SHARD_DIR / name, self._records[name]
        span = f"samples {rec['start']}..{rec['stop'] - 1}"
        try:
            fh = h5py.File(path, "r")
        except FileNotFoundError:
            raise DataError(f"{path}: shard file missing ({span}); `hpcinv verify {self.root}`") from None
        except OSError as exc:
            raise DataError(f"{path}: unreadable shard ({span}): {' '.join(str(exc).split())}") from None
        got = (int(fh.attrs.get("start", -1)), int(fh.attrs.get("stop", -1)), str(fh.attrs.get("config_hash", "")))
        if got != (rec["start"], rec["stop"], self.manifest["config_hash"]):
            fh.close()
            raise DataError(
                f"{path}: holds samples {got[0]}..{got[1] - 1} of config {got[2][:12]}, but the manifest "
                f"says {span} of config {self.manifest['config_hash'][:12]} (a swapped or foreign file)"
            )
        algorithm = fh.attrs.get("checksum_algorithm")
        if "checksums" in fh and algorithm != CHECKSUM_ALGORITHM:
            fh.close()
            raise DataError(
                f"{path}: sample checksums of unknown kind {algorithm!r} (this hpcinv knows {CHECKSUM_ALGORITHM!r})"
            )
        try:
            self._sums[name] = fh["checksums"][:] if "checksums" in fh else None  # format 1 shards have none
        except OSError as exc:
            fh.close()
            raise DataError(f"{path}: unreadable sample checksums: {' '.join(str(exc).split())}") from None
        return fh

    def positions_by_shard(self) -> list[np.ndarray]:
        """Positions (0..len-1) of this dataset grouped by the shard holding them, in shard order."""
        shard_of = np.searchsorted(self._starts, self.indices, side="right") - 1
        order = np.argsort(shard_of, kind="stable")  # one sort, not a pass over the samples per shard
        return np.split(order, np.flatnonzero(np.diff(shard_of[order])) + 1) if order.size else []

    def locate(self, index: int) -> tuple[str, int]:
        """(shard name, row in shard) of global sample ``index``."""
        k = bisect.bisect_right(self._starts, index) - 1
        return self._names[k], index - self._starts[k]

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw (gathers_STR, vel_ZX) of global sample ``index`` as stored (vel_ZX None in a gathers-only
        dataset); gathers imported with ``--scale`` come back divided by it, in float32."""
        name, row = self.locate(int(index))
        fh = self._file(name)
        try:
            gathers = fh["gathers"][row]
            vel = fh["velocity"][row] if self.has_velocity else None
            problem = None
        except OSError as exc:
            problem = " ".join(str(exc).split())
        sums = self._sums[name]
        stored = (gathers, vel if vel is not None else NO_VELOCITY) if problem is None else None
        if stored is not None and sums is not None and sample_checksums(*stored) != tuple(int(c) for c in sums[row]):
            problem = "its bytes do not match the checksum stored for it"
        if problem:
            raise DataError(
                f"{self.root / SHARD_DIR / name}: sample {int(index)} (row {row}) is damaged: {problem}; "
                f"`hpcinv verify {self.root}` checks every shard, `hpcinv generate --verify full` recomputes bad ones"
            )
        if self.gathers_scale != 1.0:
            gathers = gathers.astype(np.float32) / np.float32(self.gathers_scale)
        return gathers, vel

    @property
    def gathers_dtype(self) -> np.dtype:
        return np.dtype(self.manifest.get("gathers_dtype", "float32"))

    def batch_arrays(self, n: int, alloc: Callable[..., Any] = np.empty) -> tuple[Any, Any]:
        """Empty (gathers as stored, velocity float32 or None) arrays for ``n`` samples, by ``alloc(shape, dtype)``."""
        gathers = alloc((n, *self.manifest["gathers_shape"]), self.gathers_dtype)
        vel = alloc((n, *self.manifest["velocity_shape"]), np.dtype(np.float32)) if self.has_velocity else None
        return gathers, vel

    def read_batch(
        self, positions, out: tuple[np.ndarray, np.ndarray | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw (gathers_BSTR in the stored dtype, vel_BZX float32 or None) of dataset ``positions``, in
        their order, into ``out`` if given (arrays of :meth:`batch_arrays`' shapes, e.g. in shared memory).

        Each sample is read once, straight into its place in the batch: one HDF5 hyperslab read per run
        of consecutive rows that also lie consecutively in the batch, else one per row (h5py's fancy
        indexing with a row list is several times slower); then each sample's checksum is checked."""
        if self.gathers_scale != 1.0:  # only training reads batches, and it refuses imported gathers
            raise DataError(f"dataset {str(self.root)!r} holds scaled imported gathers: read them with read()")
        indices = self.indices[np.asarray(positions, dtype=np.int64)]
        gathers, vel = out if out is not None else self.batch_arrays(len(indices))
        shard_of = np.searchsorted(self._starts, indices, side="right") - 1
        for k in np.unique(shard_of):
            where = np.flatnonzero(shard_of == k)
            rows = indices[where] - self._starts[k]
            order = np.argsort(rows, kind="stable")
            rows, where = rows[order], where[order]
            first = np.r_[True, rows[1:] != rows[:-1]]  # a row asked for twice is read once, then copied
            name = self._names[k]
            try:
                fh = self._file(name)
                self._read_runs(fh["gathers"], rows[first], gathers, where[first])
                if vel is not None:
                    self._read_runs(fh["velocity"], rows[first], vel, where[first])
            except OSError as exc:  # read them one by one to name the damaged sample
                for i in where:
                    self.read(int(indices[i]))
                raise DataError(
                    f"{self.root / SHARD_DIR / name}: reading rows {sorted(set(rows.tolist()))} failed: "
                    f"{' '.join(str(exc).split())}"
                ) from exc
            sums = self._sums[name]
            if sums is not None:
                for row, dest in zip(rows[first], where[first], strict=True):
                    stored = (gathers[dest], vel[dest] if vel is not None else NO_VELOCITY)
                    if sample_checksums(*stored) != tuple(int(c) for c in sums[row]):
                        # read() raises naming shard, sample and row -- or returns the good bytes of a flaky read
                        gathers[dest], again = self.read(int(row + self._starts[k]))
                        if vel is not None:
                            vel[dest] = again
            copies = np.flatnonzero(~first)
            if copies.size:
                source = where[np.searchsorted(rows, rows[copies], side="left")]
                gathers[where[copies]] = gathers[source]
                if vel is not None:
                    vel[where[copies]] = vel[source]
        return gathers, vel

    @staticmethod
    def _read_runs(dataset: h5py.Dataset, rows: np.ndarray, out: np.ndarray, dest: np.ndarray) -> None:
        """Sorted unique ``rows`` of an HDF5 dataset into ``out[dest]``: one hyperslab read per run that is
        consecutive both in the file and in ``out``."""
        breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(dest) != 1)) + 1
        for a, b in zip([0, *breaks], [*breaks, len(rows)], strict=True):
            r, d = int(rows[a]), int(dest[a])
            dataset.read_direct(out, np.s_[r : r + b - a], np.s_[d : d + b - a])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gathers, vel = self.read(self.indices[i])
        if vel is None:
            raise DataError(
                f"dataset {str(self.root)!r} holds gathers only (no true velocities): it can be predicted, "
                "refined and scored by data misfit, not trained on"
            )
        return torch.from_numpy(np.array(gathers, dtype=np.float32)), torch.from_numpy(np.array(vel, dtype=np.float32))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"], state["_sums"] = {}, {}
        return state

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}


def mean_velocity(
    root: str | os.PathLike, split: str | None = None, more: Sequence[tuple[str, str | None]] = ()
) -> np.ndarray:
    """The mean velocity model (nz, nx) float32 of a dataset's split (and of the ``more`` (folder,
    split) pairs, every model weighted alike): the data-free baseline."""
    total: np.ndarray | None = None
    count = 0
    for folder, part in [(root, split), *more]:
        ds = ShardedDataset(folder, split=part)
        if not ds.has_velocity:
            raise DataError(f"dataset {str(folder)!r} holds gathers only: it has no velocity models to average")
        if total is None:
            total = np.zeros(ds.manifest["velocity_shape"], np.float64)
        elif list(total.shape) != list(ds.manifest["velocity_shape"]):
            raise DataError(
                f"dataset {str(folder)!r} has models of {ds.manifest['velocity_shape']} cells, "
                f"{str(root)!r} of {list(total.shape)}: they cannot be averaged together"
            )
        for index in ds.indices:
            vel = ds.read(int(index))[1]
            assert vel is not None  # has_velocity
            total += vel
        count += len(ds)
        ds.close()
    assert total is not None  # set by the first dataset, root
    return (total / max(count, 1)).astype(np.float32)
