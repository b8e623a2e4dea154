"""Run an iterator ahead of its consumer in a background thread (the device feed, the modelling loop)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import TypeVar

T = TypeVar("T")
_END = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def ahead(items: Callable[[], Iterable[T]], depth: int, name: str, wait: bool = True) -> Generator[T, None, None]:
    """Yield ``items()``'s items, computed by a thread named ``name`` at most ``depth`` items ahead.

    ``items()`` is called, iterated and closed in that thread. An exception it raises is raised here,
    at the item where it happened. Closing this generator tells the thread to stop after the item it is
    computing (close it explicitly, e.g. with ``contextlib.closing``: leaving a ``for`` loop does not);
    with ``wait`` it also waits for that, so the iterator is closed when this returns, else the thread
    finishes on its own (a daemon).
    """
    slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        """Hand ``item`` over unless the consumer has left (then False)."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        it = None
        try:
            it = iter(items())
            while not stop.is_set():
                try:
                    item = next(it)
                except StopIteration:
                    break
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Raised(exc))
            return
        finally:
            getattr(it, "close", lambda: None)()
        put(_END)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        if wait:
            worker.join()
