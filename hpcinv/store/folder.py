"""Opening the output folder of a store for a new or resumed run: a dataset (``generate``) or a
velocity store (``predict``, ``refine``).

Each kind has a read-only check (run before anything is started or written: a folder of another kind
is refused whatever ``restart`` says (:func:`hpcinv.folders.claim`); one of the same kind holding the
output of another config or request is refused, naming the difference, unless ``restart``) and an
open (the caller holds the folder's lock) that creates or reopens the folder, records its kind and
identity (:func:`hpcinv.folders.mark`) and returns the manifest to continue;
:class:`~hpcinv.store.writer.StoreWriter` takes it from there.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from hpcinv.config import DataConfig, config_difference, config_hash, load_config, save_config, tree_difference
from hpcinv.errors import HpcinvError
from hpcinv.folders import LAYOUT, STORE_KINDS, claim, mark
from hpcinv.store.manifest import CONFIG, MANIFEST, read_manifest
from hpcinv.store.shard import FORMAT_VERSION, SHARD_DIR
from hpcinv.store.velocities import read_store_manifest

log = logging.getLogger(__name__)


def _inspect_dataset(cfg: DataConfig, out: Path) -> tuple[str | None, dict | None]:
    """(why ``out``'s dataset cannot be continued with ``cfg``, or None; its manifest, or None when
    there is none or it is damaged -- then it is rebuilt from the shards if ``config.yaml`` agrees)."""
    disk_cfg, manifest = None, None
    if (out / CONFIG).exists():
        try:
            disk_cfg = load_config(DataConfig, out / CONFIG)
        except HpcinvError as exc:
            return f"its {CONFIG} is unreadable ({exc})", None
    if (out / MANIFEST).exists():
        with contextlib.suppress(HpcinvError):  # damaged: open says so, the writer rebuilds it from the shards
            manifest = read_manifest(out)
        if manifest is not None:
            if manifest["format_version"] != FORMAT_VERSION:
                return (
                    f"it was written by an older hpcinv (dataset format {manifest['format_version']}, this one "
                    f"writes {FORMAT_VERSION}); it can be read but not extended"
                ), manifest
            if disk_cfg is None:
                return f"it has a {MANIFEST} but no {CONFIG}", manifest
            if config_hash(disk_cfg) != manifest["config_hash"]:
                return (
                    f"its {CONFIG} (hash {config_hash(disk_cfg)[:12]}) and {MANIFEST} (hash "
                    f"{manifest['config_hash'][:12]}) disagree: two different runs wrote into it"
                ), manifest
    if disk_cfg is not None and config_hash(disk_cfg) != config_hash(cfg):
        return (
            f"it holds a dataset made with a different config: {config_difference(disk_cfg, cfg, ignore='execution')}",
            manifest,
        )
    return None, manifest


def check_dataset_folder(cfg: DataConfig, out: str | Path, *, restart: bool = False) -> tuple[bool, dict | None]:
    """Read-only check that ``out`` may receive ``cfg``'s dataset: (whether an old dataset must be
    discarded (``restart``), the manifest to continue or None)."""
    out = Path(out)
    claim(out, "dataset")  # a folder of another kind is never touched, not even with --restart
    if (out / CONFIG).exists() or (out / MANIFEST).exists():
        problem, manifest = _inspect_dataset(cfg, out)
        if problem is None:
            return False, manifest
        if not restart:
            raise HpcinvError(
                f"{str(out)!r}: {problem}; use another --out, the same config, or --restart to discard it"
            )
        return True, None
    return False, None


def open_dataset_folder(cfg: DataConfig, out: str | Path, *, restart: bool = False) -> dict | None:
    """Create ``out`` for ``cfg``'s dataset (its config, written atomically, then the shard folder), or
    reopen it; the manifest to continue (None: a new one). Safe when several parts of one dataset start
    at once. The caller holds ``out``'s lock."""
    out = Path(out)
    discard, manifest = check_dataset_folder(cfg, out, restart=restart)
    if discard:
        log.warning("discarding the dataset in %s (--restart)", out)
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
        for name in (MANIFEST, CONFIG):
            (out / name).unlink(missing_ok=True)
    elif manifest is None and (out / MANIFEST).exists():
        log.warning("%s is damaged; rebuilding it from the shards on disk", out / MANIFEST)
    out.mkdir(parents=True, exist_ok=True)
    mark(out, "dataset", config_hash(cfg))
    if not (out / CONFIG).exists():
        save_config(cfg, out / CONFIG)
    (out / SHARD_DIR).mkdir(exist_ok=True)
    return manifest


def _request_difference(old: dict, new: dict) -> str:
    """The settings of two store requests that differ, in words (or the parts of the manifests that do,
    for a store written before manifests recorded their request)."""
    a, b = old.get("request"), new.get("request")
    if not isinstance(a, dict) or not isinstance(b, dict):
        differs = [k for k in ("kind", "dataset", "source") if old.get(k) != new.get(k)]
        return f"its {' and '.join(differs) or 'settings'} differ"
    return tree_difference(a, b, width=24)


def check_store_folder(
    out: Path, new: dict, *, restart: bool = False, command: str, owner: Path | None = None
) -> dict | None:
    """Read-only: the manifest to continue in ``out`` (None: start afresh). A folder of another kind is
    refused whatever ``restart`` says; a store of this kind made by another request (its
    ``config_hash`` differs) is refused, naming the settings that differ, unless ``restart``. A store
    without a manifest yet (killed before writing one) is continued: its shards are adopted if they
    carry this request's hash."""
    claim(out, STORE_KINDS[new["kind"]], owner=owner)
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
        raise HpcinvError(
            f"{str(out)!r} holds the output of another `hpcinv {command}` ({_request_difference(old, new)}); use "
            "another --out, the same command, or --restart to discard it"
        )
    return None


def open_store_folder(out: Path, new: dict, *, restart: bool = False, command: str, owner: Path | None = None) -> dict:
    """Create or reopen ``out`` (the caller holds its lock); the manifest to continue. ``owner``: the
    store whose part ``out`` is (a refine's start)."""
    old = check_store_folder(out, new, restart=restart, command=command, owner=owner)
    if old is None and (out / MANIFEST).exists():
        log.warning("discarding the store in %s (--restart)", out)
        kind = STORE_KINDS[new["kind"]]
        for child in out.iterdir():
            if child.name in LAYOUT[kind]:  # what the store made; anything else put there stays
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    mark(out, STORE_KINDS[new["kind"]], new["config_hash"])
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    return old or dict(new)
