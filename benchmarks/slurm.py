"""What the SLURM path costs on top of the same work run directly, measured side by side.

    python benchmarks/slurm.py [--samples N]      (needs a SLURM cluster: sudo slurm/local-cluster.sh up)

The same generation (configs/tiny.yaml, N samples) three ways, one after the other:
  local    hpcinv generate (a local Ray instance with one actor per core)
  srun     srun -N2 --ntasks-per-node=1 hpcinv cluster generate (the bootstrap over two nodes)
  submitit python -m launch.generate --nodes 2 --wait (queueing, pickling, sacct polling included)
and, from the head's log, how long the bootstrap took (ray start on the first node until every node
had joined). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HPCINV = str(Path(sys.executable).with_name("hpcinv"))
UP = re.compile(r"Ray cluster \S+ up in ([0-9.]+) s")


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=48)
    args = ap.parse_args()
    cfg = str(ROOT / "configs" / "tiny.yaml")
    n = f"dataset.n_samples={args.samples}"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        local_s, _ = timed([HPCINV, "generate", cfg, "--out", "local", "--quiet", n], base)
        srun_s, err = timed(
            [
                "srun",
                "-N2",
                "--ntasks-per-node=1",
                HPCINV,
                "cluster",
                "--object-store-gb",
                "0.2",
                "generate",
                cfg,
                "--out",
                "srun",
                "--quiet",
                n,
            ],
            base,
        )
        bootstrap = [float(x) for x in UP.findall(err)]
        sub_s, _ = timed(
            [
                sys.executable,
                "-m",
                "launch.generate",
                cfg,
                "--out",
                "submitit",
                "--nodes",
                "2",
                "--object-store-gb",
                "0.2",
                "--wait",
                "--folder",
                "logs",
                n,
            ],
            base,
        )
        for log in (base / "logs").glob("*/*_0_log.err"):
            bootstrap += [float(x) for x in UP.findall(log.read_text())]
    emit(
        {
            "benchmark": "slurm",
            "samples": args.samples,
            "local_s": round(local_s, 2),
            "srun_s": round(srun_s, 2),
            "submitit_s": round(sub_s, 2),
            "bootstrap_s": bootstrap,
            "srun_over_local": round(srun_s / local_s, 3),
            "submitit_over_local": round(sub_s / local_s, 3),
        }
    )


if __name__ == "__main__":
    main()
