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
    at the item where it happened. Closing this generator (or leaving a ``for`` loop over it early)
    tells the thread to stop after the item it is computing; with ``wait`` it also waits for that, so
    the iterator is closed when this returns, else the thread finishes on its own (daemon).
    """
    slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        it = None
        try:
            it = iter(items())
            for item in it:
                if stop.is_set():
                    return
                slots.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(_Raised(exc))
            return
        finally:
            getattr(it, "close", lambda: None)()
        slots.put(_END)

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
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                if not wait:
                    break
                worker.join(timeout=0.05)
