"""Shard work shared by ``generate``, ``predict`` and ``refine``: resume and record.

Every stage that writes a sharded store works the same way: the store is cut into
:class:`~hpcinv.store.ShardSpec` s; each shard is written atomically by whoever computes it (this
process or a Ray actor); only the driver writes the manifest. :func:`resume_shards` decides what a
re-run must compute: shards recorded in the manifest whose size and sha256 match are kept, complete
shard files a killed driver had not recorded yet are adopted (after checking their range and config
hash), anything else is recomputed. :func:`record_shards` consumes the records of finished shards
and rewrites the manifest at bounded intervals, so a killed driver loses at most the bookkeeping of
the last few seconds, never a shard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hpcinv.store.manifest import write_manifest
from hpcinv.store.shard import SHARD_DIR, ShardSpec, file_sha256, read_shard_record

log = logging.getLogger(__name__)

MANIFEST_INTERVAL_S = 2.0  # at most one manifest rewrite per interval while shards complete

# Runs the given shards and yields their records as they complete (in any order).
Executor = Callable[[list[ShardSpec]], Iterator[dict]]


def remove_stale(out: Path, specs: list[ShardSpec]) -> None:
    """Temporary files of ``specs`` left by a killed writer (only these: another part may be writing)."""
    for spec in specs:
        for stale in (out / SHARD_DIR).glob(f".{spec.name}.tmp-*"):
            stale.unlink(missing_ok=True)


def resume_shards(
    out: Path,
    specs: list[ShardSpec],
    recorded: list[dict],
    config_hash: str,
    index_of: Callable[[ShardSpec], np.ndarray] | None = None,
) -> tuple[list[dict], list[ShardSpec], int]:
    """(records kept, specs to compute, shards adopted) for ``specs`` in store ``out``.

    ``index_of(spec)``: the sample indices a shard must hold (default: its range)."""
    by_name = {r["name"]: r for r in recorded}
    kept, todo, adopted = [], [], 0
    for spec in specs:
        path = out / SHARD_DIR / spec.name
        rec = by_name.get(spec.name)
        if rec and path.is_file() and path.stat().st_size == rec["bytes"] and file_sha256(path) == rec["sha256"]:
            kept.append(rec)
            continue
        if path.is_file():
            try:
                kept.append(read_shard_record(path, spec, config_hash, None if index_of is None else index_of(spec)))
                adopted += not rec
                continue
            except ValueError as exc:
                log.warning("recomputing %s: %s", spec.name, exc)
                path.unlink()
        todo.append(spec)
    return kept, todo, adopted


def record_shards(
    out: Path,
    manifest: dict,
    records: Iterable[dict],
    *,
    total: int,
    desc: str,
    progress: bool = True,
    write: bool = True,
) -> int:
    """Add each finished shard's record to ``manifest`` (rewritten at most every
    ``MANIFEST_INTERVAL_S``, and at the end) with a progress bar over ``total`` samples; returns the
    samples recorded. ``write=False``: only count (a part of an array job leaves the manifest alone)."""
    bar = tqdm(total=total, unit="sample", desc=desc, disable=not progress, dynamic_ncols=True)
    done, last_write, unsaved = 0, time.monotonic(), 0
    try:
        for rec in records:
            bar.update(rec["stop"] - rec["start"])
            done += rec["stop"] - rec["start"]
            if not write:
                continue
            manifest["shards"].append(rec)
            unsaved += 1
            # Rewriting a manifest of thousands of shards after each one would cost O(n²) bytes; a shard
            # finished but not yet recorded is adopted on resume (its file describes itself).
            if time.monotonic() - last_write >= MANIFEST_INTERVAL_S:
                write_manifest(out, manifest)
                last_write, unsaved = time.monotonic(), 0
    finally:
        if unsaved:
            write_manifest(out, manifest)
        bar.close()
    return done
