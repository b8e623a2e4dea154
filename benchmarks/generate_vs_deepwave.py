"""Throughput of in-process `generate` against raw `deepwave.scalar` on the same shots.

`generate` includes everything a dataset needs (velocity model, modelling, float conversion,
HDF5 write, fsync, sha256, manifest); raw is just the deepwave call per model. Both run on one
thread, alternately, `--repeats` times; the best time of each is compared.

    python benchmarks/generate_vs_deepwave.py [--config configs/tiny.yaml] [--samples 16] [key=value ...]

Prints JSON with `ratio` = raw time / generate time (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from deepwave import scalar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

from hpcinv.config import DataConfig, load_config  # noqa: E402
from hpcinv.generate import generate  # noqa: E402
from hpcinv.physics import make_geometry, ricker  # noqa: E402
from hpcinv.velocity import make_source  # noqa: E402


def raw_deepwave(cfg: DataConfig, models) -> float:
    geometry = make_geometry(cfg.survey, cfg.grid)
    src = torch.as_tensor(geometry.source_cells)[:, None, :]
    rec = torch.as_tensor(geometry.receiver_cells)[None].expand(len(src), -1, -1)
    amp = ricker(cfg.survey).expand(len(src), 1, -1)
    t0 = time.perf_counter()
    for vel in models:
        scalar(torch.from_numpy(vel), cfg.grid.dx_m, cfg.survey.dt_s, source_amplitudes=amp, source_locations=src,
               receiver_locations=rec, accuracy=cfg.modelling.accuracy, pml_width=cfg.modelling.pml_width,
               pml_freq=cfg.survey.f0_hz, max_vel=cfg.modelling.max_vel_mps)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"))
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(DataConfig, args.config,
                      [*args.overrides, f"dataset.n_samples={args.samples}", "modelling.threads=1"])
    torch.set_num_threads(1)
    models = make_source(cfg).models(0, args.samples)
    raw_times, gen_times = [], []
    for _ in range(args.repeats):
        raw_times.append(raw_deepwave(cfg, models))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate(cfg, Path(tmp) / "ds", progress=False)
            gen_times.append(time.perf_counter() - t0)
    raw, gen = min(raw_times), min(gen_times)
    emit({
        "benchmark": "generate_vs_deepwave", "config": args.config, "samples": args.samples,
        "grid": [cfg.grid.nz, cfg.grid.nx], "shots": cfg.survey.n_shots, "nt": cfg.survey.nt,
        "raw_deepwave_s": round(raw, 4), "generate_s": round(gen, 4),
        "raw_samples_per_s": round(args.samples / raw, 3), "generate_samples_per_s": round(args.samples / gen, 3),
        "ratio": round(raw / gen, 4), "raw_all_s": [round(t, 4) for t in raw_times],
        "generate_all_s": [round(t, 4) for t in gen_times],
    })


if __name__ == "__main__":
    main()
