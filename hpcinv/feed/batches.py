"""Whole batches of samples as stored, for the training input path.

At GPU rates (hundreds of paper-size samples per second per GPU) nothing may touch a sample one at a
time in Python: a batch is read from disk in one HDF5 call per shard (:meth:`ShardedDataset.read_batch`)
or gathered from a rank's cache in one ``index_select``, and travels in the stored dtype (float16
gathers: half the bytes of float32) to the device, where :mod:`hpcinv.feed.device` converts and
normalises it.

* :class:`RawBatches` -- whole batches read in the calling thread (validation, tests); training reads
  ahead in reader processes (:class:`~hpcinv.feed.readers.BatchReaders`).
* :class:`RawCache` -- ``data.cache=memory``: a rank's samples in one contiguous tensor each for gathers
  (stored dtype) and velocities, on the GPU when they take at most ``gpu_fraction`` of its memory and
  fit in what is free, else in pinned host memory (plain host memory on CPU), refused with the sizes
  named when the host has not that much memory available.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch.utils.data import Dataset

from hpcinv.errors import DataError, HpcinvError
from hpcinv.feed.pinning import page_lock, unlock

# the host cache may take at most this share of the memory the kernel reports available
HOST_CACHE_SHARE = 0.8
# what a rank whose cache does not fit in host memory (or cannot be page-locked there) can change
CACHE_ADVICE = "set data.cache=none (read from disk), or train on more nodes so each rank holds fewer samples"


def gathers_only_error(root) -> DataError:
    return DataError(
        f"dataset {str(root)!r} holds gathers only (no true velocities): it can be predicted, refined "
        "and scored by data misfit, not trained on"
    )


class RawBatches(Dataset):
    """Item = a list of dataset positions -> ``(gathers_BSTR as stored, velocity_BZX float32)`` tensors."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, positions) -> tuple[torch.Tensor, torch.Tensor]:
        if not getattr(self.ds, "has_velocity", True):
            raise gathers_only_error(getattr(self.ds, "root", "?"))
        gathers, vel = self.ds.read_batch(positions)
        assert vel is not None
        return torch.from_numpy(gathers), torch.from_numpy(vel)

    def close(self) -> None:
        self.ds.close()


def available_host_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), else free pages."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cache_place(
    nbytes: int, device: torch.device, gpu_fraction: float, ranks_on_node: int = 1, available: int | None = None
) -> str:
    """Where a cache of ``nbytes`` goes: "device" (GPU memory), "pinned" or "host" -- or a clear error.
    The node's available memory (``available``: read before any rank of the node allocated its cache,
    else now) is shared by its ``ranks_on_node`` ranks."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        if nbytes <= gpu_fraction * total and nbytes < free:
            return "device"
    available = available_host_bytes() if available is None else available
    share = HOST_CACHE_SHARE * available / max(1, ranks_on_node)
    if nbytes > share:
        per = f", shared by {ranks_on_node} ranks on this node" if ranks_on_node > 1 else ""
        raise HpcinvError(
            f"data.cache=memory needs {nbytes / 2**30:.2f} GiB for this rank's samples, but this node has "
            f"{available / 2**30:.2f} GiB available (at most {HOST_CACHE_SHARE:.0%} of it may be used{per}: "
            f"{share / 2**30:.2f} GiB per rank): {CACHE_ADVICE}"
        )
    return "pinned" if device.type == "cuda" else "host"


class RawCache:
    """This rank's samples, read once, as stored; ``take(positions)`` gathers a batch in one call.

    In "pinned" placement the host tensors are page-locked in place (exactly their size; see
    :mod:`hpcinv.feed.pinning`) and unlocked when the cache is collected."""

    def __init__(
        self,
        ds,
        positions,
        device: torch.device,
        gpu_fraction: float = 0.3,
        chunk: int = 32,
        ranks_on_node: int = 1,
        host_available: int | None = None,
    ):
        positions = np.unique(np.asarray(positions, dtype=np.int64))
        probe_g, probe_v = ds.read_batch(positions[:1])
        if probe_v is None:
            raise gathers_only_error(getattr(ds, "root", "?"))
        g_shape, v_shape = probe_g.shape[1:], probe_v.shape[1:]
        g_dtype = getattr(torch, str(probe_g.dtype))
        per_sample = probe_g[0].nbytes + probe_v[0].nbytes
        self.place = cache_place(per_sample * len(positions), device, gpu_fraction, ranks_on_node, host_available)
        where = device if self.place == "device" else torch.device("cpu")
        self.gathers = torch.empty((len(positions), *g_shape), dtype=g_dtype, device=where)
        self.velocity = torch.empty((len(positions), *v_shape), dtype=torch.float32, device=where)
        if self.place == "pinned":
            locked = page_lock((self.gathers, self.velocity), "the rank's sample cache", CACHE_ADVICE)
            weakref.finalize(self, unlock, locked)
        for start in range(0, len(positions), chunk):
            g, v = ds.read_batch(positions[start : start + chunk])
            self.gathers[start : start + len(g)].copy_(torch.from_numpy(g))
            self.velocity[start : start + len(v)].copy_(torch.from_numpy(v))
        if self.place == "device":  # the feed reads on its own stream: let nothing of the fill be pending
            torch.cuda.synchronize(device)
        self.row_of = np.full(len(ds), -1, dtype=np.int64)
        self.row_of[positions] = np.arange(len(positions))
        self.nbytes = per_sample * len(positions)

    @property
    def device(self) -> torch.device:
        return self.gathers.device

    def take(self, positions, out: tuple[torch.Tensor, torch.Tensor] | None = None):
        found = self.row_of[np.asarray(positions, dtype=np.int64)]
        if (found < 0).any():
            raise IndexError(f"positions {np.asarray(positions)[found < 0].tolist()} are not in this rank's cache")
        rows = torch.from_numpy(found).to(self.device)
        if out is None:
            return self.gathers.index_select(0, rows), self.velocity.index_select(0, rows)
        g, v = out
        n = len(rows)
        torch.index_select(self.gathers, 0, rows, out=g[:n])
        torch.index_select(self.velocity, 0, rows, out=v[:n])
        return g[:n], v[:n]
