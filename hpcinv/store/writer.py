"""The writing side of a sharded store (a dataset, predictions, refined models): resume and record.

Every stage that writes a sharded store works the same way: the store is cut into
:class:`~hpcinv.store.ShardSpec` s; each shard is written atomically by whoever computes it (this
process or a Ray actor); one :class:`StoreWriter`, in the driver, owns the manifest's
read/adopt/write cycle:

* on open it removes the temporary files of killed writers, keeps the recorded shards whose files are
  unchanged since they were recorded -- one ``stat`` each: size, mtime and ctime as recorded, so a
  resume costs time in proportion to the manifest, not to the bytes (``verify="full"``, or a record
  without times, checks the sha256 instead) --, adopts complete shard files a killed driver had not
  recorded yet (after checking their range and config hash), and lists everything else as to do.
  (A shard damaged in place without a change of its times is still caught when it is read: every
  sample carries its own checksum; docs/FORMAT.md says what is checked when);
* :meth:`StoreWriter.record` consumes the records of finished shards and rewrites the manifest at
  most every ``MANIFEST_INTERVAL_S`` (and at the end), so a killed driver loses at most the
  bookkeeping of the last seconds, never a shard;
* :meth:`StoreWriter.finish` says whether the store is complete.

The part of an array job (``write=False``) computes its shards and leaves the manifest alone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hpcinv.errors import HpcinvError
from hpcinv.fileio import TMP_INFIX, atomic_write_text
from hpcinv.store.manifest import write_manifest
from hpcinv.store.shard import (
    SHARD_DIR,
    ShardSpec,
    file_sha256,
    file_times,
    read_shard_record,
    unchanged_since_recorded,
)

log = logging.getLogger(__name__)

MANIFEST_INTERVAL_S = 2.0  # at most one manifest rewrite per interval while shards complete

# Runs the given shards and yields their records as they complete (in any order).
Executor = Callable[[list[ShardSpec]], Iterator[dict]]


def remove_stale(out: Path, specs: list[ShardSpec]) -> None:
    """Temporary files of ``specs`` left by a killed writer (only these: another part may be writing);
    one listing of the shard folder, whatever the number of shards."""
    names = {spec.name for spec in specs}
    try:
        entries = list(os.scandir(out / SHARD_DIR))
    except FileNotFoundError:
        return
    for entry in entries:
        name, _, _ = entry.name.partition(TMP_INFIX)
        if entry.name.startswith(".") and TMP_INFIX in entry.name and name[1:] in names:
            Path(entry.path).unlink(missing_ok=True)


def resume_shards(
    out: Path,
    specs: list[ShardSpec],
    recorded: list[dict],
    config_hash: str,
    index_of: Callable[[ShardSpec], np.ndarray] | None = None,
    *,
    full: bool = False,
) -> tuple[list[dict], list[ShardSpec], int]:
    """(records kept, specs to compute, shards adopted) for ``specs`` in store ``out``.

    ``index_of(spec)``: the sample indices a shard must hold (default: its range). A recorded shard is
    kept by one ``stat`` when its file is unchanged since it was recorded; otherwise (``full``: always)
    by its sha256, and then its record takes the file's times (a copied store is hashed once)."""
    by_name = {r["name"]: r for r in recorded}
    kept, todo, adopted = [], [], 0
    for spec in specs:
        path = out / SHARD_DIR / spec.name
        rec = by_name.get(spec.name)
        if rec and not full and unchanged_since_recorded(path, rec):
            kept.append(rec)
            continue
        if rec and path.is_file() and path.stat().st_size == rec["bytes"] and file_sha256(path) == rec["sha256"]:
            kept.append(rec | file_times(path))
            continue
        if rec and path.is_file():  # recorded, but not these bytes: damaged or replaced
            log.warning("recomputing %s: its size or sha256 differs from the manifest's record", spec.name)
            path.unlink()
        elif path.is_file():  # finished by a writer whose driver died before recording it
            try:
                kept.append(read_shard_record(path, spec, config_hash, None if index_of is None else index_of(spec)))
                adopted += 1
                continue
            except ValueError as exc:
                log.warning("recomputing %s: %s", spec.name, exc)
                path.unlink()
        todo.append(spec)
    return kept, todo, adopted


def part_records_path(out: Path, part: tuple[int, int]) -> Path:
    """Where part ``(i, k)`` of an array job keeps the records of its shards (beside them)."""
    return out / SHARD_DIR / f"part-{part[0]:04d}-of-{part[1]:04d}.json"


def read_part_records(out: Path) -> list[dict]:
    """The shard records the parts of an array job left (a damaged file is ignored: its shards are
    then adopted the slow way, by reading them)."""
    records: list[dict] = []
    try:
        files = sorted((out / SHARD_DIR).glob("part-*-of-*.json"))
    except OSError:
        return records
    for path in files:
        try:
            found = json.loads(path.read_text())
            records.extend(r for r in found if isinstance(r, dict) and isinstance(r.get("name"), str))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring %s (%s): its shards are checked by reading them", path.name, exc)
    return records


class StoreWriter:
    """The manifest of the store in ``out`` (its folder open, its lock held by the caller) while
    ``specs`` are computed: resumed on construction, then recorded shard by shard.

    ``manifest``: the store's manifest as read (or a new one); its shard records are re-checked
    against the files (``full``: by their sha256 even when unchanged). ``index_of``: the sample indices
    each shard must hold (default: its range). ``write=False`` (``part`` (i, k) of an array job): the
    manifest is left alone; the part keeps its shards' records in a file of its own beside them
    (:func:`part_records_path`), which a requeued part and the final run resume from by one ``stat``
    per shard, as from a manifest (the final run removes these files once the manifest is complete)."""

    def __init__(
        self,
        out: Path,
        manifest: dict,
        specs: list[ShardSpec],
        *,
        index_of: Callable[[ShardSpec], np.ndarray] | None = None,
        write: bool = True,
        full: bool = False,
        part: tuple[int, int] | None = None,
    ):
        self.out, self.write, self.part = Path(out), write, part
        remove_stale(self.out, specs)
        listed = {r["name"] for r in manifest["shards"]}
        recorded = manifest["shards"] + [r for r in read_part_records(self.out) if r["name"] not in listed]
        kept, self.todo, self.adopted = resume_shards(
            self.out, specs, recorded, manifest["config_hash"], index_of, full=full
        )
        self.skipped = len(kept)
        if self.adopted:
            log.info("adopted %d complete shard files the manifest did not list yet", self.adopted)
        self.manifest = manifest | {"shards": kept}
        if write:
            self.manifest = write_manifest(self.out, self.manifest)
        elif part is not None:
            self._write_part()

    def _write_part(self) -> None:
        assert self.part is not None
        atomic_write_text(part_records_path(self.out, self.part), json.dumps(self.manifest["shards"]))

    def record(self, records: Iterable[dict], *, desc: str, progress: bool = True) -> int:
        """Add each finished shard's record (rewriting the manifest at most every ``MANIFEST_INTERVAL_S``,
        and at the end) with a progress bar over the samples to do; returns the samples recorded."""
        total = sum(s.size for s in self.todo)
        bar = tqdm(total=total, unit="sample", desc=desc, disable=not progress, dynamic_ncols=True)
        done, last_write, unsaved, finished, write_s = 0, time.monotonic(), 0, set(), 0.0
        try:
            for rec in records:
                finished.add(rec["name"])
                bar.update(rec["stop"] - rec["start"])
                done += rec["stop"] - rec["start"]
                self.manifest["shards"].append(rec)
                unsaved += 1
                if not self.write:
                    continue
                # Rewriting a manifest of thousands of shards after each one would cost O(n²) bytes; a
                # shard finished but not yet recorded is adopted on resume (its file describes itself).
                # The interval grows with the cost of a write, so rewriting stays under 5 % of the time.
                if time.monotonic() - last_write >= max(MANIFEST_INTERVAL_S, 20 * write_s):
                    t0 = time.monotonic()
                    self.manifest = write_manifest(self.out, self.manifest)
                    last_write, unsaved = time.monotonic(), 0
                    write_s = last_write - t0
        except BaseException:
            # stop the writers of the shards not finished (an executor's generator stops its actors when
            # closed), then remove their temp files
            close = getattr(records, "close", None)
            if close is not None:
                close()
            remove_stale(self.out, [s for s in self.todo if s.name not in finished])
            raise
        finally:
            if unsaved and self.write:
                self.manifest = write_manifest(self.out, self.manifest)
            elif unsaved and self.part is not None:
                self._write_part()
            bar.close()
        return done

    def run(self, executor: Executor, *, desc: str, progress: bool = True) -> int:
        """Compute the shards to do through ``executor`` and record them."""
        return self.record(executor(self.todo), desc=desc, progress=progress)

    def finish(self, what: str, unit: str = "samples") -> dict:
        """The final manifest; one line naming what is missing when the store is not complete."""
        if self.write and self.manifest["complete"]:
            for path in (self.out / SHARD_DIR).glob("part-*-of-*.json"):  # recorded in the manifest now
                path.unlink(missing_ok=True)
        if self.write and not self.manifest["complete"]:
            raise HpcinvError(
                f"{what} ended with {self.manifest['samples_written']} of {self.manifest['n_samples']} {unit}"
            )
        return self.manifest
