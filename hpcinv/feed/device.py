"""The training input path: stored batches onto the device, converted and normalised there, ahead of time.

A background thread pulls whole raw batches (float16 gathers as stored; from the reader processes of
:class:`~hpcinv.feed.readers.BatchReaders`, or from a rank's :class:`~hpcinv.feed.batches.RawCache`),
copies them to the device with non-blocking copies from pinned memory on a side CUDA stream, converts them to float32
and normalises them there, and keeps ``depth`` batches ready. The training thread only waits on an
event: no per-sample Python, no CPU normalisation, no collate or pinning copy in the step.

On CPU the same thread reads and normalises ahead (the step overlaps the next batch's read).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from typing import Any

import torch

from hpcinv.errors import DataError
from hpcinv.feed.batches import RawCache
from hpcinv.feed.normalise import Normaliser
from hpcinv.threads import ahead

_DONE = object()  # the end of a source (which may yield anything else)


def normalised(
    gathers: torch.Tensor, velocity: torch.Tensor, norm: Normaliser, device: torch.device, non_blocking: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw batch on ``device`` as the network sees it: float32 gathers_BSTR and target_B1ZX, normalised.

    Always new tensors: the raw batch may be a reader's buffer, refilled once the next batch is asked for
    (a float32 batch on the CPU with no normalisation would otherwise come back as a view of it)."""
    g = norm.gathers_fwd(gathers.to(device, non_blocking=non_blocking).float())
    v = norm.velocity_fwd(velocity.to(device, non_blocking=non_blocking).float())
    g = g.clone() if g.data_ptr() == gathers.data_ptr() else g
    v = v.clone() if v.data_ptr() == velocity.data_ptr() else v
    return g, v[:, None]


def batches_of(order: Iterable[int], batch_size: int) -> Iterator[list[int]]:
    batch = []
    for position in order:
        batch.append(int(position))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def cache_batches(cache: RawCache, order: Iterable[int], batch_size: int, pinned_ring: int = 0):
    """Batches gathered from ``cache``; into ``pinned_ring`` reused pinned buffers when the cache is in
    pinned host memory (so the device copy is asynchronous)."""
    if not pinned_ring or cache.place != "pinned":
        for positions in batches_of(order, batch_size):
            yield cache.take(positions)
        return
    ring = [
        (
            torch.empty((batch_size, *cache.gathers.shape[1:]), dtype=cache.gathers.dtype, pin_memory=True),
            torch.empty((batch_size, *cache.velocity.shape[1:]), dtype=cache.velocity.dtype, pin_memory=True),
        )
        for _ in range(pinned_ring)
    ]
    for k, positions in enumerate(batches_of(order, batch_size)):
        yield cache.take(positions, out=ring[k % pinned_ring])


class DeviceFeed:
    """Iterate ``(gathers, target)`` device batches, normalised, prepared ``depth`` batches ahead.

    ``source`` yields raw ``(gathers, velocity)`` CPU (or device) tensors. A :class:`DataError` raised by
    the source is raised by the iterator at the batch where it happened. The background thread waits
    for each batch's copy and normalisation (on the side stream) before it takes the next from the
    source, so a source may refill its pinned buffers as soon as it is asked for the next batch; the
    training thread receives finished device tensors and never waits on the copy.
    """

    def __init__(self, norm: Normaliser, device: torch.device, depth: int = 2):
        self.cuda = device.type == "cuda"
        if self.cuda and device.index is None:  # the feed's thread must name the GPU: its own starts on GPU 0
            device = torch.device("cuda", torch.cuda.current_device())
        self.norm, self.device, self.depth = norm, device, max(1, depth)
        self.stream = torch.cuda.Stream(device) if self.cuda else None

    def prepare(self, gathers: torch.Tensor, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One raw batch on the device, normalised; on a GPU copied and converted on the side stream, and
        waited for, so the source may refill its buffer as soon as it is asked for the next batch."""
        if not self.cuda:
            return normalised(gathers, velocity, self.norm, self.device)
        with torch.cuda.stream(self.stream):
            item = normalised(gathers, velocity, self.norm, self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        done.synchronize()
        return item

    def __call__(self, source: Iterable) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
        def prepared():
            if self.cuda:  # a new thread starts on GPU 0: work (and page-lock reader buffers) on this rank's
                torch.cuda.set_device(self.device)
            batches = iter(source)
            try:
                while True:
                    # a source on the GPU (the rank cache) gathers on the side stream too, so the copy and
                    # normalisation below see its result without waiting for the training step's stream
                    with torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext():
                        raw: Any = next(batches, _DONE)  # a batch (gathers, velocity), or _DONE
                    if raw is _DONE:
                        return
                    yield self.prepare(*raw)
            finally:
                getattr(batches, "close", lambda: None)()  # a reader's epoch ends here, in the feed's thread

        try:
            with closing(ahead(prepared, self.depth, "hpcinv-feed")) as items:
                for item in items:
                    if self.cuda:  # the tensors were made on the side stream: tell the allocator who uses them
                        for t in item:
                            t.record_stream(torch.cuda.current_stream(self.device))
                    yield item
        except DataError as exc:
            raise DataError(DataError.message_of(exc)) from exc
