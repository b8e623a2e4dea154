"""Atomic file writes: a reader sees the old file, or the complete new one, never a partial one.

Every writer in hpcinv (configs, manifests, shards, checkpoints, reports) goes through
:func:`atomic_path`: it yields a temporary name in the destination's folder (``.NAME.tmp-PID``), and
when the caller's block succeeds the file (or folder) is fsynced and renamed into place and the
folder entry fsynced; when it fails the temporary is removed. An ``OSError`` such as a full disk
becomes one :class:`~hpcinv.errors.HpcinvError` line that names the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hpcinv.errors import HpcinvError

TMP_INFIX = ".tmp-"


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}")


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file's data, or a folder's entries."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            _fsync_tree(child)
    fsync_path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def write_error(path: str | os.PathLike, exc: OSError) -> HpcinvError:
    """One clear line for a failed write; a full disk says so and how to go on."""
    text = str(exc)
    if exc.errno == errno.ENOSPC or "No space left" in text or "errno = 28" in text:
        return HpcinvError(
            f"disk full: cannot write {str(path)!r} (No space left on device); free space on that "
            "filesystem (df -h) and re-run the same command to continue"
        )
    reason = exc.strerror or (text.splitlines()[0] if text else type(exc).__name__)
    return HpcinvError(f"cannot write {str(path)!r}: {reason}")


@contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    folder: bool = False,
    replace: bool = True,
    before_publish: Callable[[], object] | None = None,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success publish it there atomically.

    ``folder=True`` creates the temporary as a directory (e.g. a checkpoint folder) and replaces an
    existing folder at ``path``: the old one is renamed aside, the new one renamed in, and only then
    the old one removed (if the second rename fails, the old one is put back). ``replace=False``
    refuses to publish over anything that appeared at ``path`` meanwhile. ``before_publish`` runs just
    before publishing (a last check that ``path`` may still be replaced; raising stops it).
    """
    path = Path(path)
    tmp = tmp_name(path)
    aside = path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}-old")
    _remove(tmp)
    try:
        if folder:
            tmp.mkdir(parents=False)
        yield tmp
        _fsync_tree(tmp)
        if before_publish is not None:
            before_publish()
        if (path.exists() or path.is_symlink()) and not replace:
            raise HpcinvError(f"{str(path)!r} appeared while it was being made; nothing was written over it")
        if folder and path.is_dir() and not path.is_symlink():
            os.replace(path, aside)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(aside, path)
                raise
            _remove(aside)
        else:
            os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        _remove(tmp)


@contextmanager
def parents_made(path: str | os.PathLike) -> Iterator[None]:
    """Create the missing parent folders of ``path`` for the block; if the block fails, those of them
    still empty are removed again (a refused or failed command leaves no empty folder behind)."""
    missing, parent = [], Path(path).absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        for folder in reversed(missing):
            folder.mkdir()
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield
    except BaseException:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp + fsync + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# The last few JSON files parsed, by file (device, inode): (size, mtime, ctime) when parsed -> the object.
# Every writer replaces a file by renaming a new one into place (a new inode), so a file that changed is
# never mistaken for the one parsed, whatever path it is named by.
_PARSED: dict[tuple[int, int], tuple[tuple[int, int, int], object]] = {}
PARSED_KEPT = 8


def read_json_cached(path: str | os.PathLike) -> object:
    """``json.loads`` of ``path``, parsed once per process while the file stays the same: a start-up
    reads one dataset's manifest (megabytes at 10k shards) from several places. The object is shared:
    callers must not change it. Raises what reading and ``json.loads`` raise."""
    path = Path(path)
    st = path.stat()
    file, key = (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _PARSED.get(file)
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed = json.loads(path.read_bytes().decode("utf-8"))
    _PARSED.pop(file, None)
    while len(_PARSED) >= PARSED_KEPT:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[file] = (key, parsed)
    return parsed
