"""Opening the output folder of a velocity store (``predict``, ``refine``) for a new or resumed run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hpcinv.errors import HpcinvError
from hpcinv.store.lock import LOCK
from hpcinv.store.manifest import MANIFEST
from hpcinv.store.shard import SHARD_DIR
from hpcinv.store.velocities import read_store_manifest

log = logging.getLogger(__name__)


def check_store_folder(
    out: Path, new: dict, *, restart: bool = False, command: str, known: tuple[str, ...] = ()
) -> dict | None:
    """Read-only: the manifest to continue in ``out`` (None: start afresh). A store made by another
    request (its ``config_hash`` differs) is refused, naming what differs, unless ``restart``. A folder
    without a manifest may hold only the shard folder and the ``known`` files a run writes (its shards
    are then adopted if they carry this request's hash)."""
    if out.exists() and not out.is_dir():
        raise HpcinvError(f"--out {str(out)!r} exists and is not a folder")
    if (out / MANIFEST).exists():
        try:
            old = read_store_manifest(out)
        except HpcinvError as exc:
            if restart:
                return None
            raise HpcinvError(f"{exc}; use another --out, or --restart to discard it") from None
        if old["config_hash"] == new["config_hash"]:
            return old
        if restart:
            return None
        differs = [k for k in ("kind", "dataset", "source") if old.get(k) != new.get(k)]
        what = " and ".join(differs) or "settings"
        raise HpcinvError(
            f"{str(out)!r} holds the output of another `hpcinv {command}` (its {what} differ); use "
            "another --out, the same command, or --restart to discard it"
        )
    if out.is_dir() and any(p.name not in (LOCK, SHARD_DIR, *known) for p in out.iterdir()):
        raise HpcinvError(f"--out {str(out)!r} is a non-empty folder that is not an hpcinv velocity store")
    return None


def open_store_folder(
    out: Path, new: dict, *, restart: bool = False, command: str, known: tuple[str, ...] = ()
) -> dict:
    """Create or reopen ``out`` (the caller holds its lock); the manifest to continue."""
    old = check_store_folder(out, new, restart=restart, command=command, known=known)
    if old is None and (out / MANIFEST).exists():
        log.warning("discarding the store in %s (--restart)", out)
        for child in out.iterdir():
            if child.name != LOCK:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    return old or dict(new)
