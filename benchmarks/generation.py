"""Generation throughput: raw deepwave vs hpcinv in-process vs 1 and 2 Ray actors, side by side.

All variants model the same samples with one torch thread per process:

* ``raw``: a bare loop of ``deepwave.scalar`` calls (no velocity generation, no I/O);
* ``in_process``: ``hpcinv generate --in-process`` (velocity model, modelling, HDF5 write, fsync,
  sha256, manifest);
* ``ray_1`` / ``ray_2``: ``hpcinv generate`` on a local Ray instance with 1 or 2 modelling actors,
  timed from the moment every actor is up (actor start-up is reported separately). The Ray instance
  is started once, before any variant is timed (``ray_init_s``), as on a cluster where it is up
  before the job runs.

    python benchmarks/generation.py [--config configs/fcnvmb_paper.yaml] [--samples 8] [key=value ...]

Prints JSON with the ratios the project tracks: ``in_process_vs_raw`` and ``ray_1_vs_raw`` (best of the
repeats; ≥ 0.95 means ≤ 5 % overhead), the same as ``paired_median_vs_raw`` (the median over repeats of
each repeat's own ratio), and ``ray_2_vs_ray_1`` (2.0 = perfect scaling on two cores).

``host``: the host work per sample after modelling, timed on its own on the same shards -- statistics
of the stored gathers, then the shard write (HDF5 image, fsync, rename, sha256 of the image) -- and
the share of it that overlapping hides, two ways:

* ``hidden_in_process`` / ``hidden_ray_1`` = ``1 - (variant - raw) / host`` from the wall times (1.0:
  generation costs no more than bare modelling; 0.0: the host work adds up in series). Where modelling
  takes seconds per sample (a CPU) the host work is a fraction of a percent of it, below the noise of
  the wall times, and these figures say nothing;
* ``hidden_measured`` = ``1 - idle / host``: in-process generation with every modelling call timed;
  ``idle`` is the time per sample between the end of one shard's modelling and the start of the next
  (the modelling device waiting), measured directly, so it resolves on a CPU as well. The gap also
  holds the next shard's velocity models and statistics (``velocity_s_per_sample`` is reported), so
  this figure errs low.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from deepwave import scalar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

from hpcinv.config import DataConfig, load_config  # noqa: E402
from hpcinv.distributed.session import init_ray, shutdown  # noqa: E402
from hpcinv.physics import make_geometry, source_wavelet  # noqa: E402
from hpcinv.physics.forward import match_deepwave_threads  # noqa: E402
from hpcinv.stages import Execution  # noqa: E402
from hpcinv.stages.generate import run as generate  # noqa: E402
from hpcinv.stages.requests import GenerateRequest  # noqa: E402
from hpcinv.velocity import make_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def raw_deepwave(cfg: DataConfig, models) -> float:
    geometry = make_geometry(cfg.survey, cfg.grid)
    src = torch.as_tensor(geometry.source_cells)[:, None, :]
    rec = torch.as_tensor(geometry.receiver_cells)[None].expand(len(src), -1, -1)
    amp = source_wavelet(cfg.survey).expand(len(src), 1, -1)
    match_deepwave_threads()  # deepwave's own OpenMP runtime would otherwise take every core
    t0 = time.perf_counter()
    for vel in models:
        scalar(
            torch.from_numpy(vel),
            cfg.grid.dx_m,
            cfg.survey.dt_s,
            source_amplitudes=amp,
            source_locations=src,
            receiver_locations=rec,
            accuracy=cfg.modelling.accuracy,
            pml_width=cfg.modelling.pml_width,
            pml_freq=cfg.survey.f0_hz,
            max_vel=cfg.modelling.max_vel_mps,
        )
    return time.perf_counter() - t0


def timed_generate(cfg: DataConfig, workers: int | None = None) -> tuple[float, float]:
    """Seconds of one generation (Ray given ``workers``, else in process), less the actors' start-up."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        execution = Execution(in_process=workers is None, workers=workers, progress=False)
        summary = generate(GenerateRequest(config=cfg, out=str(Path(tmp) / "ds")), execution)
        wall = time.perf_counter() - t0
    startup = summary["extra"].get("actor_startup_s", 0.0)
    return wall - startup, startup


def host_work(cfg: DataConfig, samples: int) -> dict:
    """Seconds per sample of the statistics and of the shard write, apart from the modelling."""
    from hpcinv.generate.worker import ShardWorker
    from hpcinv.store import plan_shards
    from hpcinv.store.stats import RunningStats

    stats_s = write_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "shards").mkdir()
        worker = ShardWorker(cfg, tmp)
        for spec in plan_shards(samples, cfg.dataset.shard_size):
            vel, gathers, _ = worker.model(spec)
            t0 = time.perf_counter()
            stats = RunningStats.of(torch.from_numpy(gathers))
            t1 = time.perf_counter()
            worker.write(spec, vel, gathers, stats)
            t2 = time.perf_counter()
            stats_s, write_s = stats_s + t1 - t0, write_s + t2 - t1
    return {
        "stats_s_per_sample": round(stats_s / samples, 4),
        "write_s_per_sample": round(write_s / samples, 4),
        "host_s_per_sample": round((stats_s + write_s) / samples, 4),
    }


def device_idle(cfg: DataConfig, samples: int) -> dict:
    """In-process generation with each modelling call timed: how long the device waits between shards."""
    import hpcinv.generate.worker as worker_module

    spans: list[tuple[float, float]] = []
    real = worker_module.simulate

    def timed_simulate(*args, **kwargs):
        t0 = time.perf_counter()
        out = real(*args, **kwargs)
        spans.append((t0, time.perf_counter()))
        return out

    worker_module.simulate = timed_simulate
    try:
        timed_generate(cfg)
    finally:
        worker_module.simulate = real
    gaps = [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:], strict=False)]
    modelling = sum(b - a for a, b in spans)
    t0 = time.perf_counter()
    make_source(cfg).models(0, samples)
    return {
        "modelling_s_per_sample": round(modelling / samples, 4),
        "idle_s_per_sample": round(sum(gaps) / max(samples - cfg.dataset.shard_size, 1), 4),
        "velocity_s_per_sample": round((time.perf_counter() - t0) / samples, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "configs" / "fcnvmb_paper.yaml"))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", default=["survey.n_shots=4"])
    args = parser.parse_args()
    cfg = load_config(
        DataConfig,
        args.config,
        [
            *args.overrides,
            f"dataset.n_samples={args.samples}",
            f"dataset.shard_size={args.shard_size}",
            "modelling.threads=1",
        ],
    )
    torch.set_num_threads(1)
    models = make_source(cfg).models(0, args.samples)
    times: dict[str, list[float]] = {"raw": [], "in_process": [], "ray_1": [], "ray_2": []}
    startup: dict[str, float] = {}
    t0 = time.perf_counter()
    init_ray()  # else the first ray_1 repeat also times the start of the local Ray instance
    ray_init_s = round(time.perf_counter() - t0, 3)
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every variant alike
        times["raw"].append(raw_deepwave(cfg, models))
        times["in_process"].append(timed_generate(cfg)[0])
        for n in (1, 2):
            t, startup[f"ray_{n}"] = timed_generate(cfg, workers=n)
            times[f"ray_{n}"].append(t)
    best = {k: min(v) for k, v in times.items()}
    host = host_work(cfg, args.samples)
    per_sample = {k: v / args.samples for k, v in best.items()}
    host["hidden_in_process"] = round(1 - (per_sample["in_process"] - per_sample["raw"]) / host["host_s_per_sample"], 3)
    host["hidden_ray_1"] = round(1 - (per_sample["ray_1"] - per_sample["raw"]) / host["host_s_per_sample"], 3)
    host["device"] = device_idle(cfg, args.samples)
    host["hidden_measured"] = round(1 - host["device"]["idle_s_per_sample"] / host["host_s_per_sample"], 3)
    shutdown()
    emit(
        {
            "benchmark": "generation",
            "config": args.config,
            "overrides": args.overrides,
            "samples": args.samples,
            "grid": [cfg.grid.nz, cfg.grid.nx],
            "shots": cfg.survey.n_shots,
            "nt": cfg.survey.nt,
            "best_s": {k: round(v, 3) for k, v in best.items()},
            "samples_per_s": {k: round(args.samples / v, 3) for k, v in best.items()},
            "ray_init_s": ray_init_s,
            "actor_startup_s": startup,
            "host": host,
            # per repeat, variants timed minutes apart: the median of raw_i / variant_i cancels slow drift
            # of a shared machine that best-of-N across repeats does not
            "paired_median_vs_raw": {
                k: round(float(np.median(np.array(times["raw"]) / np.array(v))), 3)
                for k, v in times.items()
                if k in ("in_process", "ray_1")
            },
            "in_process_vs_raw": round(best["raw"] / best["in_process"], 3),
            "ray_1_vs_raw": round(best["raw"] / best["ray_1"], 3),
            "ray_2_vs_ray_1": round(best["ray_1"] / best["ray_2"], 3),
            "all_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        }
    )


if __name__ == "__main__":
    main()
