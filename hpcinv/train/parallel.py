"""Everything that changes *how* a network runs, applied in one place, outside the model code.

* activation checkpointing (torch's non-reentrant ``checkpoint_wrapper``):
  ``blocks`` wraps each encoder/decoder block (only block inputs stay saved; a block's internals are
  recomputed in backward), ``units`` wraps each conv → BN → ReLU unit, ``nested`` does both, so a
  block's recompute itself keeps only unit inputs (lowest memory, most recompute). Combined with
  bf16 autocast, ``nested`` stores ≈ 0.2 × the activations of a plain fp32 step (benchmarks/training.py).
  The recompute runs BatchNorm on the same batch statistics and then restores its running
  statistics (:func:`_recompute_keeps_bn_stats`), so a checkpointed network ends every step with
  exactly the weights, gradients and BatchNorm state of the unchecked one (bit for bit on the CPU; on a
  GPU up to the order of cuDNN's sums unless deterministic algorithms are on);
* mixed precision (``fp32 | bf16 | fp16``): an autocast context and, for fp16, a GradScaler;
* DDP wrapping is left to Ray Train's ``prepare_model`` in the worker loop.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.nn.modules.batchnorm import _BatchNorm

from hpcinv.nets import Net
from hpcinv.nets.fcnvmb import ConvUnit

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


CHECKPOINT_MODES = ("none", "blocks", "units", "nested")


def checkpoint_targets(model: Net, mode: str) -> list[nn.Module]:
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"activation_checkpointing must be one of {CHECKPOINT_MODES}, got {mode!r}")
    blocks = list(model.checkpoint_blocks()) if mode in ("blocks", "nested") else []
    units = [m for m in model.modules() if isinstance(m, ConvUnit)] if mode in ("units", "nested") else []
    if mode == "units" and not units:  # InversionNet's blocks are already single conv units
        return list(model.checkpoint_blocks())
    return blocks + units


def _running_stats(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``running_mean``, ``running_var``, ``num_batches_tracked`` of a BatchNorm that tracks them."""
    mean, var, count = bn.running_mean, bn.running_var, bn.num_batches_tracked
    assert mean is not None and var is not None and count is not None  # present with track_running_stats
    return mean, var, count


@contextlib.contextmanager
def _running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` run exactly as in training (batch statistics, the same saved
    tensors), and their running statistics and ``num_batches_tracked`` are put back afterwards."""
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    kept = [[b.clone() for b in _running_stats(m)] for m in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, saved in zip(layers, kept, strict=True):
                for buffer, value in zip(_running_stats(m), saved, strict=True):
                    buffer.copy_(value)


def _recompute_keeps_bn_stats(module: nn.Module):
    """``context_fn`` for torch's checkpoint: the first forward runs as usual, the recompute in backward
    leaves BatchNorm's running statistics alone (they were updated once, by the first forward)."""
    return contextlib.nullcontext(), _running_stats_frozen(module)


def _bn_safe_checkpoint_wrapper(module: nn.Module) -> nn.Module:
    return checkpoint_wrapper(
        module,
        checkpoint_impl=CheckpointImpl.NO_REENTRANT,
        context_fn=functools.partial(_recompute_keeps_bn_stats, module),
    )


def apply_checkpointing(model: Net, mode: str) -> Net:
    """Wrap the chosen modules in place; parameters and state_dict keys are unchanged."""
    targets = {id(m) for m in checkpoint_targets(model, mode)}
    if targets:
        apply_activation_checkpointing(
            model, checkpoint_wrapper_fn=_bn_safe_checkpoint_wrapper, check_fn=lambda m: id(m) in targets
        )
    return model


def autocast(precision: str, device: torch.device):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
