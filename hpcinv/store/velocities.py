"""Velocity stores: the velocity models ``predict`` and ``refine`` deliver, one per dataset sample.

A store is a folder like a dataset (docs/FORMAT.md): ``manifest.json`` (format ``hpcinv-velocities``)
and ``shards/shard-NNNNNN.h5``, each shard written atomically and holding, per sample, ``velocity``
(n, nz, nx) float32 in m/s, ``index`` (n,) the sample's global index in its dataset, and
``checksums`` (n,) the XXH3-64 of its velocity bytes, checked on every read. ``refine`` adds
``misfit_history`` (n, iterations) (NaN after a model's last iteration) and a ``samples`` attribute
(JSON: one summary per sample).

Shard ``k`` holds positions [start, stop) of the store, i.e. dataset samples ``lo + start`` ..
``lo + stop - 1`` where [lo, hi) is the dataset range (its split) the store covers. The manifest
records where the velocities came from (``source``: the checkpoint, or the start and refine config)
and the dataset they belong to (``dataset``: path, config hash, split, range), so a store of another
dataset is refused wherever it is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import xxhash

from hpcinv.errors import DataError, HpcinvError
from hpcinv.fileio import read_json_cached
from hpcinv.folders import MANIFEST
from hpcinv.store.manifest import VELOCITY_FORMAT_NAME, dataset_identity, read_manifest
from hpcinv.store.shard import SHARD_DIR, ShardSpec, write_arrays
from hpcinv.store.stats import RunningStats

VELOCITY_FORMAT_VERSION = 1


def store_manifest(
    kind: str,
    config_hash: str,
    dataset_root: str | os.PathLike,
    dataset_manifest: dict,
    split: str | None,
    sample_range: tuple[int, int],
    shard_size: int,
    source: dict,
    request: dict | None = None,
) -> dict:
    """The manifest of an empty store of ``kind`` ("prediction" or "refined") for a dataset range.
    ``request``: what decides the store's velocities (``config_hash`` is its hash), kept so that a
    refused resume can name the settings that differ."""
    lo, hi = sample_range
    return {
        "format": VELOCITY_FORMAT_NAME,
        "format_version": VELOCITY_FORMAT_VERSION,
        "kind": kind,
        "config_hash": config_hash,
        "n_samples": hi - lo,
        "shard_size": shard_size,
        "velocity_shape": list(dataset_manifest["velocity_shape"]),
        "dataset": {
            "path": str(Path(dataset_root).resolve()),
            "config_hash": dataset_manifest["config_hash"],
            "identity": dataset_identity(dataset_manifest),
            "split": split,
            "range": [lo, hi],
        },
        "source": source,
        **({"request": request} if request is not None else {}),
        "shards": [],
    }


def velocity_checksum(velocity_ZX: np.ndarray) -> int:
    return xxhash.xxh3_64_intdigest(np.ascontiguousarray(velocity_ZX).data)  # a memoryview of its bytes, no copy


def write_velocity_shard(
    folder: str | os.PathLike,
    spec: ShardSpec,
    lo: int,
    velocity_NZX: np.ndarray,
    *,
    config_hash: str,
    extra: dict[str, np.ndarray] | None = None,
    samples: list[dict] | None = None,
) -> dict:
    """Write positions [spec.start, spec.stop) of a store covering dataset samples from ``lo``."""
    velocity_NZX = np.ascontiguousarray(velocity_NZX, dtype=np.float32)
    stats = {"velocity": RunningStats.of(velocity_NZX).to_dict()}
    arrays = {
        "velocity": velocity_NZX,
        "checksums": np.array([velocity_checksum(v) for v in velocity_NZX], np.uint64),
        **(extra or {}),
    }
    attrs = {"format_version": VELOCITY_FORMAT_VERSION, "config_hash": config_hash, "stats": json.dumps(stats)}
    if samples is not None:
        attrs["samples"] = json.dumps(samples)
    return write_arrays(folder, spec, arrays, np.arange(lo + spec.start, lo + spec.stop), attrs, stats)


def read_store_manifest(root: str | os.PathLike) -> dict:
    return read_manifest(root, VELOCITY_FORMAT_NAME)


def is_velocity_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder whose manifest says it is a velocity store."""
    try:
        head = read_json_cached(Path(path) / MANIFEST)
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("format") == VELOCITY_FORMAT_NAME


class VelocityStore:
    """A complete velocity store, read shard by shard with every sample's checksum checked."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest = read_store_manifest(self.root)
        if not self.manifest["complete"]:
            m = self.manifest
            raise DataError(
                f"velocity store {str(root)!r} is incomplete ({m['samples_written']} of {m['n_samples']} "
                f"models); re-run the `hpcinv {'predict' if m['kind'] == 'prediction' else 'refine'}` "
                "that made it to finish it"
            )
        self.lo, self.hi = self.manifest["dataset"]["range"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def check_dataset(self, dataset_root: str | os.PathLike, dataset_manifest: dict, lo: int, hi: int) -> None:
        """Refuse (one line) a store made from another dataset, or one that does not cover [lo, hi)."""
        mine = self.manifest["dataset"]
        theirs = dataset_identity(dataset_manifest)
        if mine.get("identity", mine["config_hash"]) != theirs:
            same_config = mine["config_hash"] == dataset_manifest["config_hash"]
            why = "other recorded gathers with the same config" if same_config else "another config"
            raise HpcinvError(
                f"{str(self.root)!r} holds velocities of dataset {mine['path']!r} ({why}: "
                f"{mine.get('identity', mine['config_hash'])[:12]}), not of {str(dataset_root)!r} ({theirs[:12]}); "
                "predict or refine on this dataset first"
            )
        if not (self.lo <= lo and hi <= self.hi):
            raise HpcinvError(
                f"{str(self.root)!r} holds samples {self.lo}..{self.hi - 1} of the dataset, not all of "
                f"{lo}..{hi - 1}; use the same --split it was made with"
            )

    def _shard(self, rec: dict) -> tuple[np.ndarray, np.ndarray, dict]:
        path = self.root / SHARD_DIR / rec["name"]
        span = f"samples {self.lo + rec['start']}..{self.lo + rec['stop'] - 1}"
        try:
            with h5py.File(path, "r") as fh:
                got = (int(fh.attrs["start"]), int(fh.attrs["stop"]), str(fh.attrs["config_hash"]))
                vel, index, sums = fh["velocity"][:], fh["index"][:], fh["checksums"][:]
                samples = json.loads(fh.attrs["samples"]) if "samples" in fh.attrs else None
                history = fh["misfit_history"][:] if "misfit_history" in fh else None
        except FileNotFoundError:
            raise DataError(f"{path}: shard file missing ({span})") from None
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: unreadable shard ({span}): {' '.join(str(exc).split())}") from None
        if got != (rec["start"], rec["stop"], self.manifest["config_hash"]) or not np.array_equal(
            index, np.arange(self.lo + rec["start"], self.lo + rec["stop"])
        ):
            raise DataError(f"{path}: does not hold {span} of this store (a swapped or foreign file)")
        for row, v in enumerate(vel):
            if velocity_checksum(v) != int(sums[row]):
                raise DataError(
                    f"{path}: the velocity of sample {int(index[row])} is damaged (its bytes do not match "
                    "the checksum stored for it)"
                )
        return index, vel, {"samples": samples, "misfit_history": history}

    def read_range(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, velocities (n, nz, nx) float32) of dataset samples [lo, hi)."""
        indices, vels = [], []
        for rec in self.manifest["shards"]:
            if self.lo + rec["stop"] <= lo or self.lo + rec["start"] >= hi:
                continue
            index, vel, _ = self._shard(rec)
            keep = (index >= lo) & (index < hi)
            indices.append(index[keep])
            vels.append(vel[keep])
        return np.concatenate(indices), np.concatenate(vels)

    def details(self) -> list[tuple[np.ndarray, dict]]:
        """Per shard: (indices, {"samples": per-sample summaries or None, "misfit_history": array or None})."""
        return [(index, extra) for index, _, extra in (self._shard(rec) for rec in self.manifest["shards"])]
