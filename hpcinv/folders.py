"""What a folder is: every folder hpcinv writes records its kind and identity, and every command
checks them before it writes into, resumes, ``--restart``\\ s or reads a folder.

A folder's record is ``hpcinv.json``, written atomically when the folder is created::

    {"hpcinv_folder": 1, "kind": "dataset", "made_by": "hpcinv generate",
     "identity": "<sha256 of what decides the contents>", "created": "2026-12-07 10:00:00", "version": "0.1.0"}

The kinds, and the command that makes each:

============  ========================  ==================================================================
kind          made by                   identity
============  ========================  ==================================================================
dataset       ``hpcinv generate``       the config hash (a generated sample is a pure function of it)
imported      ``hpcinv import-gathers`` the config hash and the sha256 of the imported gathers
predictions   ``hpcinv predict``        the hash of the request (checkpoint sha256, dataset, samples)
refined       ``hpcinv refine``         the hash of the request (start, dataset, samples, bounds, settings)
run           ``hpcinv train``          the hash of the config without the settings that may change on resume
report        ``hpcinv evaluate``       the hash of the inputs and settings
quickstart    ``hpcinv quickstart``     (its parts are a dataset, a run and a report of their own)
============  ========================  ==================================================================

The rules every command follows (:func:`claim` for an output, :func:`require` for an input):

* a command writes only into a folder that does not exist, is empty, or is of the kind it makes;
  ``--restart`` and resume discard or continue only a folder of that kind. Anything else is refused
  with one line naming what the folder is, and nothing is touched;
* an input must be of a kind the command reads (``--data`` a dataset, ``--init`` a run or a velocity
  store, ...), and no output may be one of the command's inputs, or lie inside or around one
  (:func:`distinct`).

Folders written before these records existed are recognised by their contents (a manifest's format,
a run's checkpoints, a report's metrics) and get their record when the command that made them
resumes them.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hpcinv.errors import HpcinvError
from hpcinv.fileio import TMP_INFIX, atomic_write_text

RECORD = "hpcinv.json"
RECORD_VERSION = 1
LOCK = ".lock"  # the folder's lock file (hpcinv.store.lock): present in any folder a command has locked


@dataclass(frozen=True)
class Kind:
    command: str  # the hpcinv command that makes it
    noun: str  # what it is, in words


KINDS = {
    "dataset": Kind("generate", "a dataset"),
    "imported": Kind("import-gathers", "a dataset of imported gathers"),
    "predictions": Kind("predict", "a velocity store of network predictions"),
    "refined": Kind("refine", "a velocity store of refined models"),
    "run": Kind("train", "a training run"),
    "report": Kind("evaluate", "an evaluation report"),
    "quickstart": Kind("quickstart", "a quickstart folder (dataset, run and report)"),
}
DATASETS = ("dataset", "imported")
STORES = ("predictions", "refined")
# what a folder can be besides one of KINDS
ABSENT, EMPTY, FILE, FOREIGN = "absent", "empty", "file", "foreign"


@dataclass(frozen=True)
class Folder:
    """What :func:`inspect` found at ``path``: one of :data:`KINDS`, or absent / empty / file / foreign."""

    path: Path
    kind: str
    identity: str | None = None
    recorded: bool = False  # the kind comes from hpcinv.json (else from the folder's contents)

    @property
    def is_hpcinv(self) -> bool:
        return self.kind in KINDS

    def describe(self) -> str:
        """e.g. "'runs/p' is a velocity store of network predictions made by `hpcinv predict`"."""
        where = repr(str(self.path))
        if self.kind in KINDS:
            kind = KINDS[self.kind]
            return f"{where} is {kind.noun} made by `hpcinv {kind.command}`"
        return {
            ABSENT: f"{where} does not exist",
            EMPTY: f"{where} is an empty folder",
            FILE: f"{where} is a file, not a folder",
            FOREIGN: f"{where} is a folder that hpcinv did not make",
        }[self.kind]


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _contents(path: Path) -> set[str]:
    """Names in the folder, without its lock and the temporaries of writers (a killed writer's or a
    concurrent part's)."""
    return {p.name for p in path.iterdir() if p.name != LOCK and TMP_INFIX not in p.name}


def _shard_holds_gathers(path: Path) -> bool | None:
    """Whether the first shard under ``path/shards`` holds gathers (a dataset) or not (a velocity store)."""
    try:
        import h5py

        first = min((path / "shards").glob("shard-*.h5"))
        with h5py.File(first, "r") as fh:
            return "gathers" in fh
    except (ValueError, OSError):
        return None


def _infer(path: Path, names: set[str]) -> str:
    """The kind of a folder without a record (made before records existed), from its contents."""
    manifest = _json(path / "manifest.json")
    if isinstance(manifest, dict):
        fmt = manifest.get("format")
        if fmt == "hpcinv-dataset":
            return "imported" if manifest.get("has_velocity") is False else "dataset"
        if fmt == "hpcinv-velocities":
            return {"prediction": "predictions", "refined": "refined"}.get(str(manifest.get("kind")), FOREIGN)
    if "refine.yaml" in names or "summary.json" in names:
        return "refined"
    if names & {"events.jsonl", "result.json"} or any(n.startswith("checkpoint_epoch") for n in names):
        return "run"
    if names & {"metrics.json", "metrics.md"}:
        return "report"
    if {"dataset", "run", "report"} <= names:
        return "quickstart"
    if "config.yaml" in names and names <= {"config.yaml", "manifest.json", "shards"}:
        return "dataset"  # a dataset killed before its first manifest, or whose manifest is damaged
    if "shards" in names and names <= {"manifest.json", "shards"}:
        holds = _shard_holds_gathers(path)
        if holds is not None:
            return "dataset" if holds else "predictions"
    return FOREIGN


def inspect(path: str | os.PathLike) -> Folder:
    """What ``path`` is (reads only). A damaged ``hpcinv.json`` is one line naming it."""
    path = Path(path)
    if not path.exists():
        return Folder(path, ABSENT)
    if not path.is_dir():
        return Folder(path, FILE)
    try:
        names = _contents(path)
    except OSError as exc:
        raise HpcinvError(f"cannot list {str(path)!r}: {exc.strerror or exc}") from None
    if RECORD in names:
        record = _json(path / RECORD)
        if (
            not isinstance(record, dict)
            or record.get("kind") not in KINDS
            or not isinstance(record.get("hpcinv_folder"), int)
        ):
            raise HpcinvError(
                f"{str(path / RECORD)!r} is damaged (it should name the folder's kind, one of {sorted(KINDS)}); "
                "hpcinv will not write into or read a folder it cannot identify"
            )
        if record["hpcinv_folder"] > RECORD_VERSION:
            raise HpcinvError(
                f"{str(path)!r} was made by a newer hpcinv (folder record version {record['hpcinv_folder']}, "
                f"this one reads {RECORD_VERSION}); upgrade hpcinv"
            )
        identity = record.get("identity")
        return Folder(path, record["kind"], identity if isinstance(identity, str) else None, recorded=True)
    if not names or (names == {"shards"} and (path / "shards").is_dir() and not any((path / "shards").iterdir())):
        return Folder(path, EMPTY)  # (a writer killed after making its shard folder, before anything else)
    return Folder(path, _infer(path, names))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hpcinv")
    except PackageNotFoundError:
        return "unknown"


def mark(path: str | os.PathLike, kind: str, identity: str | None = None) -> None:
    """Record ``path``'s kind and identity (the caller made the folder, or holds it for writing).

    Written atomically, and only when it changes: a folder keeps its creation time across resumes."""
    path = Path(path)
    old = _json(path / RECORD)
    if isinstance(old, dict) and old.get("kind") == kind and old.get("identity") == identity:
        return
    record = {
        "hpcinv_folder": RECORD_VERSION,
        "kind": kind,
        "made_by": f"hpcinv {KINDS[kind].command}",
        "identity": identity,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": socket.gethostname(),
        "version": _version(),
    }
    atomic_write_text(path / RECORD, json.dumps(record, indent=1) + "\n")


def claim(path: str | os.PathLike, kind: str, *, what: str = "--out") -> Folder:
    """Read-only check that ``kind``'s command may write into ``path``: it does not exist, is empty, or
    is a folder of ``kind`` (whose identity decides, in the command, between resume and --restart).
    Anything else is refused with one line, whatever --restart says."""
    found = inspect(path)
    if found.kind in (ABSENT, EMPTY, kind):
        return found
    command = KINDS[kind].command
    if found.kind == FOREIGN:
        raise HpcinvError(
            f"{what} {str(found.path)!r} is a non-empty folder that hpcinv did not make; `hpcinv {command}` "
            f"writes only into a new or empty folder or {KINDS[kind].noun} of its own; choose another {what}"
        )
    raise HpcinvError(
        f"{what} {found.describe()}; `hpcinv {command}` writes only {KINDS[kind].noun} and never touches "
        f"another kind of folder (not with --restart either); choose another {what}"
    )


def _nouns(kinds: tuple[str, ...]) -> str:
    made = [f"{KINDS[k].noun} (`hpcinv {KINDS[k].command}`)" for k in kinds]
    return made[0] if len(made) == 1 else ", ".join(made[:-1]) + " or " + made[-1]


def require(path: str | os.PathLike, kinds: tuple[str, ...], *, what: str) -> Folder:
    """An input folder of one of ``kinds``, or one line naming what it is and what ``what`` takes."""
    found = inspect(path)
    if found.kind in kinds:
        return found
    if found.kind == ABSENT:
        raise HpcinvError(f"{what} {str(found.path)!r} does not exist; give {_nouns(kinds)}")
    raise HpcinvError(f"{what} {found.describe()}, not {_nouns(kinds)}")


def distinct(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None], *, what: str = "--out") -> None:
    """``out`` is none of ``inputs`` (name -> path), nor a folder inside or around one: a command must
    never write into, or discard, what it reads."""
    mine = Path(out).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        theirs = Path(path).resolve()
        if mine == theirs or mine in theirs.parents or theirs in mine.parents:
            relation = "is" if mine == theirs else "lies inside" if theirs in mine.parents else "holds"
            raise HpcinvError(
                f"{what} {str(out)!r} {relation} {name} {str(path)!r}, which this command reads; choose another {what}"
            )
