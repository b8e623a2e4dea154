"""The dataset manifest (``manifest.json``) and ``verify``.

The manifest is the only index of a dataset: shards, sample ranges, checksums, the config hash and
merged statistics. Only the generation driver writes it, atomically, as shards complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hpcinv.config import DataConfig, HpcinvError, atomic_write_text, config_hash, load_config
from hpcinv.store.shard import FORMAT_VERSION, SHARD_DIR, file_sha256, plan_shards
from hpcinv.store.stats import RunningStats

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
FORMAT_NAME = "hpcinv-dataset"


def read_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise HpcinvError(f"{str(root)!r} is not an hpcinv dataset: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HpcinvError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise HpcinvError(f"{path}: not a {FORMAT_NAME} v{FORMAT_VERSION} manifest")
    return manifest


def write_manifest(root: str | os.PathLike, manifest: dict) -> None:
    shards = sorted(manifest["shards"], key=lambda r: r["start"])
    stats = {}
    for key in ("velocity", "gathers"):
        merged = RunningStats()
        for rec in shards:
            merged = merged.merge(RunningStats.from_dict(rec["stats"][key]))
        stats[key] = merged.to_dict()
    done = sum(r["stop"] - r["start"] for r in shards)
    manifest = {**manifest, "shards": shards, "stats": stats, "samples_written": done,
                "complete": done == manifest["n_samples"]}
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest, indent=1))


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


def verify_dataset(root: str | os.PathLike, *, checksums: bool = True) -> VerifyReport:
    """Check manifest, config hash and every planned shard: present, full size, checksum, contents."""
    root = Path(root)
    report = VerifyReport(str(root))
    try:
        manifest = read_manifest(root)
    except HpcinvError as exc:
        report.problems.append(str(exc))
        return report
    try:
        if config_hash(load_dataset_config(root)) != manifest["config_hash"]:
            report.problems.append(f"{CONFIG}: does not match the manifest's config hash")
    except HpcinvError as exc:
        report.problems.append(f"{CONFIG}: {exc}")
    records = {r["name"]: r for r in manifest["shards"]}
    shapes = {"velocity": tuple(manifest["velocity_shape"]), "gathers": tuple(manifest["gathers_shape"])}
    for spec in plan_shards(manifest["n_samples"], manifest["shard_size"]):
        path = root / SHARD_DIR / spec.name
        rec = records.get(spec.name)
        if rec is None:
            report.problems.append(f"{spec.name}: missing from the manifest (samples {spec.start}..{spec.stop - 1})")
            continue
        if not path.is_file():
            report.problems.append(f"{spec.name}: file missing (samples {spec.start}..{spec.stop - 1})")
            continue
        size = path.stat().st_size
        if size != rec["bytes"]:
            report.problems.append(f"{spec.name}: truncated or resized: {size} bytes, manifest says {rec['bytes']}")
            continue
        if checksums and file_sha256(path) != rec["sha256"]:
            report.problems.append(f"{spec.name}: corrupted: sha256 differs from the manifest")
            continue
        try:
            with h5py.File(path, "r") as fh:
                index = fh["index"][:]
                bad_shape = [k for k, s in shapes.items() if fh[k].shape != (spec.size, *s)]
        except Exception as exc:
            report.problems.append(f"{spec.name}: unreadable HDF5 ({exc})")
            continue
        if not np.array_equal(index, np.arange(spec.start, spec.stop)):
            report.problems.append(f"{spec.name}: index does not hold samples {spec.start}..{spec.stop - 1}")
        elif bad_shape:
            report.problems.append(f"{spec.name}: wrong shape for {', '.join(bad_shape)}")
        else:
            report.shards_ok += 1
            report.samples_ok += spec.size
    return report
