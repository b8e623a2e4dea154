"""The dataset manifest (``manifest.json``) and ``verify``.

The manifest is the only index of a dataset: shards, sample ranges, checksums, the config hash and
merged statistics. Only the driver's :class:`~hpcinv.store.writer.StoreWriter` writes it, atomically, as
shards complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hpcinv.config import DataConfig, config_hash, load_config
from hpcinv.errors import DataError, HpcinvError
from hpcinv.fileio import PARSED_KEPT, atomic_write_text, read_json_cached
from hpcinv.folders import CONFIG, DATASET_FORMAT, DATASETS, MANIFEST, RECORD, STORE_FORMAT, inspect
from hpcinv.store.shard import READABLE_VERSIONS, SHARD_DIR, file_sha256, plan_shards, unchanged_since_recorded
from hpcinv.store.stats import RunningStats

FORMAT_NAME = DATASET_FORMAT
VELOCITY_FORMAT_NAME = STORE_FORMAT  # predictions and refined models: hpcinv.store.velocities
VELOCITY_FORMAT_VERSIONS = (1,)

REQUIRED_KEYS = {
    "config_hash": str,
    "n_samples": int,
    "shard_size": int,
    "velocity_shape": list,
    "gathers_shape": list,
    "survey": dict,
    "shards": list,
    "stats": dict,
    "samples_written": int,
    "complete": bool,
}
SHARD_KEYS = {"name": str, "start": int, "stop": int, "bytes": int, "sha256": str, "stats": dict}


FORMATS = {  # format name -> (readable versions, required top-level keys)
    FORMAT_NAME: (READABLE_VERSIONS, REQUIRED_KEYS),
    VELOCITY_FORMAT_NAME: (
        VELOCITY_FORMAT_VERSIONS,
        {
            "config_hash": str,
            "kind": str,
            "n_samples": int,
            "shard_size": int,
            "velocity_shape": list,
            "dataset": dict,
            "source": dict,
            "shards": list,
            "stats": dict,
            "samples_written": int,
            "complete": bool,
        },
    ),
}


def _schema_problem(manifest: object, fmt: str) -> str | None:
    if not isinstance(manifest, dict):
        return f"is not a JSON object but a {type(manifest).__name__}"
    versions, required = FORMATS[fmt]
    if manifest.get("format") != fmt or manifest.get("format_version") not in versions:
        return (
            f"is not a {fmt} manifest of a version this hpcinv reads {list(versions)} "
            f"(format {manifest.get('format')!r}, version {manifest.get('format_version')!r})"
        )
    for key, kind in required.items():
        if not isinstance(manifest.get(key), kind):
            return f"lacks {key!r} or it is not a {kind.__name__}"
    for i, rec in enumerate(manifest["shards"]):
        for key, kind in SHARD_KEYS.items():
            if not isinstance(rec, dict) or not isinstance(rec.get(key), kind):
                return f"shard record {i} lacks {key!r} or it is not a {kind.__name__}"
    return None


# manifest.json path -> (the parsed manifest that passed the schema check, its format): checked once
_CHECKED: dict[str, tuple[object, str]] = {}


def read_manifest(root: str | os.PathLike, fmt: str = FORMAT_NAME) -> dict:
    """The manifest of the dataset folder ``root`` (``fmt``: of a velocity store); every way it can
    be absent or damaged is one :class:`~hpcinv.errors.HpcinvError` line."""
    root = Path(root)
    what = "dataset" if fmt == FORMAT_NAME else "velocity store (predictions or refined models)"
    if not root.exists():
        raise HpcinvError(f"{what} folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise HpcinvError(f"{str(root)!r} is a file, not a {what} folder")
    path = root / MANIFEST
    if not path.is_file():
        raise HpcinvError(f"{str(root)!r} is not an hpcinv {what}: {MANIFEST} is missing")
    try:
        manifest = read_json_cached(path)  # parsed once per process while the file is unchanged
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        remedy = (
            "`hpcinv generate` with the dataset's config.yaml rebuilds it from the shards"
            if fmt == FORMAT_NAME
            else "re-run the `hpcinv predict` or `hpcinv refine` that made it (it adopts the shards), or --restart it"
        )
        raise HpcinvError(f"{path}: damaged manifest, not JSON ({' '.join(str(exc).split())}); {remedy}") from None
    except OSError as exc:
        raise HpcinvError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    checked = _CHECKED.get(str(path))
    if checked is None or checked[0] is not manifest or checked[1] != fmt:  # (a manifest parsed anew)
        problem = _schema_problem(manifest, fmt)
        if problem:
            raise HpcinvError(f"{path}: damaged manifest: it {problem}")
        _CHECKED.pop(str(path), None)
        while len(_CHECKED) >= PARSED_KEPT:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[str(path)] = (manifest, fmt)
    assert isinstance(manifest, dict)  # (checked by _schema_problem)
    return {**manifest, "shards": list(manifest["shards"])}  # the parsed one is shared: a caller's own copy


def write_manifest(root: str | os.PathLike, manifest: dict) -> dict:
    """Write ``manifest`` atomically with its shards sorted, their statistics merged and its
    completeness counted; returns what was written."""
    shards = sorted(manifest["shards"], key=lambda r: r["start"])
    stats = {}
    for key in sorted({k for rec in shards for k in rec["stats"]}):
        merged = RunningStats()
        for rec in shards:
            merged = merged.merge(RunningStats.from_dict(rec["stats"][key]))
        stats[key] = merged.to_dict()
    done = sum(r["stop"] - r["start"] for r in shards)
    manifest = {
        **manifest,
        "shards": shards,
        "stats": stats,
        "samples_written": done,
        "complete": done == manifest["n_samples"],
    }
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def dataset_identity(manifest: dict) -> str:
    """What a store made from this dataset must match: its config hash, and for imported gathers also
    the hash of the gathers (two recordings imported with one config are two datasets)."""
    return str(manifest.get("identity") or manifest["config_hash"])


def nonfinite_stats(stats: dict) -> list[str]:
    """The statistics (``gathers.mean``, ...) in a manifest's or a shard record's ``stats`` that are not finite."""
    return [
        f"{key}.{name}"
        for key, values in sorted(stats.items())
        for name, value in sorted(values.items())
        if isinstance(value, float) and not np.isfinite(value)
    ]


def has_velocity(manifest: dict) -> bool:
    """Whether a dataset holds true velocities (a gathers-only dataset of recorded data does not)."""
    return manifest.get("has_velocity", True)


def load_dataset_config(root: str | os.PathLike) -> DataConfig:
    return load_config(DataConfig, Path(root) / CONFIG)


@dataclass
class VerifyReport:
    root: str
    problems: list[str] = field(default_factory=list)
    shards_ok: int = 0
    samples_ok: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_shard(path: Path, rec: dict, manifest: dict, *, checksum: bool) -> str | None:
    """What is wrong with one shard file against its manifest record, or None: present, the recorded
    size, (``checksum``: the recorded sha256,) readable HDF5 whose range, config hash, index and shapes
    are the record's. Without the checksum this reads only the file's metadata (milliseconds)."""
    span = f"samples {rec['start']}..{rec['stop'] - 1}"
    if not path.is_file():
        return f"{path.name}: file missing ({span})"
    size = path.stat().st_size
    if size != rec["bytes"]:
        return f"{path.name}: truncated or resized: {size} bytes, manifest says {rec['bytes']}"
    if checksum and file_sha256(path) != rec["sha256"]:
        return f"{path.name}: corrupted: sha256 differs from the manifest"
    n = rec["stop"] - rec["start"]
    shapes = {"gathers": (n, *manifest["gathers_shape"])}
    if has_velocity(manifest):
        shapes["velocity"] = (n, *manifest["velocity_shape"])
    if manifest["format_version"] >= 2:
        shapes["checksums"] = (n, 2)
    try:
        with h5py.File(path, "r") as fh:
            attrs = (int(fh.attrs["start"]), int(fh.attrs["stop"]), str(fh.attrs["config_hash"]))
            index = fh["index"][:]
            bad_shape = [k for k, s in shapes.items() if k not in fh or fh[k].shape != s]
    except Exception as exc:
        return f"{path.name}: unreadable HDF5 ({' '.join(str(exc).split())})"
    if attrs[2] != manifest["config_hash"]:
        return (
            f"{path.name}: written with another config (hash {attrs[2][:12]}, dataset {manifest['config_hash'][:12]})"
        )
    if attrs[:2] != (rec["start"], rec["stop"]) or not np.array_equal(index, np.arange(rec["start"], rec["stop"])):
        return (
            f"{path.name}: holds samples {attrs[0]}..{attrs[1] - 1}, manifest says {span} (a swapped or foreign file)"
        )
    if bad_shape:
        return f"{path.name}: wrong shape for {', '.join(bad_shape)}"
    return None


def verify_dataset(
    root: str | os.PathLike,
    *,
    checksums: bool = True,
    samples: tuple[int, int] | None = None,
    trust_unchanged: bool = False,
) -> VerifyReport:
    """Check manifest, config hash and every planned shard (only those holding ``samples`` = [lo, hi)
    if given): listed, present, full size, (``checksums``: sha256,) readable, the right contents.

    ``trust_unchanged`` (start-up checks, not with ``checksums``): a shard whose file is unchanged since
    it was recorded (one ``stat``: size, mtime, ctime) passes without being opened; any other is opened
    and checked. What it does not read, the reader checks: each shard's range and config hash when it
    is opened, each sample's checksum when it is read."""
    root = Path(root)
    report = VerifyReport(str(root))
    try:
        found = inspect(root)
        if found.is_hpcinv and found.kind not in DATASETS:
            raise HpcinvError(
                f"{found.describe()}: verify checks datasets (`hpcinv generate`, `hpcinv import-gathers`)"
            )
        manifest = read_manifest(root)
    except HpcinvError as exc:
        report.problems.append(str(exc))
        return report
    if found.recorded and found.identity is not None and found.identity != dataset_identity(manifest):
        report.problems.append(f"{RECORD} and {MANIFEST} name different datasets: one of them was replaced")
    try:
        if config_hash(load_dataset_config(root)) != manifest["config_hash"]:
            report.problems.append(f"{CONFIG}: does not match the manifest's config hash")
    except HpcinvError as exc:
        report.problems.append(f"{CONFIG}: {exc}")
    if bad := nonfinite_stats(manifest["stats"]):
        report.problems.append(f"{MANIFEST}: statistics not finite ({', '.join(bad)}): values overflow their dtype")
    records = {r["name"]: r for r in manifest["shards"]}
    lo, hi = samples if samples is not None else (0, manifest["n_samples"])
    for spec in plan_shards(manifest["n_samples"], manifest["shard_size"]):
        if spec.stop <= lo or spec.start >= hi:
            continue
        rec = records.get(spec.name)
        if rec is None:
            report.problems.append(f"{spec.name}: missing from the manifest (samples {spec.start}..{spec.stop - 1})")
            continue
        path = root / SHARD_DIR / spec.name
        if trust_unchanged and not checksums and unchanged_since_recorded(path, rec):
            problem = None
        else:
            problem = check_shard(path, rec, manifest, checksum=checksums)
        if problem:
            report.problems.append(problem)
        else:
            report.shards_ok += 1
            report.samples_ok += spec.size
    return report


def split_range(manifest: dict, split: str | None, what: str) -> tuple[int, int]:
    """[lo, hi) of ``split`` (None: every sample), or one line naming the splits there are."""
    if split is None:
        return 0, manifest["n_samples"]
    splits = manifest.get("splits") or {}
    if split not in splits:
        raise HpcinvError(f"{what} has no split {split!r}; it has {sorted(splits) or 'none (use all samples)'}")
    lo, hi = splits[split]
    return int(lo), int(hi)


def select_range(manifest: dict, split: str | None, samples: int | None, what: str) -> tuple[int, int]:
    """[lo, hi) of ``split``, cut to its first ``samples`` samples if given."""
    lo, hi = split_range(manifest, split, what)
    if samples is not None:
        if samples < 1:
            raise HpcinvError(f"--samples must be >= 1, got {samples}")
        hi = min(hi, lo + samples)
    return lo, hi


def pooled_stats(manifests: list[dict]) -> dict:
    """The statistics of several datasets taken together (exact merge of their count, mean, M2, range)."""
    pooled = {}
    for key in sorted({k for m in manifests for k in m["stats"]}):
        merged = RunningStats()
        for m in manifests:
            if key in m["stats"]:
                merged = merged.merge(RunningStats.from_dict(m["stats"][key]))
        pooled[key] = merged.to_dict()
    return pooled


def require_readable(
    root: str | os.PathLike, split: str | None = None, *, full: bool = False, what: str = "dataset"
) -> dict:
    """Before a run reads ``root`` (its ``split``): the dataset is complete and every shard it will read
    is unchanged since it was recorded or passes :func:`check_shard` (``full``: every shard's sha256).
    Returns the manifest, or raises :class:`~hpcinv.errors.DataError` naming the first bad shard."""
    manifest = read_manifest(root)
    label = f"{what} {str(root)!r}"
    if not manifest["complete"]:
        raise DataError(
            f"{label} is incomplete ({manifest['samples_written']} of {manifest['n_samples']} samples); "
            "re-run `hpcinv generate` on it to finish"
        )
    report = verify_dataset(root, checksums=full, samples=split_range(manifest, split, label), trust_unchanged=not full)
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise DataError(
            f"{label} fails its check: {report.problems[0]}{more}; `hpcinv verify {root}` lists every "
            "problem, `hpcinv generate --verify full` with its config recomputes bad shards"
        )
    return manifest
