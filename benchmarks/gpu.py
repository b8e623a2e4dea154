"""GPU acceptance run: one command, one JSON document, on a machine with a CUDA GPU.

    python benchmarks/gpu.py [--quick]

Sections (each is timed on ``cuda:0``; a section that fails records its error and the rest still run):

* ``card``: name, compute capability, memory, NVIDIA driver, CUDA driver and torch's CUDA, torch and
  deepwave versions, the preflight findings (``hpcinv doctor``), and the memory bandwidth measured by
  a 1 GiB device-to-device copy (read + write bytes / s);
* ``deepwave``: one FCNVMB paper sample (29 shots, 201 x 301 at 10 m, 2,000 steps) on the GPU, as
  grid-point updates / s, against the bandwidth bound (measured bandwidth / 16 bytes per update: the
  float32 velocity and two wavefields read and one written, PML work not counted);
* ``generate``: ``hpcinv generate`` in-process on the GPU (velocity models, modelling, statistics,
  HDF5 write, fsync, checksum) vs a bare loop of ``deepwave.scalar`` on the same models, samples / s,
  for ``modelling.models_per_call`` 1 and 4;
* ``train``: the paper FCNVMB (31 M parameters, paper input) samples / s at a fixed batch for fp32 /
  bf16 x activation checkpointing none / blocks / units / nested, and the largest batch that fits
  each (doubling, then bisection, up to ``--max-batch``);
* ``loader``: the training input path delivering paper-size float16 samples into the GPU, normalised:
  from disk (page cache dropped first; 0 and 4 reader processes) and from the rank cache (on the
  GPU and in pinned host memory), samples / s and GB / s of stored bytes, and whether each path's
  first batch equals the disk path's (``same_first_batch_as_disk``: the paths are checked, not only timed).

On a machine without CUDA it prints a JSON document saying so and exits 0. ``--smoke-on-cpu`` runs
every section on the CPU at toy sizes (tiny survey, narrow network, few samples) to check the code
paths before spending GPU time; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BYTES_PER_UPDATE = 16
DEVICE = torch.device("cuda")
SMOKE = False  # --smoke-on-cpu: toy sizes on the CPU


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _empty_cache() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()


def card() -> dict:
    import deepwave

    from hpcinv.doctor import cuda_driver_version, findings, nvidia_driver_release

    x = torch.empty(2**20 if SMOKE else 2**28, dtype=torch.float32, device=DEVICE)  # 1 GiB
    y = torch.empty_like(x)
    y.copy_(x)
    _sync()
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    _sync()
    bandwidth = 10 * 2 * x.nbytes / (time.perf_counter() - t0)
    del x, y
    _empty_cache()
    driver = cuda_driver_version()
    common = {
        "torch_cuda": torch.version.cuda,
        "torch": torch.__version__,
        "deepwave": deepwave.__version__,
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
    }
    if DEVICE.type != "cuda":
        return {"name": "cpu (smoke run)", **common, "doctor": [str(f) for f in findings()]}
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "memory_gib": round(total / 2**30, 1),
        "free_gib": round(free / 2**30, 1),
        "nvidia_driver": nvidia_driver_release(),
        "cuda_driver": f"{driver // 1000}.{driver % 1000 // 10}" if driver else None,
        "torch_cuda": torch.version.cuda,
        "torch": torch.__version__,
        "deepwave": deepwave.__version__,
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "doctor": [str(f) for f in findings(gpu=True, probe=True)],
    }


def paper_config(overrides=()):
    from hpcinv.config import DataConfig, load_config

    config = "tiny.yaml" if SMOKE else "fcnvmb_paper.yaml"
    overrides = [o.replace("=cuda", f"={DEVICE.type}") for o in overrides]
    return load_config(DataConfig, ROOT / "configs" / config, overrides)


def raw_loop(cfg, models: np.ndarray, per_call: int) -> float:
    """Seconds for a bare loop of deepwave.scalar over ``models`` on the device, ``per_call`` models a call."""
    from deepwave import scalar

    from hpcinv.physics import make_geometry, source_wavelet

    geometry = make_geometry(cfg.survey, cfg.grid)
    shots = len(geometry.source_cells)
    src = torch.as_tensor(geometry.source_cells)[:, None, :].to(DEVICE)
    rec = torch.as_tensor(geometry.receiver_cells)[None].expand(shots, -1, -1).to(DEVICE)
    amp = source_wavelet(cfg.survey).expand(shots, 1, -1).to(DEVICE)
    vel = torch.from_numpy(models).to(DEVICE)
    _sync()
    t0 = time.perf_counter()
    for start in range(0, len(vel), per_call):
        v = vel[start : start + per_call]
        n = len(v)
        scalar(
            v.repeat_interleave(shots, 0) if n > 1 else v[0],
            cfg.grid.dx_m,
            cfg.survey.dt_s,
            source_amplitudes=amp.repeat(n, 1, 1),
            source_locations=src.repeat(n, 1, 1),
            receiver_locations=rec.repeat(n, 1, 1),
            accuracy=cfg.modelling.accuracy,
            pml_width=cfg.modelling.pml_width,
            pml_freq=cfg.survey.f0_hz,
            max_vel=cfg.modelling.max_vel_mps,
        )
    _sync()
    return time.perf_counter() - t0


def deepwave_rate(bandwidth_gb_s: float) -> dict:
    from deepwave.discretisation import cfl_condition

    from hpcinv.velocity import make_source

    cfg = paper_config()
    models = make_source(cfg).models(0, 1)
    raw_loop(cfg, models, 1)  # warm-up (JIT of PTX, allocator)
    seconds = min(raw_loop(cfg, models, 1) for _ in range(3))
    _, step_ratio = cfl_condition(cfg.grid.dx_m, cfg.grid.dx_m, cfg.survey.dt_s, cfg.modelling.max_vel_mps)
    pad = 2 * (cfg.modelling.pml_width + cfg.modelling.accuracy // 2)
    updates = cfg.survey.n_shots * (cfg.grid.nz + pad) * (cfg.grid.nx + pad) * cfg.survey.nt * int(step_ratio)
    bound = bandwidth_gb_s * 1e9 / BYTES_PER_UPDATE
    return {
        "sample_s": round(seconds, 4),
        "grid_point_updates": updates,
        "updates_per_s": round(updates / seconds / 1e9, 2),
        "unit": "1e9 updates/s",
        "bandwidth_bound_updates_per_s": round(bound / 1e9, 2),
        "fraction_of_bound": round(updates / seconds / bound, 3),
    }


def generate_rate(samples: int) -> dict:
    from hpcinv.stages import Execution
    from hpcinv.stages.generate import run as generate
    from hpcinv.stages.requests import GenerateRequest
    from hpcinv.velocity import make_source

    out = {}
    for per_call in (1, 4):
        cfg = paper_config(
            [
                f"dataset.n_samples={samples}",
                "dataset.shard_size=4",
                "dataset.gathers_dtype=float16",
                "modelling.device=cuda",
                f"modelling.models_per_call={per_call}",
            ]
        )
        models = make_source(cfg).models(0, samples)
        raw_loop(cfg, models[:per_call], per_call)
        raw = raw_loop(cfg, models, per_call)
        with tempfile.TemporaryDirectory(dir=os.environ.get("HPCINV_BENCH_DIR")) as tmp:
            t0 = time.perf_counter()
            generate(GenerateRequest(config=cfg, out=str(Path(tmp) / "ds")), Execution(in_process=True, progress=False))
            wall = time.perf_counter() - t0
        out[f"models_per_call_{per_call}"] = {
            "raw_samples_per_s": round(samples / raw, 2),
            "generate_samples_per_s": round(samples / wall, 2),
            "generate_vs_raw": round(raw / wall, 3),
        }
    return out


def _train_once(mode: str, precision: str, batch: int, steps: int) -> float:
    import torch.nn.functional as F

    from hpcinv.nets import FCNVMB
    from hpcinv.train.engine import train_step
    from hpcinv.train.parallel import apply_checkpointing, grad_scaler

    device = DEVICE
    torch.manual_seed(0)
    shots, nt, nx, nz, width = (5, 64, 48, 32, 8) if SMOKE else (29, 400, 301, 201, 64)
    model = FCNVMB(shots, (nz, nx), width, 3 if SMOKE else 4)
    apply_checkpointing(model, mode)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    scaler = grad_scaler(precision, device)
    x = torch.randn(batch, shots, nt, nx, device=device)
    y = torch.randn(batch, 1, nz, nx, device=device)
    try:
        train_step(model, x, y, opt, scaler, F.mse_loss, precision, device)
        _sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, x, y, opt, scaler, F.mse_loss, precision, device)
        _sync()
        return batch * steps / (time.perf_counter() - t0)
    finally:
        del model, opt, x, y
        _empty_cache()


def _out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or a library's allocation failure near the limit (cuBLAS, cuDNN), which
    arrives as a plain RuntimeError."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "alloc_failed" in text)
    )


def _fits(mode: str, precision: str, batch: int) -> bool:
    try:
        _train_once(mode, precision, batch, 1)
        return True
    except RuntimeError as exc:  # OutOfMemoryError is one
        if not _out_of_memory(exc):
            raise
        _empty_cache()
        return False


def largest_batch(mode: str, precision: str, limit: int) -> int:
    lo, hi = 0, 1
    while hi <= limit and _fits(mode, precision, hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(mode, precision, mid) else (lo, mid)
    return lo


def train_rates(batch: int, steps: int, limit: int) -> dict:
    out = {}
    for precision in ("fp32", "bf16"):
        for mode in ("none", "blocks", "units", "nested"):
            row = {}
            try:
                row["samples_per_s"] = round(_train_once(mode, precision, batch, steps), 1)
            except RuntimeError as exc:
                if not _out_of_memory(exc):
                    raise
                row["samples_per_s"] = None
                _empty_cache()
            row["largest_batch"] = largest_batch(mode, precision, limit)
            out[f"{precision}/{mode}"] = row
    return {"batch": batch, "steps": steps, "max_batch_tried": limit, "results": out}


def loader_rates(samples: int) -> dict:
    from loader import SHAPE, drop_cache, make_dataset

    from hpcinv.feed import BatchReaders, Normaliser, RawCache
    from hpcinv.feed.device import DeviceFeed, cache_batches
    from hpcinv.store import ShardedDataset, read_manifest

    device, batch = DEVICE, 4 if SMOKE else 16
    stored_gb = np.prod(SHAPE) * 2 / 1e9
    out = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("HPCINV_BENCH_DIR")) as tmp:
        root = Path(tmp) / "ds"
        make_dataset(root, samples, 16, "float16")
        norm = Normaliser.from_manifest(read_manifest(root), "openfwi", "minmax")
        ds = ShardedDataset(root)
        order = np.random.default_rng(0).permutation(len(ds)).tolist()

        first: dict[str, torch.Tensor] = {}  # each path's first batch, compared with the disk path's after timing

        def timed(source, label, **extra):
            feed = DeviceFeed(norm, device, depth=2)
            _sync()
            t0 = time.perf_counter()
            n = 0
            for g, _ in feed(source):
                if not n:
                    first[label] = g.clone()
                n += len(g)
            _sync()
            dt = time.perf_counter() - t0
            out[label] = {"samples_per_s": round(n / dt, 1), "gb_per_s": round(n * stored_gb / dt, 2), **extra}
            out[label]["same_first_batch_as_disk"] = bool(torch.equal(first[label], first["disk/workers0"]))

        for workers in (0, 4):
            cold = drop_cache(root)
            readers = BatchReaders(ds, batch, workers, pin=device.type == "cuda")
            timed(readers.epoch(order), f"disk/workers{workers}", cold_cache=cold)
            out[f"disk/workers{workers}"]["pinned"] = readers.pinned
            readers.close()
        for fraction, label in ((0.9, "cache/device"), (0.0, "cache/pinned")):
            cache = RawCache(ds, np.arange(len(ds)), device, fraction)
            timed(cache_batches(cache, order, batch, pinned_ring=2), label, place=cache.place)
            del cache
            _empty_cache()
    return {"samples": samples, "batch": batch, "sample_shape": list(SHAPE), "stored_dtype": "float16", **out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps (a smoke run)")
    parser.add_argument("--max-batch", type=int, default=128)
    parser.add_argument("--smoke-on-cpu", action="store_true", help="check the code paths on the CPU (toy sizes)")
    args = parser.parse_args()
    if args.smoke_on_cpu:
        global DEVICE, SMOKE
        DEVICE, SMOKE = torch.device("cpu"), True
    elif not torch.cuda.is_available():
        emit(
            {
                "benchmark": "gpu",
                "skipped": "needs a CUDA GPU: none is visible here (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda})",
            }
        )
        return
    quick = args.quick or SMOKE
    result: dict = {"benchmark": "gpu", "quick": quick, "smoke_on_cpu": SMOKE}
    sections = [
        ("card", card),
        ("deepwave", lambda: deepwave_rate(result["card"]["copy_bandwidth_gb_s"])),
        ("generate", lambda: generate_rate(4 if SMOKE else 8 if quick else 32)),
        (
            "train",
            lambda: train_rates(2 if SMOKE else 8, 3 if quick else 10, 2 if SMOKE else 16 if quick else args.max_batch),
        ),
        ("loader", lambda: loader_rates(8 if SMOKE else 64 if quick else 256)),
    ]
    for name, fn in sections:
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as exc:  # one failing section must not hide the others' figures
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        result.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)
    emit(result)


if __name__ == "__main__":
    main()
