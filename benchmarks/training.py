"""Training-step benchmarks at the FCNVMB paper input size (29 x 400 x 301 -> 201 x 301), CPU or GPU.

1. Activation memory per sample and step time for each activation-checkpointing mode, in fp32 and
   bf16. Peak memory of one forward + backward (gradients already allocated) is read from the
   allocator: on GPU ``max_memory_allocated``; on CPU the peak "Total Allocated" of the profiler's
   memory events within it. Activation memory per sample = (peak at batch 2 − peak at batch 1), which
   removes what does not scale with the batch. (Until the model-domain U-Net, the window was the whole
   step; with little activation memory the optimizer's temporaries set the peak at both batch sizes.)
2. hpcinv's ``train_step`` (autocast context, GradScaler, the code the Ray loop runs) against a plain
   PyTorch loop of the same network and batch, interleaved in one process.
3. ``bn_restore_cost``: each checkpointing mode with hpcinv's wrapper (BatchNorm running statistics put
   back after the recompute, so they match the unchecked network) against torch's plain wrapper
   (statistics updated a second time by the recompute), interleaved, batch 1, fp32.

    python benchmarks/training.py [--width 64] [--steps 3]    # --width 16 for a quick run
    python benchmarks/training.py --model model_domain_unet [--encoder columns] [--latent-scale 1] --width 32

``--model model_domain_unet`` measures the model-domain U-Net at the same input and output (no
``reference`` row: that is FCNVMB's official decoder; its ratios are against its own ``none/fp32``).

Prints one JSON document. Ratios are measured in one run against two baselines, both fp32 without
checkpointing: ``reference`` -- the network exactly as the official code computes it (each decoder
level zero-pads the skip and concatenates it with the upsampled features before the conv) -- and
hpcinv's own ``none/fp32``, whose decoder convolves without building that padding and concatenation
(``hpcinv.nets.fcnvmb.conv_concat``: same parameters, same outputs, less memory even unchecked).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

from hpcinv.nets import FCNVMB, ModelDomainUNet  # noqa: E402
from hpcinv.nets.fcnvmb import Up  # noqa: E402
from hpcinv.train.engine import train_step  # noqa: E402
from hpcinv.train.parallel import apply_checkpointing, autocast, checkpoint_targets, grad_scaler  # noqa: E402


def _official_up(self: Up, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The official ``unetUp.forward``: pad the skip, concatenate, convolve."""
    x = self.up(x)
    dz, dx = x.shape[2] - skip.shape[2], x.shape[3] - skip.shape[3]
    skip = F.pad(skip, [dx // 2, (dx + 1) // 2, dz // 2, (dz + 1) // 2])
    return self.conv(torch.cat([skip, x], dim=1))


NETWORK = {"model": "fcnvmb", "encoder": "columns", "latent_scale": 1}  # set by main() from the arguments


def network(width: int) -> torch.nn.Module:
    """The network measured, at the paper's input and output (29 x 400 x 301 -> 201 x 301)."""
    if NETWORK["model"] == "model_domain_unet":
        return ModelDomainUNet(29, (400, 301), (201, 301), width, 4, NETWORK["encoder"], NETWORK["latent_scale"])
    return FCNVMB(29, (201, 301), width, 4)


def make(width: int, mode: str, device: torch.device):
    torch.manual_seed(0)
    model = network(width)
    if mode == "reference":
        for up in model.ups:
            up.forward = types.MethodType(_official_up, up)
    else:
        apply_checkpointing(model, mode)
    model = model.to(device)
    return model, torch.optim.Adam(model.parameters(), 1e-3)


def batch(b: int, device: torch.device):
    g = torch.Generator().manual_seed(b)
    return (torch.randn(b, 29, 400, 301, generator=g).to(device), torch.randn(b, 1, 201, 301, generator=g).to(device))


def step_peak_mb(fn, device: torch.device) -> float:
    """Peak allocated memory during ``fn()`` beyond what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        prof.export_chrome_trace(tmp.name)
        events = json.loads(Path(tmp.name).read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]") / 2**20


def measure(mode: str, precision: str, b: int, width: int, steps: int, device: torch.device) -> dict:
    model, opt = make(width, mode, device)
    scaler = grad_scaler(precision, device)
    x, y = batch(b, device)

    def step():
        train_step(model, x, y, opt, scaler, F.mse_loss, precision, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: optimizer state and caches exist before measuring
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"peak_mb": forward_backward_peak_mb(model, x, y, precision, device), "step_s": min(times)}


def forward_backward_peak_mb(model, x, y, precision: str, device: torch.device) -> float:
    """Peak memory of one forward + backward with the gradients already allocated: what is left of the
    step (the gradients, the optimizer's update) does not grow with the batch, and at low activation
    memory the optimizer's temporaries would otherwise set the peak at both batch sizes alike."""
    model.zero_grad(set_to_none=False)

    def forward_backward():
        with autocast(precision, device):
            loss = F.mse_loss(model(x).float(), y)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step_peak_mb(forward_backward, device)


def plain_vs_hpcinv(width: int, b: int, steps: int, device: torch.device) -> dict:
    model, opt = make(width, "none", device)
    scaler = grad_scaler("fp32", device)
    x, y = batch(b, device)
    plain, ours = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        opt.step()
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        train_step(model, x, y, opt, scaler, F.mse_loss, "fp32", device)
        ours.append(time.perf_counter() - t0)
    return {
        "plain_step_s": round(min(plain[1:]), 4),
        "hpcinv_step_s": round(min(ours[1:]), 4),
        "hpcinv_vs_plain": round(min(ours[1:]) / min(plain[1:]), 4),
    }


def bn_restore_cost(width: int, steps: int, device: torch.device) -> dict:
    plain_wrapper = functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
    x, y = batch(1, device)
    rows = {}
    for mode in ("blocks", "units", "nested"):
        runs = {}
        for name in ("restored", "updated_twice"):
            torch.manual_seed(0)
            model = network(width)
            if name == "restored":
                apply_checkpointing(model, mode)
            else:
                targets = {id(m) for m in checkpoint_targets(model, mode)}
                apply_activation_checkpointing(
                    model, checkpoint_wrapper_fn=plain_wrapper, check_fn=lambda m, t=targets: id(m) in t
                )
            model = model.to(device)
            runs[name] = (model, torch.optim.Adam(model.parameters(), 1e-3), grad_scaler("fp32", device), [])
        for _ in range(steps + 1):
            for model, opt, scaler, times in runs.values():
                t0 = time.perf_counter()
                train_step(model, x, y, opt, scaler, F.mse_loss, "fp32", device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        best = {name: min(r[3][1:]) for name, r in runs.items()}
        rows[f"{mode}/fp32"] = {
            "restored_step_s": round(best["restored"], 4),
            "updated_twice_step_s": round(best["updated_twice"], 4),
            "restored_vs_updated_twice": round(best["restored"] / best["updated_twice"], 4),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=64, help="first-level filters (64 = the paper)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=("fcnvmb", "model_domain_unet"), default="fcnvmb")
    parser.add_argument("--encoder", choices=("columns", "resample"), default="columns", help="model_domain_unet")
    parser.add_argument("--latent-scale", type=int, choices=(1, 2), default=1, help="model_domain_unet")
    parser.add_argument("--skip-bn-cost", action="store_true", help="leave out the BatchNorm-restore comparison")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16 (a CPU run: fp32)")
    args = parser.parse_args()
    NETWORK.update(model=args.model, encoder=args.encoder, latent_scale=args.latent_scale)
    device = torch.device(args.device)
    rows = {}
    modes = ("none", "blocks", "units", "nested")
    reference = [("reference", "fp32")] if args.model == "fcnvmb" else []
    settings = reference + [(m, p) for p in args.precisions.split(",") for m in modes]
    for mode, precision in settings:
        m1 = measure(mode, precision, 1, args.width, args.steps, device)
        m2 = measure(mode, precision, 2, args.width, args.steps, device)
        rows[f"{mode}/{precision}"] = {
            "activation_mb_per_sample": round(m2["peak_mb"] - m1["peak_mb"], 1),
            "step_s_per_sample": round(m2["step_s"] / 2, 4),
        }
    bases = (("reference", rows.get("reference/fp32")), ("none_fp32", rows["none/fp32"]))
    for name, base in ((n, b) for n, b in bases if b is not None):
        for row in rows.values():
            row[f"activation_vs_{name}"] = round(row["activation_mb_per_sample"] / base["activation_mb_per_sample"], 3)
            row[f"step_time_vs_{name}"] = round(row["step_s_per_sample"] / base["step_s_per_sample"], 3)
    emit(
        {
            "benchmark": "training",
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
            "model": args.model,
            **({"encoder": args.encoder, "latent_scale": args.latent_scale} if args.model != "fcnvmb" else {}),
            "width": args.width,
            "parameters": sum(p.numel() for p in network(args.width).parameters()),
            "input": [29, 400, 301],
            "output": [201, 301],
            "modes": rows,
            "step_overhead_batch1": plain_vs_hpcinv(args.width, 1, args.steps, device),
            **({} if args.skip_bn_cost else {"bn_restore_cost": bn_restore_cost(args.width, args.steps, device)}),
        }
    )


if __name__ == "__main__":
    main()
