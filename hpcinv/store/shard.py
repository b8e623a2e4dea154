"""One HDF5 shard: a contiguous range of global sample indices, written atomically.

Layout (see docs/FORMAT.md): datasets ``velocity`` (N, nz, nx) float32 m/s, ``gathers``
(N, shots, time, receivers) float16/float32, ``index`` (N,) int64, one sample per chunk, and
``checksums`` (N, 2) uint64: the XXH3-64 digest of each sample's stored gathers and velocity bytes,
checked on every read (a damaged sample fails when it is read, not silently); file attributes ``start``,
``stop``, ``format_version``, ``config_hash``, ``survey`` (JSON) and the shard's own streaming
statistics (JSON), so a manifest can be rebuilt from the shards alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import xxhash

from hpcinv.errors import HpcinvError
from hpcinv.fileio import atomic_path
from hpcinv.folders import SHARD_DIR as SHARD_DIR  # the shard folder: its name is the layout's (hpcinv.folders)
from hpcinv.store.stats import RunningStats

FORMAT_VERSION = 2  # 2: a checksum per sample; 1 (read, never extended): none
CHECKSUM_ALGORITHM = "xxh3_64"
READABLE_VERSIONS = (1, 2)


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:06d}.h5"


@dataclass(frozen=True)
class ShardSpec:
    """The planning unit: shard ``shard_id`` holds global indices [start, stop)."""

    shard_id: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return shard_name(self.shard_id)

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_shards(n_samples: int, shard_size: int) -> list[ShardSpec]:
    return [
        ShardSpec(i, start, min(start + shard_size, n_samples))
        for i, start in enumerate(range(0, n_samples, shard_size))
    ]


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def sample_checksums(gathers: np.ndarray, velocity: np.ndarray) -> tuple[int, int]:
    """XXH3-64 of one sample's stored gathers and velocity bytes: ~30 GB/s on one core here, 0.2 ms
    for a paper-size float16 sample (CRC-32 from zlib: 2.2 GB/s, 15 x slower)."""
    return (  # .data: a memoryview of the contiguous array's bytes, no copy
        xxhash.xxh3_64_intdigest(np.ascontiguousarray(gathers).data),
        xxhash.xxh3_64_intdigest(np.ascontiguousarray(velocity).data),
    )


FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def check_storable(values: np.ndarray, dtype: str, what: str) -> float:
    """Refuse values that are not finite, or that ``dtype`` cannot hold (float16 overflows to inf above
    65504), naming the peak and what would hold it; returns the peak |value|."""
    values = np.asarray(values)
    finite = np.isfinite(values)
    if not finite.all():
        raise HpcinvError(f"{what} hold NaN or Inf values; refusing to store them")
    peak = float(np.abs(values).max()) if values.size else 0.0
    if dtype == "float16" and peak > FLOAT16_MAX:
        raise HpcinvError(
            f"{what} reach |{peak:.4g}|, more than float16 holds ({FLOAT16_MAX:g}); use dataset.gathers_dtype=float32"
        )
    return peak


def write_shard(
    folder: str | os.PathLike,
    spec: ShardSpec,
    velocity_NZX: np.ndarray | None,
    gathers_NSTR: np.ndarray,
    *,
    config_hash: str,
    survey: dict,
    gathers_dtype: str = "float32",
    checksums: bool = True,
    gathers_stats: RunningStats | None = None,
) -> dict:
    """Write ``spec``'s samples of a dataset atomically into ``folder`` and return its manifest record.

    ``velocity_NZX`` is None for a gathers-only dataset (recorded data without a true model).
    ``checksums``: the ``checksums`` dataset (format 2), checked by :class:`~hpcinv.store.ShardedDataset`
    on every read. (HDF5's own Fletcher-32 filter is not used: a chunk zeroed together with its
    checksum -- a lost or sparse block -- passes it.) ``gathers_stats``: the statistics of the gathers
    as stored, when the caller has them already (computed on the GPU where they were modelled).
    """
    n = spec.size
    check_storable(gathers_NSTR, gathers_dtype, f"the gathers of samples {spec.start}..{spec.stop - 1}")
    gathers_NSTR = np.ascontiguousarray(gathers_NSTR, dtype=gathers_dtype)
    arrays = {"gathers": gathers_NSTR}
    # statistics of the stored values (after any float16 rounding)
    stats = {"gathers": (gathers_stats or RunningStats.of(gathers_NSTR)).to_dict()}
    if velocity_NZX is not None:
        velocity_NZX = np.ascontiguousarray(velocity_NZX, dtype=np.float32)
        arrays["velocity"] = velocity_NZX
        stats["velocity"] = RunningStats.of(velocity_NZX).to_dict()
    if velocity_NZX is not None and velocity_NZX.shape[0] != n or gathers_NSTR.shape[0] != n:
        raise ValueError(
            f"shard {spec.name} expects {n} samples, got velocity "
            f"{None if velocity_NZX is None else velocity_NZX.shape} and gathers {gathers_NSTR.shape}"
        )
    attrs = {
        "format_version": FORMAT_VERSION if checksums else 1,
        "config_hash": config_hash,
        "survey": json.dumps(survey),
        "stats": json.dumps(stats),
    }
    if checksums:
        empty = np.zeros(0, np.float32)  # a gathers-only sample's velocity digest is that of no bytes
        arrays["checksums"] = np.array(
            [
                sample_checksums(g, v)
                for g, v in zip(gathers_NSTR, velocity_NZX if velocity_NZX is not None else [empty] * n, strict=True)
            ],
            np.uint64,
        )
        attrs["checksum_algorithm"] = CHECKSUM_ALGORITHM
    return write_arrays(folder, spec, arrays, np.arange(spec.start, spec.stop, dtype=np.int64), attrs, stats)


def write_arrays(
    folder: str | os.PathLike,
    spec: ShardSpec,
    arrays: dict[str, np.ndarray],
    index: np.ndarray,
    attrs: dict,
    stats: dict,
) -> dict:
    """Write one shard file atomically: per-sample ``arrays`` (one sample per chunk), the samples'
    ``index``, file attributes ``start``/``stop`` (the shard's range) and ``attrs``; return its record.

    The HDF5 file is built in memory, then written in one sequential write under a temporary name in
    the same folder, fsynced and renamed: a reader never sees a half-written shard, a killed writer
    leaves only a ``.tmp`` file that nothing accepts (writers remove such leftovers), and a full
    disk is a plain ``OSError`` (HDF5 writing to a full disk itself leaves its library in a state that
    crashes the process at exit).
    """
    with h5py.File(spec.name, "w", driver="core", backing_store=False, libver="latest") as fh:
        for key, data in arrays.items():
            if data.shape[0] != spec.size:
                raise ValueError(f"shard {spec.name} expects {spec.size} samples, got {key} {data.shape}")
            fh.create_dataset(key, data=data, chunks=(1, *data.shape[1:]) if data.ndim > 1 else None)
        fh.create_dataset("index", data=np.asarray(index, dtype=np.int64))
        fh.attrs.update({"start": spec.start, "stop": spec.stop, **attrs})
        fh.flush()
        image = fh.id.get_file_image()
    path = Path(folder) / spec.name
    with atomic_path(path) as tmp:
        tmp.write_bytes(image)
    return {
        "name": spec.name,
        "start": spec.start,
        "stop": spec.stop,
        "bytes": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
        "stats": stats,
        **file_times(path),
    }


def file_times(path: Path) -> dict:
    """The times a shard's record keeps of its file (``mtime_ns``, ``ctime_ns``): a file replaced,
    rewritten, copied or touched since it was recorded has other times (ctime cannot be set back)."""
    st = path.stat()
    return {"mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def unchanged_since_recorded(path: Path, rec: dict) -> bool:
    """Whether the file of shard record ``rec`` is the file recorded, by one ``stat`` (no byte read): its
    size and both times are the record's. A record without times (older manifests) is never trusted so."""
    try:
        st = path.stat()
    except OSError:
        return False
    return (
        st.st_size == rec["bytes"] and rec.get("mtime_ns") == st.st_mtime_ns and rec.get("ctime_ns") == st.st_ctime_ns
    )


def shard_record(path: Path, spec: ShardSpec, stats: dict) -> dict:
    return {
        "name": spec.name,
        "start": spec.start,
        "stop": spec.stop,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "stats": stats,
        **file_times(path),
    }


def read_shard_record(path: Path, spec: ShardSpec, config_hash: str, index: np.ndarray | None = None) -> dict:
    """Rebuild the manifest record of a complete shard found on disk (e.g. after a driver crash).

    Raises ``ValueError`` if the file is unreadable or does not hold exactly ``spec``'s samples (whose
    sample ``index`` is ``spec``'s range unless given).
    """
    expected = np.arange(spec.start, spec.stop) if index is None else index
    try:
        with h5py.File(path, "r") as fh:
            attrs = dict(fh.attrs)
            found = fh["index"][:]
            sizes = {fh[k].shape[0] for k in fh if k != "index"}
    except Exception as exc:
        raise ValueError(f"{path.name}: unreadable HDF5 ({exc})") from None
    if attrs.get("config_hash") != config_hash:
        raise ValueError(f"{path.name}: written with another config (hash {attrs.get('config_hash')})")
    if not (
        np.array_equal(found, expected)
        and sizes == {spec.size}
        and (int(attrs.get("start", -1)), int(attrs.get("stop", -1))) == (spec.start, spec.stop)
    ):
        raise ValueError(
            f"{path.name}: holds indices {found[:1]}..{found[-1:]}, not those of [{spec.start}, {spec.stop})"
        )
    return shard_record(path, spec, json.loads(attrs["stats"]))
