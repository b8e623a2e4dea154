"""Reader processes that fill a fixed ring of shared-memory batch buffers, handed back after use.

torch's DataLoader sends every batch out of a worker in a fresh shared-memory segment: the kernel
allocates and zeroes its pages each time, and for paper-size float16 batches that alone holds a worker
to about 150 samples/s (``benchmarks/loader.py``, ``torch_dataloader_floor``) before it reads a byte. Here
the buffers ("slots") are allocated once, before the readers start:

* the consumer sends ``(sequence, slot, positions)`` tasks to a shared task queue, as long as it
  has free slots (``workers * depth`` batches in flight, plus the one it holds);
* a reader process reads the batch straight into the slot (:meth:`ShardedDataset.read_batch` with
  ``out=``) and answers ``(sequence, slot, count, error)``;
* :meth:`BatchReaders.epoch` yields the slots' views in the order asked, and a slot goes back to the
  free list when the consumer asks for the next batch -- so whoever iterates must be done with a batch
  (copied it to the device, normalised it into new tensors) before taking the next, as
  :class:`~hpcinv.feed.device.DeviceFeed` is.

With ``workers=0`` the calling thread reads into one reused slot. On a CUDA node the slots are
page-locked in place (``cudaHostRegister``), so the feed's non-blocking copies are asynchronous without
the extra pinning copy a DataLoader makes. A damaged sample raises :class:`DataError` at its batch; a
reader process that dies raises a clear error instead of hanging the epoch.
"""

from __future__ import annotations

import os
import queue
import signal
import time
import traceback
import weakref
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.multiprocessing as mp

from hpcinv.errors import DataError
from hpcinv.feed.batches import gathers_only_error
from hpcinv.feed.pinning import page_lock, unlock

POLL_S = 0.5  # how often a waiting consumer checks that its readers are alive, and a reader its parent


def shared_empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised tensor allocated in shared memory (``share_memory_()`` on an empty tensor would
    allocate twice and copy)."""
    kind = torch.from_numpy(np.empty(0, dtype)).dtype
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * dtype.itemsize)
    return torch.empty(0, dtype=kind).set_(storage, 0, shape, torch.empty(shape, device="meta").stride())


def _read_loop(ds, slots, tasks, results, parent: int) -> None:
    """A reader process: read each task's positions into its slot until told to stop (or orphaned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    torch.set_num_threads(1)
    arrays = [(g.numpy(), v.numpy()) for g, v in slots]
    while True:
        try:
            task = tasks.get(timeout=POLL_S)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if task is None:
            return
        seq, slot, positions = task
        n, error = len(positions), None
        g, v = arrays[slot]
        try:
            ds.read_batch(positions, out=(g[:n], v[:n]))
        except DataError as exc:
            error = ("data", DataError.message_of(exc))
        except Exception:  # anything else is a bug or a broken node: the whole traceback travels
            error = ("other", traceback.format_exc())
        results.put((seq, slot, n, error))


def _stop(live: dict) -> None:
    """Stop the reader processes of ``live`` and unlock its slots (``live`` is emptied)."""
    procs, queues = live.pop("procs", []), live.pop("queues", ())
    if queues:
        tasks = queues[0]
        for _ in procs:
            tasks.put(None)
        for q in queues:  # what is still unsent must not hold up this process's exit
            q.cancel_join_thread()
    deadline = time.monotonic() + 5
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
    unlock(live.pop("registered", []))


class BatchReaders:
    """Whole raw batches ``(gathers_BSTR as stored, velocity_BZX float32)`` of a dataset, read ahead by
    ``workers`` processes into ``workers * depth + 1`` reused shared-memory slots (one in-process slot
    when ``workers`` is 0). The processes start at the first epoch and live until :meth:`close`."""

    def __init__(self, ds, batch_size: int, workers: int = 1, depth: int = 2, pin: bool = False):
        if not getattr(ds, "has_velocity", True):
            raise gathers_only_error(getattr(ds, "root", "?"))
        if batch_size < 1 or workers < 0 or depth < 1:
            raise ValueError(f"batch_size {batch_size} and depth {depth} must be >= 1 and workers {workers} >= 0")
        self.ds, self.batch_size, self.workers, self.depth = ds, batch_size, workers, depth
        alloc = shared_empty if workers else (lambda shape, dtype: torch.from_numpy(np.empty(shape, dtype)))
        n_slots = workers * depth + 1 if workers else 1
        self.slots = [ds.batch_arrays(batch_size, alloc) for _ in range(n_slots)]
        # what must be undone -- reader processes, page-locked slots -- by close(), garbage collection or exit
        self._live: dict = {}
        self.pin, self.pinned = pin, False
        self._procs: list = []
        self._reading = False
        self._finalizer = weakref.finalize(self, _stop, self._live)

    def _pin(self) -> None:
        """Page-lock every slot in place for asynchronous copies to a GPU (nothing where CUDA is not).
        Done after the reader processes are forked: CUDA may keep page-locked ranges out of a child."""
        if not self.pin or self.pinned or not torch.cuda.is_available():
            return
        self._live["registered"] = page_lock(
            (t for pair in self.slots for t in pair),
            f"the {len(self.slots)} batch buffers",
            "lower data.loader_workers, data.prefetch_factor or train.batch_size",
        )
        self.pinned = True

    def start(self) -> None:
        """Start the reader processes and page-lock the slots (else done at the first epoch): the training
        loop calls it during setup, where a failure stops every rank at once with its message."""
        if self._procs or not self.workers:
            self._pin()
            return
        ctx = mp.get_context("fork")  # the readers share the dataset object as it is, and know their parent
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        self._procs = [
            ctx.Process(
                target=_read_loop,
                args=(self.ds, self.slots, self._tasks, self._results, os.getpid()),
                name=f"hpcinv-reader-{k}",
                daemon=True,
            )
            for k in range(self.workers)
        ]
        for p in self._procs:
            p.start()
        self._live.update(procs=self._procs, queues=(self._tasks, self._results))
        self._pin()

    def close(self) -> None:
        """Stop the reader processes (a later epoch starts new ones) and unlock the slots."""
        _stop(self._live)
        self._procs = []
        self.pinned = False

    def _result(self, deadline: float | None = None) -> tuple:
        while True:
            try:
                return self._results.get(timeout=POLL_S)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("batch readers did not answer in time: stopped") from None
                dead = [p for p in self._procs if p.exitcode is not None]
                if dead:
                    codes = ", ".join(f"{p.name} exit code {p.exitcode}" for p in dead)
                    self.close()
                    raise RuntimeError(
                        f"a batch reader process died ({codes}; a negative code is the signal that killed "
                        "it, -9 often the kernel's out-of-memory killer): lower data.loader_workers or "
                        "data.prefetch_factor, or train.batch_size"
                    ) from None

    def epoch(self, order: Iterable[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``batch_size`` positions of ``order`` (the last may be short), in that order."""
        if self._reading:
            raise RuntimeError("BatchReaders gives one epoch at a time: close the previous epoch's iterator first")
        positions = [int(p) for p in order]
        batches = [positions[i : i + self.batch_size] for i in range(0, len(positions), self.batch_size)]
        self._reading = True
        try:
            yield from (self._from_readers(batches) if self.workers else self._in_process(batches))
        finally:
            self._reading = False

    def _in_process(self, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._pin()
        g, v = self.slots[0]
        arrays = (g.numpy(), v.numpy())
        for batch in batches:
            n = len(batch)
            self.ds.read_batch(batch, out=(arrays[0][:n], arrays[1][:n]))
            yield g[:n], v[:n]

    def _from_readers(self, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.start()
        free, ready, sent, in_flight = list(range(len(self.slots))), {}, 0, 0
        try:
            for seq in range(len(batches)):
                while free and sent < len(batches):
                    self._tasks.put((sent, free.pop(), batches[sent]))
                    sent, in_flight = sent + 1, in_flight + 1
                while seq not in ready:
                    got, slot, n, error = self._result()
                    in_flight -= 1
                    ready[got] = (slot, n, error)
                slot, n, error = ready.pop(seq)
                if error is not None:
                    free.append(slot)
                    kind, message = error
                    raise DataError(message) if kind == "data" else RuntimeError(f"a batch reader failed:\n{message}")
                g, v = self.slots[slot]
                yield g[:n], v[:n]
                free.append(slot)  # the consumer asked for the next batch: it is done with this one
        finally:
            # an epoch left early (an error, a closed generator) waits for its batches still being read,
            # so the next epoch starts with every slot free and no stale answer in the queue (or, if the
            # readers do not answer within a minute, stops them: the next epoch starts new ones)
            deadline = time.monotonic() + 60
            while in_flight and self._procs:
                try:
                    self._result(deadline)
                except RuntimeError:
                    break
                in_flight -= 1
