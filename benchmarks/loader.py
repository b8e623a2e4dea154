"""Data-feed benchmark: samples/s and MB/s of the sharded HDF5 loader at the FCNVMB paper shape.

Writes a dataset of random paper-size samples (29 x 400 x 301 gathers) in float16 and float32 to a
temporary folder (the loader does not care about physics), drops it from the page cache where
possible, and reads one epoch per variant:

* ``random``: global random order (what a plain ``DistributedSampler`` does);
* ``shard_aware``: hpcinv's ``ShardAwareSampler`` (a rank's own shards, its samples shuffled together);
* DataLoader worker counts 0, 1, 2; and the in-memory cache (second epoch) for a dataset that fits;
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

from hpcinv.store import InMemory, ShardedDataset, ShardSpec, write_manifest, write_shard  # noqa: E402
from hpcinv.store.sampler import ShardAwareSampler  # noqa: E402

SHAPE = (29, 400, 301)


def make_dataset(root: Path, n: int, shard_size: int, dtype: str, checksums: bool = True) -> None:
    (root / "shards").mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for k, start in enumerate(range(0, n, shard_size)):
        stop = min(start + shard_size, n)
        g = rng.standard_normal((stop - start, *SHAPE), dtype=np.float32)
        v = rng.uniform(2000, 4500, (stop - start, 201, 301)).astype(np.float32)
        records.append(write_shard(root / "shards", ShardSpec(k, start, stop), v, g, config_hash="bench", survey={},
                                   gathers_dtype=dtype, checksums=checksums))
    write_manifest(root, {"format": "hpcinv-dataset", "format_version": 2, "config_hash": "bench", "n_samples": n,
                          "shard_size": shard_size, "velocity_shape": [201, 301], "gathers_shape": list(SHAPE),
                          "gathers_dtype": dtype, "survey": {}, "physics": {}, "shards": records})


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


def epoch(ds, sampler, workers: int) -> float:
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
    t0 = time.perf_counter()
    for g, _ in loader:
        assert torch.isfinite(g[:, 0, 0, 0]).all()
    return time.perf_counter() - t0


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
            ds = ShardedDataset(root)
            mb = np.prod(SHAPE) * np.dtype(dtype).itemsize / 2**20
            row = {}
            rng = np.random.default_rng(1)
            for name, sampler in (("random", rng.permutation(len(ds)).tolist()),
                                  ("shard_aware", ShardAwareSampler(ds.positions_by_shard(), 0, 1, seed=0))):
                for workers in (0, 1, 2):
                    cold = drop_cache(root)
                    dt = epoch(ds, sampler, workers)
                    row[f"{name}/workers{workers}"] = {"samples_per_s": round(len(ds) / dt, 2),
                                                       "mb_per_s": round(len(ds) * mb / dt, 1), "cold_cache": cold}
            cached = InMemory(ds, np.arange(len(ds)))
            dt = epoch(cached, list(range(len(ds))), 0)
            row["memory_cache/workers0"] = {"samples_per_s": round(len(ds) / dt, 2),
                                            "mb_per_s": round(len(ds) * mb / dt, 1)}
            results[dtype] = row
            checksum_cost[dtype] = compare_checksums(root, Path(tmp) / "plain", args, dtype)
    emit({"benchmark": "loader", "samples": args.samples, "shard_size": args.shard_size,
          "sample_shape": list(SHAPE), "results": results, "checksum_cost": checksum_cost})


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
                best[name] = min(best[name], epoch(ds, ShardAwareSampler(ds.positions_by_shard(), 0, 1, seed=0),
                                                   workers))
        out[f"shard_aware/workers{workers}"] = {
            "samples_per_s_without": round(len(ds) / best["without"], 2),
            "samples_per_s_with": round(len(ds) / best["with"], 2),
            "time_with_vs_without": round(best["with"] / best["without"], 3)}
    return out


if __name__ == "__main__":
    main()
