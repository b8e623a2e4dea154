"""Bookkeeping at scale: what hpcinv's own record-keeping costs for stores of 1k, 10k and 100k samples.

The samples are tiny (a 12 x 12 model, one shot, 160 time samples: ~9 KB each, ~0.4 ms of modelling),
so what grows with N is the bookkeeping, not the physics. For each N, in a process of its own (so its
peak memory is the driver's at that N), on a dataset of shards of ``--shard-size`` samples:

* ``generate``: ``hpcinv generate`` on Ray (``--workers`` actors): wall and the driver's own CPU time,
  per shard;
* ``manifest``: parsing (a process parses it once) and (re)writing ``manifest.json`` (best of 3);
* ``resume_complete``: ``hpcinv generate`` again on the complete store (nothing to do);
* ``resume_missing``: 1 % of the shard files deleted: the writer's resume alone (which shards to
  keep; best of 3), then the whole ``hpcinv generate`` that recomputes them (its modelling grows with
  the 1 %);
* ``verify``: the start-up check of train/evaluate/predict (a ``stat`` per shard), ``hpcinv verify
  --no-checksums`` (opens every shard) and ``hpcinv verify`` (every shard's sha256);
* ``train_startup``: ``hpcinv train --in-process`` (a small model-domain U-Net, no Ray) from launch to
  its ``start`` event, i.e. to the first step (best of 3 launches, each stopped there; it includes the
  ~3.5 s of importing torch), and one whole epoch over all samples;
* ``evaluate_startup``: ``hpcinv evaluate`` of that run on the first 10 samples of the whole dataset
  (every shard checked at start-up), without misfit or figures, launch to exit (best of 3);
* ``driver_peak_rss_mb``: the peak memory of the process that ran all the driver-side work above.

Goals (docs/SCALING.md): resume of a complete 100k-sample store <= 5 s; every per-sample or per-shard
cost flat from 1k to 100k (ratio <= 1.5); driver memory <= 1 GiB at 100k.

    python benchmarks/scale.py [--sizes 1000 10000 100000] [--shard-size 10] [--workers 2] [--root DIR]

Prints JSON (``ratios``: each per-shard cost and each start-up at the largest N over the smallest).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import emit  # noqa: E402

MICRO_DATA = """\
grid: {{nz: 12, nx: 12, dx_m: 15.0}}
velocity: {{source: synthetic}}
survey: {{n_shots: 1, f0_hz: 8.0, dt_s: 0.002, nt: 160, downsample: 1}}
modelling: {{accuracy: 2, max_vel_mps: 4500.0, pml_width: 2}}
dataset: {{n_samples: {n}, shard_size: {shard_size}, gathers_dtype: float32, seed: 0,
          splits: {{train: {train}, test: 100}}}}
"""

MICRO_TRAIN = """\
model: {{name: model_domain_unet, base_channels: 4, depth: 1}}
data: {{train: {data}, train_split: train, gathers_norm: standard, velocity_norm: minmax,
        v_range_mps: [1500.0, 4500.0], loader_workers: 0}}
train: {{epochs: 1, batch_size: 250, lr: 0.001, checkpoint_every_epochs: 1}}
scaling: {{num_workers: 1}}
tracking: {{mode: disabled}}
"""


def _best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hpcinv.cli", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"hpcinv {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc


def _to_first_step(args: list[str]) -> float:
    """Seconds from launching ``hpcinv train`` to its ``start`` event (logged just before the first
    step), then the run is stopped."""
    run = Path(args[args.index("--out") + 1])
    launched = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "hpcinv.cli", *args], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            try:
                lines = (run / "events.jsonl").read_text().splitlines()
                start = next((e["time"] for e in map(json.loads, lines) if e["event"] == "start"), None)
            except (OSError, ValueError):
                start = None
            if start is not None:
                return start - launched
            time.sleep(0.02)
        raise SystemExit(f"hpcinv {' '.join(args)} ended before its first step")
    finally:
        proc.kill()
        proc.wait()


def measure(n: int, shard_size: int, workers: int, root: Path) -> dict:
    """Every figure for one N (run in a process of its own)."""
    from hpcinv import fileio
    from hpcinv.config import DataConfig, load_config
    from hpcinv.distributed.session import init_ray
    from hpcinv.stages.base import Execution
    from hpcinv.stages.generate import run as generate
    from hpcinv.stages.requests import GenerateRequest
    from hpcinv.store import plan_shards, read_manifest, require_readable, verify_dataset
    from hpcinv.store.manifest import write_manifest
    from hpcinv.store.writer import resume_shards

    data_yaml, train_yaml = root / f"data_{n}.yaml", root / f"train_{n}.yaml"
    ds, run = root / f"data_{n}", root / f"run_{n}"
    data_yaml.write_text(MICRO_DATA.format(n=n, shard_size=shard_size, train=n - 100))
    train_yaml.write_text(MICRO_TRAIN.format(data=ds))
    cfg = load_config(DataConfig, data_yaml)
    request, execution = GenerateRequest(config=cfg, out=str(ds)), Execution(workers=workers, progress=False)
    shards = len(plan_shards(n, shard_size))
    out: dict = {"samples": n, "shards": shards}

    t0 = time.perf_counter()
    init_ray(None)
    out["ray_init_s"] = round(time.perf_counter() - t0, 3)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = generate(request, execution)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert summary["computed_shards"] == shards, summary
    out["generate"] = {
        "wall_s": round(wall, 2),
        "driver_cpu_s": round(cpu, 2),
        "wall_ms_per_shard": round(1e3 * wall / shards, 3),
        "driver_cpu_ms_per_shard": round(1e3 * cpu / shards, 3),
    }

    manifest = read_manifest(ds)

    def cold_read():
        fileio._PARSED.clear()  # a process parses a manifest once: time that parse
        read_manifest(ds)

    read_s = _best(cold_read)
    write_s = _best(lambda: write_manifest(ds, manifest))
    out["manifest"] = {
        "bytes": (ds / "manifest.json").stat().st_size,
        "read_s": round(read_s, 4),
        "write_s": round(write_s, 4),
        "read_us_per_shard": round(1e6 * read_s / shards, 2),
        "write_us_per_shard": round(1e6 * write_s / shards, 2),
    }

    t0 = time.perf_counter()
    again = generate(request, execution)
    resume_s = time.perf_counter() - t0
    assert again["computed_shards"] == 0 and again["skipped_shards"] == shards, again
    out["resume_complete"] = {"s": round(resume_s, 3), "us_per_shard": round(1e6 * resume_s / shards, 2)}

    specs = plan_shards(n, shard_size)
    gone = specs[::100]
    for spec in gone:
        (ds / "shards" / spec.name).unlink()
    manifest = read_manifest(ds)
    resumed: list = []
    writer_s = _best(lambda: resumed.append(resume_shards(ds, specs, manifest["shards"], manifest["config_hash"])))
    kept, todo, _ = resumed[-1]
    assert len(todo) == len(gone) and len(kept) == shards - len(gone)
    t0 = time.perf_counter()
    again = generate(request, execution)
    whole_s = time.perf_counter() - t0
    assert again["computed_shards"] == len(gone), again
    out["resume_missing"] = {
        "missing_shards": len(gone),
        "writer_resume_s": round(writer_s, 3),
        "writer_resume_us_per_shard": round(1e6 * writer_s / shards, 2),
        "generate_s": round(whole_s, 3),
    }

    stat_s = _best(lambda: require_readable(ds), 1)
    t0 = time.perf_counter()
    assert verify_dataset(ds, checksums=False).ok
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert verify_dataset(ds).ok
    full_s = time.perf_counter() - t0
    out["verify"] = {
        "startup_check_s": round(stat_s, 3),
        "open_s": round(open_s, 3),
        "full_s": round(full_s, 3),
        "startup_check_us_per_shard": round(1e6 * stat_s / shards, 2),
        "open_us_per_shard": round(1e6 * open_s / shards, 2),
        "full_us_per_shard": round(1e6 * full_s / shards, 2),
    }

    train = ["train", str(train_yaml), "--in-process", "--quiet"]
    first_step = min(_to_first_step([*train, "--out", str(root / f"startup_{n}_{k}")]) for k in range(3))
    train_s, _ = _cli(*train, "--out", str(run))
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    epoch = next(e for e in events if e["event"] == "epoch_end")["metrics"]
    out["train_startup"] = {
        "to_first_step_s": round(first_step, 2),
        "epoch_s": round(epoch["train/epoch_time_s"], 2),
        "epoch_us_per_sample": round(1e6 * epoch["train/epoch_time_s"] / epoch["train/epoch_samples"], 1),
        "command_s": round(train_s, 2),
    }
    out["evaluate_startup_s"] = round(
        min(
            _cli(
                "evaluate", str(run), "--data", str(ds), "--samples", "10", "--misfit-samples", "0", "--figures", "0",
                "--baseline", f"{ds}:test", "--out", str(root / f"report_{n}_{k}"),
            )[0]
            for k in range(3)
        ),
        2,
    )  # fmt: skip
    out["driver_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--shard-size", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", help="folder for the stores (default: a temporary one, removed at the end)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process of one N
    args = ap.parse_args()
    if args.one:
        json.dump(measure(args.one, args.shard_size, args.workers, Path(args.root)), sys.stdout)
        return
    root = Path(args.root or tempfile.mkdtemp(prefix="hpcinv-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in sorted(args.sizes):
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(n), "--shard-size", str(args.shard_size),
                 "--workers", str(args.workers), "--root", str(root)],
                capture_output=True, text=True, env={**os.environ, "RAY_DEDUP_LOGS": "0"},
            )  # fmt: skip
            if proc.returncode:
                raise SystemExit(f"N={n} failed:\n{proc.stderr[-4000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"N={n} done", file=sys.stderr)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    lo, hi = results[0], results[-1]
    per = {
        "generate_wall_ms_per_shard": ("generate", "wall_ms_per_shard"),
        "generate_driver_cpu_ms_per_shard": ("generate", "driver_cpu_ms_per_shard"),
        "manifest_read_us_per_shard": ("manifest", "read_us_per_shard"),
        "manifest_write_us_per_shard": ("manifest", "write_us_per_shard"),
        "resume_complete_us_per_shard": ("resume_complete", "us_per_shard"),
        "writer_resume_us_per_shard": ("resume_missing", "writer_resume_us_per_shard"),
        "startup_check_us_per_shard": ("verify", "startup_check_us_per_shard"),
        "verify_open_us_per_shard": ("verify", "open_us_per_shard"),
        "verify_full_us_per_shard": ("verify", "full_us_per_shard"),
        "train_epoch_us_per_sample": ("train_startup", "epoch_us_per_sample"),
        "train_to_first_step_s": ("train_startup", "to_first_step_s"),
    }
    ratios = {k: round(hi[a][b] / lo[a][b], 2) if lo[a][b] else None for k, (a, b) in per.items()}
    ratios["evaluate_startup_s"] = round(hi["evaluate_startup_s"] / lo["evaluate_startup_s"], 2)
    goals = {
        "resume_complete_s": hi["resume_complete"]["s"],
        "resume_complete_le_5s": hi["resume_complete"]["s"] <= 5,
        "every_ratio_le_1.5": all(r is None or r <= 1.5 for r in ratios.values()),
        "driver_peak_rss_mb": hi["driver_peak_rss_mb"],
        "driver_peak_le_1GiB": hi["driver_peak_rss_mb"] <= 1024,
    }
    emit({"shard_size": args.shard_size, "workers": args.workers, "sizes": results, "ratios": ratios, "goals": goals})


if __name__ == "__main__":
    main()
