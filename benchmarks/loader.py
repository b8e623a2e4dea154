"""Data-feed benchmark: samples/s and MB/s of the sharded HDF5 loader at the FCNVMB paper shape.

Writes a dataset of random paper-size samples (29 x 400 x 301 gathers) in float16 and float32 to a
temporary folder (the loader does not care about physics), drops it from the page cache where
possible, and reads one epoch per variant:

* ``per_sample``: the earlier input path, kept here for comparison -- a DataLoader over
  ``ShardedDataset.__getitem__`` (one HDF5 read, float32 conversion and normalisation per sample on
  the CPU, then collate);
* ``batched``: the training input path -- reader processes that read a whole batch each into reused
  shared-memory buffers (``BatchReaders``, one HDF5 read per shard touched), converted and normalised
  a batch at a time by ``DeviceFeed`` (here on the CPU; on a GPU it is done there);
* ``random`` vs ``shard_aware`` order (a plain ``DistributedSampler`` vs hpcinv's ``ShardAwareSampler``);
* reader (or loader worker) counts 0, 1, 2; and the rank cache (``RawCache``, the stored dtype) for a
  dataset that fits;
* ``host_side`` (float16, paper size: what a GPU rank's host must deliver): raw batches of the training
  input path without the normalisation (which runs on the GPU there) -- from the rank cache
  (``RawCache`` gathered per batch) and from page-cached shards (``BatchReaders`` with 0, 1, 2 reader
  processes) -- against a plain memory copy of the same bytes, measured in the same run, best of
  ``--repeats``; beside them torch's DataLoader with 1 and 2 workers reading the same batches straight
  into fresh shared memory (what the training path used before), and the floor of that path (fresh
  shared-memory batches written in a worker, nothing read); with the goals (cache >= 0.5 x memcpy and
  >= 400 samples/s, page-cached shards >= 150 samples/s per reader process);
* ``checksum_cost``: the same epoch (shard-aware, 0 and 2 workers) of the same samples written with
  and without the per-sample checksums of dataset format 2 (checked on every read), read alternately,
  best of ``--repeats`` each: the price of detecting a damaged sample on read.

    python benchmarks/loader.py [--samples 64] [--shard-size 16] [--repeats 3]

Prints JSON; ``mb_per_s`` counts the gathers bytes as stored.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

from hpcinv.config import DataConfig, config_hash, load_config, save_config  # noqa: E402
from hpcinv.feed import BatchReaders, Normalised, Normaliser, RawCache  # noqa: E402
from hpcinv.feed.device import DeviceFeed, cache_batches  # noqa: E402
from hpcinv.feed.readers import shared_empty  # noqa: E402
from hpcinv.feed.sampler import ShardAwareSampler  # noqa: E402
from hpcinv.store import ShardedDataset, ShardSpec, read_manifest, write_manifest, write_shard  # noqa: E402
from hpcinv.store.schema import new_manifest, survey_attrs  # noqa: E402

SHAPE = (29, 400, 301)


def make_dataset(root: Path, n: int, shard_size: int, dtype: str, checksums: bool = True) -> None:
    """A paper-size dataset (the fcnvmb_paper survey and grid) of random gathers, written and described
    the way generate writes one (hpcinv.store.schema), without the modelling."""
    cfg = load_config(
        DataConfig,
        "fcnvmb_paper",
        [
            "velocity.source=synthetic",
            f"dataset.n_samples={n}",
            f"dataset.shard_size={shard_size}",
            "dataset.splits=null",
            f"dataset.gathers_dtype={dtype}",
        ],
    )
    (root / "shards").mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for k, start in enumerate(range(0, n, shard_size)):
        stop = min(start + shard_size, n)
        g = rng.standard_normal((stop - start, *SHAPE), dtype=np.float32)
        v = rng.uniform(2000, 4500, (stop - start, 201, 301)).astype(np.float32)
        records.append(
            write_shard(
                root / "shards",
                ShardSpec(k, start, stop),
                v,
                g,
                config_hash=config_hash(cfg),
                survey=survey_attrs(cfg),
                gathers_dtype=dtype,
                checksums=checksums,
            )
        )
    stats = {
        "gathers": {"mean": 0.0, "std": 1.0, "min": -5.0, "max": 5.0},
        "velocity": {"mean": 3250.0, "std": 700.0, "min": 2000.0, "max": 4500.0},
    }
    manifest = new_manifest(cfg, n, {}) | {"shards": records, "stats": stats}
    assert tuple(manifest["gathers_shape"]) == SHAPE
    save_config(cfg, root / "config.yaml")
    write_manifest(root, manifest)


NORM = {"gathers": "openfwi", "velocity": "minmax"}
BATCH = 4


def drop_cache(root: Path) -> bool:
    """Ask the kernel to forget the files' pages (posix_fadvise), so reads come from disk."""
    ok = True
    for f in (root / "shards").glob("*.h5"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            ok = False
        finally:
            os.close(fd)
    return ok


def epoch(ds, sampler, workers: int, norm: Normaliser) -> float:
    """One epoch of the per-sample path: normalised float32 samples, collated."""
    loader = DataLoader(Normalised(ds, norm), batch_size=BATCH, sampler=sampler, num_workers=workers)
    t0 = time.perf_counter()
    for g, _ in loader:
        assert torch.isfinite(g[:, 0, 0, 0]).all()
    return time.perf_counter() - t0


def epoch_batched(ds, sampler, workers: int, norm: Normaliser) -> float:
    """One epoch of the training input path: whole stored batches, normalised by the feed."""
    readers = BatchReaders(ds, BATCH, workers)
    t0 = time.perf_counter()
    for g, _ in DeviceFeed(norm, torch.device("cpu"))(readers.epoch(list(sampler))):
        assert torch.isfinite(g[:, 0, 0, 0]).all()
    dt = time.perf_counter() - t0
    readers.close()
    return dt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results, checksum_cost = {}, {}
    for dtype in ("float16", "float32"):
        with tempfile.TemporaryDirectory(dir=os.environ.get("HPCINV_BENCH_DIR")) as tmp:
            root = Path(tmp) / "ds"
            make_dataset(root, args.samples, args.shard_size, dtype)
            norm = Normaliser.from_manifest(read_manifest(root), NORM["gathers"], NORM["velocity"])
            ds = ShardedDataset(root)
            mb = np.prod(SHAPE) * np.dtype(dtype).itemsize / 2**20
            row = {}
            rng = np.random.default_rng(1)
            for name, sampler in (
                ("random", rng.permutation(len(ds)).tolist()),
                ("shard_aware", ShardAwareSampler(ds.positions_by_shard(), 0, 1, seed=0)),
            ):
                for workers in (0, 1, 2):
                    for path in ("per_sample", "batched"):  # side by side, same cold cache
                        cold = drop_cache(root)
                        dt = (
                            epoch(ds, sampler, workers, norm)
                            if path == "per_sample"
                            else epoch_batched(ds, sampler, workers, norm)
                        )
                        row[f"{path}/{name}/workers{workers}"] = {
                            "samples_per_s": round(len(ds) / dt, 2),
                            "mb_per_s": round(len(ds) * mb / dt, 1),
                            "cold_cache": cold,
                        }
            cache = RawCache(ds, np.arange(len(ds)), torch.device("cpu"))
            order = list(range(len(ds)))
            t0 = time.perf_counter()
            for g, _ in DeviceFeed(norm, torch.device("cpu"))(cache_batches(cache, order, BATCH)):
                assert torch.isfinite(g[:, 0, 0, 0]).all()
            dt = time.perf_counter() - t0
            row["cache/batched"] = {
                "samples_per_s": round(len(ds) / dt, 2),
                "mb_per_s": round(len(ds) * mb / dt, 1),
                "cache_mb_per_sample": round(cache.nbytes / len(ds) / 2**20, 2),
            }
            results[dtype] = row
            if dtype == "float16":
                host = host_side(root, args.repeats)
            checksum_cost[dtype] = compare_checksums(root, Path(tmp) / "plain", args, dtype)
    emit(
        {
            "benchmark": "loader",
            "samples": args.samples,
            "shard_size": args.shard_size,
            "batch": BATCH,
            "sample_shape": list(SHAPE),
            "host_side": host,
            "results": results,
            "checksum_cost": checksum_cost,
        }
    )


class FreshSharedBatches(torch.utils.data.Dataset):
    """torch's DataLoader path: a worker reads each batch straight into fresh shared memory (allocated
    per batch, which the kernel must zero) -- or, with ``read=False``, only fills it: the floor of that
    path whatever the reader."""

    def __init__(self, ds, batches: list[list[int]], read: bool = True):
        self.ds, self.batches, self.read = ds, batches, read

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gathers, vel = self.ds.batch_arrays(len(self.batches[i]), shared_empty)
        if self.read:
            self.ds.read_batch(self.batches[i], out=(gathers.numpy(), vel.numpy()))
        else:
            gathers.fill_(1.0)
        return gathers, vel


def host_side(root: Path, repeats: int) -> dict:
    """Raw batches (stored dtype, no normalisation) from the cache and from page-cached shards vs memcpy."""
    ds = ShardedDataset(root)
    n, sample_bytes = len(ds), int(np.prod(SHAPE)) * 2
    order = list(ShardAwareSampler(ds.positions_by_shard(), 0, 1, seed=0))
    batches = [order[i : i + BATCH] for i in range(0, n, BATCH)]
    cache = RawCache(ds, np.arange(n), torch.device("cpu"))
    src = cache.gathers.reshape(-1)
    dst = torch.empty_like(src)
    readers = {w: BatchReaders(ds, BATCH, w) for w in (0, 1, 2)}
    best: dict[str, float] = {}

    def timed(label: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        best[label] = min(best.get(label, float("inf")), time.perf_counter() - t0)

    def drain(batches) -> None:
        for g, _ in batches:
            assert g.dtype == torch.float16

    for _ in range(repeats):
        timed("memcpy", lambda: dst.copy_(src))
        timed("cache", lambda: drain(cache_batches(cache, order, BATCH)))
        for workers, reader in readers.items():
            timed(f"page_cache/workers{workers}", lambda reader=reader: drain(reader.epoch(order)))
        for workers in (1, 2):
            loader = DataLoader(FreshSharedBatches(ds, batches), batch_size=None, num_workers=workers)
            timed(f"torch_dataloader/workers{workers}", lambda loader=loader: drain(loader))
        floor = DataLoader(FreshSharedBatches(ds, batches, read=False), batch_size=None, num_workers=1)
        timed("torch_dataloader_floor/workers1", lambda floor=floor: drain(floor))
    for reader in readers.values():
        reader.close()
    rows = {
        k: {"samples_per_s": round(n / t, 1), "gb_per_s": round(n * sample_bytes / t / 1e9, 2)} for k, t in best.items()
    }
    per_worker = {w: rows[f"page_cache/workers{w}"]["samples_per_s"] / max(w, 1) for w in (1, 2)}
    return {
        **rows,
        "cache_vs_memcpy": round(best["memcpy"] / best["cache"], 3),
        "readers_vs_torch_dataloader": {
            f"workers{w}": round(best[f"torch_dataloader/workers{w}"] / best[f"page_cache/workers{w}"], 2)
            for w in (1, 2)
        },
        "goals": {
            "cache_ge_half_memcpy": best["memcpy"] / best["cache"] >= 0.5,
            "cache_ge_400_samples_per_s": rows["cache"]["samples_per_s"] >= 400,
            "page_cache_ge_150_per_worker": min(per_worker.values()) >= 150,
        },
        "page_cache_samples_per_s_per_worker": {f"workers{w}": round(v, 1) for w, v in per_worker.items()},
    }


def compare_checksums(checked: Path, plain: Path, args, dtype: str) -> dict:
    """Samples/s of one epoch over the same data with and without per-chunk checksums, read alternately."""
    make_dataset(plain, args.samples, args.shard_size, dtype, checksums=False)
    out = {}
    for workers in (0, 2):
        best = {"with": float("inf"), "without": float("inf")}
        for _ in range(args.repeats):
            for name, root in (("without", plain), ("with", checked)):
                ds = ShardedDataset(root)
                drop_cache(root)
                best[name] = min(
                    best[name],
                    epoch(ds, ShardAwareSampler(ds.positions_by_shard(), 0, 1, seed=0), workers, Normaliser()),
                )
        out[f"shard_aware/workers{workers}"] = {
            "samples_per_s_without": round(len(ds) / best["without"], 2),
            "samples_per_s_with": round(len(ds) / best["with"], 2),
            "time_with_vs_without": round(best["with"] / best["without"], 3),
        }
    return out


if __name__ == "__main__":
    main()
