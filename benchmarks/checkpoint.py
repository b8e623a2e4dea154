"""Full-state checkpoint cost for the paper-size FCNVMB (model + Adam state + RNG + config):
bytes on disk, atomic save time (temp + fsync + rename) and weights_only load time.

    python benchmarks/checkpoint.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

from hpcinv.checkpoint import load_state, rng_state, save_state  # noqa: E402
from hpcinv.nets import FCNVMB  # noqa: E402


def main() -> None:
    model = FCNVMB()
    opt = torch.optim.Adam(model.parameters())
    model(torch.zeros(1, 29, 400, 301)).mean().backward()
    opt.step()  # creates the Adam moments
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": rng_state(),
        "epoch": 0,
        "step": 1,
        "config": {},
        "model_spec": {"config": {"name": "fcnvmb"}},
    }
    saves, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            t0 = time.perf_counter()
            path = save_state(tmp, state)
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            load_state(tmp)
            loads.append(time.perf_counter() - t0)
        size = path.stat().st_size
    emit(
        {
            "benchmark": "checkpoint",
            "parameters": sum(p.numel() for p in model.parameters()),
            "bytes": size,
            "mb": round(size / 2**20, 1),
            "save_s": round(min(saves), 3),
            "load_s": round(min(loads), 3),
            "save_mb_per_s": round(size / 2**20 / min(saves), 1),
        }
    )


if __name__ == "__main__":
    main()
