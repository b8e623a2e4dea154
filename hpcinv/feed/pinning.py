"""Page-locking host tensors in place, for asynchronous copies to a GPU.

``torch.empty(..., pin_memory=True)`` goes through torch's caching host allocator, which rounds each
request up to a power of two: a 20 GiB rank cache would lock 32 GiB of a node's memory that cannot be
swapped. Memory allocated plainly and registered with ``cudaHostRegister`` locks exactly its size, and
works on buffers shared with reader processes too. Registration is "portable" (flag 1, as torch's own
helper does), so the memory counts as pinned for every GPU of the process, not only the current one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from hpcinv.errors import HpcinvError

PORTABLE = 1  # cudaHostRegisterPortable


def page_lock(tensors: Iterable[torch.Tensor], what: str, advice: str) -> list[int]:
    """Register every (contiguous, CPU) tensor with CUDA; the pointers to pass to :func:`unlock`.

    A failed registration undoes the others and raises, naming the size asked for and ``advice`` (what
    the user can change). The failed call also leaves its error in the CUDA runtime's per-thread slot,
    where the next kernel launch would report it as its own: it is read out here first."""
    cudart, done = torch.cuda.cudart(), list[int]()
    tensors = list(tensors)
    for t in tensors:
        result = cudart.cudaHostRegister(t.data_ptr(), t.numel() * t.element_size(), PORTABLE)
        if int(result) != 0:
            _drop_cuda_error()
            unlock(done)
            total = sum(x.numel() * x.element_size() for x in tensors)
            raise HpcinvError(
                f"page-locking {what} ({total / 2**30:.2f} GiB) for copies to the GPU failed with CUDA error "
                f"{int(result)} ({cudart.cudaGetErrorString(result)}): {advice}"
            )
        done.append(t.data_ptr())
    return done


def _drop_cuda_error() -> None:
    """Read the runtime's pending error out (the launch check of a one-element kernel reads and resets it)."""
    with contextlib.suppress(RuntimeError):
        torch.zeros(1, device="cuda")


def unlock(pointers: list[int]) -> None:
    """Undo :func:`page_lock` (each pointer once; the list is emptied)."""
    if pointers and torch.cuda.is_available():
        cudart = torch.cuda.cudart()
        for ptr in pointers:
            cudart.cudaHostUnregister(ptr)
    pointers.clear()
