"""Everything that changes *how* a network runs, applied in one place, outside the model code.

* activation checkpointing (``none | blocks | units``): torch's ``checkpoint_wrapper`` around the
  network's encoder/decoder blocks, or around every conv → BN → ReLU unit (finer: less memory,
  the same recompute), non-reentrant;
* mixed precision (``fp32 | bf16 | fp16``): an autocast context and, for fp16, a GradScaler;
* DDP wrapping is left to Ray Train's ``prepare_model`` in the worker loop.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)

from hpcinv.nets.fcnvmb import ConvUnit

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def checkpoint_targets(model: nn.Module, mode: str) -> list[nn.Module]:
    if mode == "none":
        return []
    if mode == "blocks":
        return list(model.checkpoint_blocks())
    if mode == "units":
        units = [m for m in model.modules() if isinstance(m, ConvUnit)]
        # InversionNet's blocks are already single conv units
        return units or list(model.checkpoint_blocks())
    raise ValueError(f"activation_checkpointing must be none, blocks or units, got {mode!r}")


def apply_checkpointing(model: nn.Module, mode: str) -> nn.Module:
    """Wrap the chosen modules in place; parameters and state_dict keys are unchanged."""
    targets = {id(m) for m in checkpoint_targets(model, mode)}
    if targets:
        wrapper = functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        apply_activation_checkpointing(model, checkpoint_wrapper_fn=wrapper, check_fn=lambda m: id(m) in targets)
    return model


def autocast(precision: str, device: torch.device):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
