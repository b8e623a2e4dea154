"""The cost of one FWI iteration (forward + adjoint of the dataset's survey through deepwave, with
hpcinv's low-pass, loss, gradient smoothing and projection), per model, on one thread, side by side
with a plain forward modelling of the same shots: what ``refine``'s per-model budget costs.

    python benchmarks/refine.py [--config configs/cpu_fcnvmb_data.yaml] [--shots N] [--iterations 5] [key=value ...]

``--shots`` limits the shots of one iteration (a paper-size iteration is timed on a few shots and
scaled linearly: shots are independent in deepwave). Prints JSON: seconds per forward, per iteration,
their ratio, the iteration cost per model for all shots, and the process's peak resident memory
growth during the iterations (deepwave keeps the forward wavefield of every step for the adjoint).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

from hpcinv.config import DataConfig, RefineSection, load_config  # noqa: E402
from hpcinv.physics.forward import model_shots  # noqa: E402
from hpcinv.physics.survey import make_geometry, source_wavelet  # noqa: E402
from hpcinv.refine.fwi import gaussian_smooth, lowpass  # noqa: E402
from hpcinv.velocity import make_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "cpu_fcnvmb_data.yaml"))
    parser.add_argument("--shots", type=int, help="shots per timed iteration (default: all)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (timings synchronised)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    one_model = ["velocity.source=synthetic", "velocity.path=null", "dataset.n_samples=1"]
    cfg = load_config(DataConfig, args.config, [*one_model, *args.overrides])
    torch.set_num_threads(1)
    rc = RefineSection()
    geometry = make_geometry(cfg.survey, cfg.grid)
    n = min(args.shots or geometry.n_shots, geometry.n_shots)
    shots = torch.arange(n)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    truth = torch.from_numpy(make_source(cfg).model(0)).to(device)
    wavelet = source_wavelet(cfg.survey).to(device)
    with torch.no_grad():
        observed = model_shots(truth, cfg, shots, wavelet=wavelet, geometry=geometry)
    v = gaussian_smooth(truth, 4.0).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=rc.lr_mps)
    dt_out = cfg.survey.dt_s * cfg.survey.downsample
    forward, iteration = [], []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.iterations):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model_shots(v, cfg, shots, wavelet=wavelet, geometry=geometry)
        sync()
        forward.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        residual = lowpass(model_shots(v, cfg, shots, wavelet=wavelet, geometry=geometry) - observed, 3.0, dt_out)
        loss = residual.square().sum()
        optimizer.zero_grad()
        loss.backward()
        v.grad = gaussian_smooth(v.grad, 1.0)
        optimizer.step()
        with torch.no_grad():
            v.clamp_(1500.0, cfg.modelling.max_vel_mps)
        sync()
        iteration.append(time.perf_counter() - t0)
    f, it = float(np.median(forward)), float(np.median(iteration))
    scale = geometry.n_shots / n
    emit(
        {
            "config": args.config,
            "grid": [cfg.grid.nz, cfg.grid.nx],
            "nt": cfg.survey.nt,
            "shots_total": geometry.n_shots,
            "shots_timed": n,
            "threads": 1,
            "device": str(device),
            "forward_s": round(f, 4),
            "iteration_s": round(it, 4),
            "iteration_vs_forward": round(it / f, 3),
            "iteration_s_all_shots": round(it * scale, 3),
            "forward_s_all_shots": round(f * scale, 3),
            "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None,
        }
    )


if __name__ == "__main__":
    main()
