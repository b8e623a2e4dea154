"""One writer per folder: an OS-level advisory lock (``flock``) on ``FOLDER/.lock``.

``generate`` holds a dataset folder exclusively for its whole run (a second ``generate`` or a
``--restart`` on the same folder is refused with one line naming the holder); the parts of an array
job (``generate --part i/K``) hold it *shared*, so they run together but never beside a whole-dataset
run; ``train`` and ``evaluate`` hold their datasets shared while they read, so a dataset cannot be
discarded under them, and ``train`` holds its run folder exclusively.

The kernel releases a ``flock`` when its holder dies, even by SIGKILL, so there are no stale locks.
The holder writes its host, pid and command into the lock file for the message others see. On NFS,
Linux clients map ``flock`` onto NFS byte-range locks (lockd / NFSv4), which work across nodes;
Lustre needs the ``flock`` mount option (without it, ``flock`` fails with ENOSYS, reported as such).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpcinv.errors import HpcinvError, LockedError
from hpcinv.folders import LOCK


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True


def _holder(fd: int) -> str:
    """Who holds the lock, as far as the lock file tells: it describes its last exclusive holder (readers,
    holding it shared, leave the file as it is). That process may hold it still, or a reader may: when
    the described process is gone (on this host), only "a reader" is said."""
    try:
        raw = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        info = json.loads(raw)
        if info["host"] == socket.gethostname() and not _alive(int(info["pid"])):
            return "another hpcinv process that reads it"
        return f"{info['command']!r} (pid {info['pid']} on {info['host']}, since {info['since']}) or a reader"
    except (OSError, ValueError, KeyError, TypeError):
        return "another hpcinv process"


def _describe_self(shared: bool) -> bytes:
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "shared": shared,
            "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:300],
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    ).encode()


@contextmanager
def folder_lock(
    folder: str | os.PathLike, *, shared: bool = False, what: str = "dataset", create: bool = True
) -> Iterator[None]:
    """Hold ``folder``'s lock for the block, or raise :class:`LockedError` naming the holder.

    ``create``: make ``folder`` if it does not exist (a folder this call made and that holds nothing
    but the lock file afterwards is removed again, so a refused or failed run leaves nothing). A
    reader (``create=False``) of a folder it may not write to goes on without a lock.
    """
    folder = Path(folder)
    made = False
    if not folder.exists() and create:
        try:
            folder.mkdir(parents=True)
            made = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise HpcinvError(f"cannot create {str(folder)!r}: {exc.strerror or exc}") from None
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if create:
            raise HpcinvError(f"cannot create the lock file {str(path)!r}; is the folder writable?") from None
        try:  # a read-only dataset: a shared lock still works if the file exists
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield
            return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(
                    f"{what} folder {str(folder)!r} is in use by {_holder(fd)}; wait for it to "
                    "finish or stop it, or use another folder"
                ) from None
            raise HpcinvError(
                f"cannot lock {str(path)!r}: {exc.strerror or exc} (on Lustre, mount with -o flock)"
            ) from None
        if not shared:  # a reader leaves the folder as it found it
            try:
                info = _describe_self(shared)
                os.ftruncate(fd, 0)
                os.pwrite(fd, info, 0)
            except OSError:
                pass  # the holder's description is a courtesy; a read-only lock file still locks
        yield
    finally:
        os.close(fd)  # releases the lock
        if made:
            try:
                if [p.name for p in folder.iterdir()] == [LOCK]:
                    path.unlink()
                    folder.rmdir()
            except OSError:
                pass
