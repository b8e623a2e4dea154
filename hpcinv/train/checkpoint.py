"""Full-state training checkpoints: one ``state.pt`` per checkpoint folder, loaded with weights_only.

The state holds the model (unwrapped from DDP), optimizer, scheduler and GradScaler states, epoch and
global step, the RNG states (torch, numpy, python), the resolved config, the model spec (to rebuild
the network) and the normaliser (to map outputs back to m/s). Everything is tensors, numbers,
strings and containers of them, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpcinv.errors import HpcinvError
from hpcinv.fileio import fsync_dir

STATE = "state.pt"


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                     gauss], "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def save_state(folder: str | os.PathLike, state: dict) -> Path:
    """Write ``folder/state.pt`` atomically (temp + fsync + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / STATE
    tmp = folder / f".{STATE}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(folder)
    return final


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A ``state.pt`` from a file, a checkpoint folder, or a run folder (its latest checkpoint)."""
    p = Path(path)
    if p.is_file():
        return p
    if (p / STATE).is_file():
        return p / STATE
    if p.is_dir():
        found = sorted(p.glob(f"checkpoint_*/{STATE}"), key=lambda f: f.parent.name)
        if found:
            return found[-1]
    raise HpcinvError(f"no checkpoint at {str(path)!r}: expected a {STATE}, a checkpoint folder or a run folder")


def load_state(path: str | os.PathLike) -> dict:
    file = find_checkpoint(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HpcinvError(f"cannot read checkpoint {str(file)!r}: {exc}") from None
    if not isinstance(state, dict) or "model" not in state or "model_spec" not in state:
        raise HpcinvError(f"{str(file)!r} is not an hpcinv checkpoint (no model / model_spec)")
    return state


def load_weights(model: nn.Module, state: dict, what: str) -> None:
    """Load ``state['model']`` into ``model``, naming any mismatch in one clear error."""
    own = unwrap(model).state_dict()
    theirs = state["model"]
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = [k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape]
    if missing or unexpected or shapes:
        spec = state.get("model_spec", {})
        raise HpcinvError(
            f"checkpoint {what} does not fit this network (it holds {spec.get('config', {}).get('name')} for "
            f"gathers {spec.get('gathers_shape')} -> {spec.get('velocity_shape')}): "
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} reshaped tensors"
            + (f", e.g. {(missing or unexpected or shapes)[0]}" if missing or unexpected or shapes else "")
        )
    unwrap(model).load_state_dict(theirs)


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def weights_digest(model_or_state) -> str:
    """sha256 over the learnable weights of a model or state_dict.

    BatchNorm running statistics are left out: under DDP each rank updates its own between the
    broadcasts from rank 0 (whose statistics are the ones checkpointed).
    """
    sd = model_or_state if isinstance(model_or_state, dict) else unwrap(model_or_state).state_dict()
    digest = hashlib.sha256()
    for key in sorted(k for k in sd if not k.endswith(BN_BUFFERS)):
        digest.update(key.encode())
        digest.update(sd[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
