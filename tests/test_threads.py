"""hpcinv.threads.ahead: an iterator run ahead in a background thread."""

import threading
import time

import pytest

from hpcinv.threads import ahead


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_items_arrive_in_order_and_an_error_at_its_item():
    def items():
        yield 1
        yield 2
        raise ValueError("item 3 is bad")

    it = ahead(items, 2, "t-order")
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(ValueError, match="item 3 is bad"):
        next(it)
    assert list(ahead(lambda: range(5), 1, "t-range")) == [0, 1, 2, 3, 4]


def test_closing_stops_the_thread_and_closes_the_iterator_in_it():
    closed_in = []

    def items():
        try:
            yield from range(1000)
        finally:
            closed_in.append(threading.current_thread().name)

    it = ahead(items, 1, "t-close")
    assert next(it) == 0
    it.close()
    assert closed_in == ["t-close"] and not _threads("t-close")


def test_without_wait_closing_returns_while_the_current_item_is_computed():
    started = threading.Event()

    def items():
        yield 0
        started.set()
        time.sleep(1.0)  # a long item: e.g. a shard being modelled
        yield 1

    it = ahead(items, 1, "t-nowait", wait=False)
    assert next(it) == 0
    started.wait(5)
    t0 = time.monotonic()
    it.close()
    assert time.monotonic() - t0 < 0.5
    for t in _threads("t-nowait"):  # it ends on its own once the item is done
        t.join(5)
    assert not _threads("t-nowait")
