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
field         ``hpcinv field-report``   (none: a report on recorded data, replaced whole when made again)
quickstart    ``hpcinv quickstart``     (its parts are a dataset, a run, a report and a refine store of their own)
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
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hpcinv.errors import HpcinvError
from hpcinv.fileio import TMP_INFIX, atomic_write_text, read_json_cached

RECORD = "hpcinv.json"
RECORD_VERSION = 1

# The layout of every kind of folder, named once here (the modules that write them import these):
LOCK = ".lock"  # the folder's lock (hpcinv.store.lock): in any folder a command has locked
MANIFEST, CONFIG, SHARD_DIR = "manifest.json", "config.yaml", "shards"  # datasets and velocity stores
DATASET_FORMAT, STORE_FORMAT = "hpcinv-dataset", "hpcinv-velocities"  # a manifest's "format"
STORE_KINDS = {"prediction": "predictions", "refined": "refined"}  # a store manifest's "kind" -> the folder's
EVENTS, RESULT, CHECKPOINT_PREFIX = "events.jsonl", "result.json", "checkpoint_epoch"  # runs
REFINE_CONFIG, REFINE_SUMMARY, START, FIGURES = "refine.yaml", "summary.json", "start", "figures"  # refine stores
METRICS_JSON, METRICS_MD = "metrics.json", "metrics.md"  # reports
# what each kind of folder holds besides its record: a folder without a record (made before records
# existed) is taken for that kind only when it holds nothing else
LAYOUT = {
    "dataset": {CONFIG, MANIFEST, SHARD_DIR},
    "imported": {CONFIG, MANIFEST, SHARD_DIR},
    "predictions": {MANIFEST, SHARD_DIR},
    "refined": {MANIFEST, SHARD_DIR, START, REFINE_CONFIG, REFINE_SUMMARY, FIGURES},
    "report": {METRICS_JSON, METRICS_MD, FIGURES, "README.md", "timings.json"},
    "field": {"field.json", FIGURES, "README.md"},
    "quickstart": {"dataset", "run", "report", "refine"},
}
QUICKSTART_PARTS = {"dataset": "dataset", "run": "run", "report": "report", "refine": "refined"}  # name: kind


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
    "field": Kind("field-report", "a field-data report"),
    "quickstart": Kind("quickstart", "a quickstart folder (dataset, run, report and refined models)"),
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
        return read_json_cached(path)  # a manifest is parsed once per process (read only here)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


TEMPORARY = re.compile(r"\..+" + re.escape(TMP_INFIX) + r"\d+(-old)?")  # a writer's: .NAME.tmp-PID


def _contents(path: Path) -> set[str]:
    """Names in the folder, without its lock and hpcinv writers' temporaries (``.NAME.tmp-PID``: a
    killed writer's, or a concurrent part's)."""
    return {p.name for p in path.iterdir() if p.name != LOCK and not TEMPORARY.fullmatch(p.name)}


def _shard_kind(path: Path) -> str:
    """The kind the first of a folder's hpcinv shards shows (it names its range and config hash):
    gathers and velocities (a dataset), gathers only (imported), velocities only (a store; refined when
    it holds misfit histories), or foreign."""
    try:
        import h5py

        first = min((path / SHARD_DIR).glob("shard-*.h5"))
        with h5py.File(first, "r") as fh:
            held, attrs = set(fh), set(fh.attrs)
    except (ValueError, OSError):
        return FOREIGN
    if not {"start", "stop", "config_hash"} <= attrs or "index" not in held:
        return FOREIGN
    if "gathers" in held:
        return "dataset" if "velocity" in held else "imported"
    if "velocity" in held:
        return "refined" if "misfit_history" in held else "predictions"
    return FOREIGN


def _config_kind(path: Path) -> str:
    """A run's or a dataset's config.yaml, told apart by its top-level sections."""
    try:
        import yaml

        keys = set(yaml.safe_load((path / CONFIG).read_text()) or {})
    except (OSError, ValueError, TypeError, AttributeError):
        return FOREIGN
    if keys and keys <= {"model", "data", "train", "scaling", "tracking"}:
        return "run"
    return "dataset" if keys and keys <= {"grid", "velocity", "survey", "modelling", "dataset"} else FOREIGN


def _is_run(path: Path, names: set[str]) -> bool:
    """Nothing but what a run holds, and the evidence of one: a checkpoint, an event, or its config."""
    allowed = {CONFIG, RESULT, "wandb", ".validate_storage_marker"}
    if not all(n in allowed or n.startswith((CHECKPOINT_PREFIX, "events")) for n in names):
        return False
    events = path / EVENTS
    first = events.read_text(errors="replace").split("\n", 1)[0] if events.is_file() else ""
    return (
        any((path / n / "state.pt").is_file() for n in names if n.startswith(CHECKPOINT_PREFIX))
        or (isinstance(_json_text(first), dict) and "event" in first)
        or (CONFIG in names and _config_kind(path) == "run")
    )


def _json_text(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _is_report(path: Path, names: set[str]) -> bool:
    """Nothing but what a report holds, and metrics.json with one row per input."""
    rows = _json(path / METRICS_JSON)
    return names <= LAYOUT["report"] and isinstance(rows, dict) and all(isinstance(r, dict) for r in rows.values())


def _infer(path: Path, names: set[str]) -> str:
    """The kind of a folder without a record (made before records existed), from its contents: only
    when they show hpcinv made it (a manifest of its formats, its shards, a run's checkpoints or events,
    a report's metrics) and it holds nothing else; anything else is foreign (never written into)."""
    manifest = _json(path / MANIFEST) if MANIFEST in names else None
    if isinstance(manifest, dict) and manifest.get("format") == DATASET_FORMAT:
        kind = "imported" if manifest.get("has_velocity") is False else "dataset"
    elif isinstance(manifest, dict) and manifest.get("format") == STORE_FORMAT:
        kind = STORE_KINDS.get(str(manifest.get("kind")), FOREIGN)
    elif isinstance(manifest, dict) or (MANIFEST in names and not (path / SHARD_DIR).is_dir()):
        return FOREIGN  # someone else's manifest.json
    elif SHARD_DIR in names:
        kind = _shard_kind(path)  # a manifest that is missing or damaged: the shards tell
        if kind == FOREIGN and CONFIG in names and not any((path / SHARD_DIR).glob("shard-*.h5")):
            kind = _config_kind(path)  # a dataset stopped before its first shard
    elif names & {EVENTS, RESULT, CONFIG} or any(n.startswith(CHECKPOINT_PREFIX) for n in names):
        return (
            "run"
            if _is_run(path, names)
            else ("dataset" if names == {CONFIG} and _config_kind(path) == "dataset" else FOREIGN)
        )
    elif METRICS_JSON in names:
        return "report" if _is_report(path, names) else FOREIGN
    elif "dataset" in names and names <= LAYOUT["quickstart"]:  # its parts made (or begun) by their stages
        parts = all(inspect(path / n).kind in (QUICKSTART_PARTS[n], EMPTY) for n in names)
        return "quickstart" if parts else FOREIGN
    else:
        return FOREIGN
    if kind in ("dataset", "imported") and CONFIG not in names and manifest is None:
        return FOREIGN
    return kind if kind in LAYOUT and names <= LAYOUT[kind] else FOREIGN


def inspect(path: str | os.PathLike) -> Folder:
    """What ``path`` is (reads only). A damaged ``hpcinv.json``, or one that names another kind than the
    folder's contents show, is one line naming it."""
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
        shown = _infer(path, names - {RECORD}) if names - {RECORD} else EMPTY
        if shown in KINDS and shown != record["kind"]:
            raise HpcinvError(
                f"{str(path / RECORD)!r} says the folder is {KINDS[record['kind']].noun}, but it holds "
                f"{KINDS[shown].noun}; hpcinv will not write into or read a folder whose record contradicts it"
            )
        identity = record.get("identity")
        return Folder(path, record["kind"], identity if isinstance(identity, str) else None, recorded=True)
    if not names or (names == {SHARD_DIR} and (path / SHARD_DIR).is_dir() and not any((path / SHARD_DIR).iterdir())):
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


WHOLE = (
    *STORES,
    "report",
    "field",
)  # kinds whose folders are discarded or replaced whole (nothing inside them survives)


def claim(path: str | os.PathLike, kind: str, *, what: str = "--out", owner: str | os.PathLike | None = None) -> Folder:
    """Read-only check that ``kind``'s command may write into ``path``: it does not exist, is empty, or
    is a folder of ``kind`` (whose identity decides, in the command, between resume and --restart), and
    it lies inside no velocity store or report (those are discarded or replaced whole) other than
    ``owner`` (the store a refine writes its start into). Anything else is refused with one line,
    whatever --restart says."""
    for parent in Path(path).absolute().parents:
        if owner is not None and parent.resolve() == Path(owner).resolve():
            break
        if (parent / RECORD).is_file() or (parent / MANIFEST).is_file():
            around = inspect(parent)
            if around.kind in WHOLE:
                raise HpcinvError(
                    f"{what} {str(path)!r} lies inside {around.describe().split(' is ', 1)[1]} ({str(parent)!r}), "
                    "which is discarded or replaced whole; choose another place"
                )
    found = inspect(path)
    if found.kind == kind and kind in ("report", "field"):
        extra = sorted(_contents(found.path) - {RECORD} - LAYOUT[kind])
        if extra:  # a report is replaced whole: nothing else may be in it
            raise HpcinvError(
                f"{what} {str(found.path)!r} is {KINDS[kind].noun}, but it also holds {', '.join(extra[:3])}, which "
                f"replacing it would delete; move them out, or choose another {what}"
            )
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
    """``out`` is none of ``inputs`` (name -> path), does not hold one, and lies inside none that is
    discarded or replaced whole (a velocity store, a report): a command must never write into, or
    discard, what it reads. (An output inside a run or a dataset is fine: nothing removes it.)"""
    mine = Path(out).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        theirs = Path(path).resolve()
        inside = theirs in mine.parents and inspect(theirs).kind in WHOLE
        if mine == theirs or mine in theirs.parents or inside:
            relation = "is" if mine == theirs else "lies inside" if theirs in mine.parents else "holds"
            raise HpcinvError(
                f"{what} {str(out)!r} {relation} {name} {str(path)!r}, which this command reads; choose another {what}"
            )
