"""Full-state training checkpoints: ``RUN_DIR/checkpoint_epochNNNNNN/state.pt``, loaded with weights_only.

The state holds the model (unwrapped from DDP), optimizer, scheduler and GradScaler states, epoch and
global step, the RNG states (torch, numpy, python), the resolved config, the model spec (to rebuild
the network), the normaliser (to map outputs back to m/s) and the training data's survey. Everything
is tensors, numbers, strings and containers of them, so ``torch.load(weights_only=True)`` reads it.

hpcinv writes its checkpoints itself: each is built in a hidden folder and renamed into place, so a
``checkpoint_epoch*`` folder exists only complete (the rename is the completion mark) and a resume
always starts from the newest one on disk -- also after a SIGINT, a SIGKILL or a lost worker that hit
between writing a checkpoint and Ray registering it. A checkpoint holding a NaN or Inf is never
written and never loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpcinv.config import folder_and_split
from hpcinv.errors import HpcinvError
from hpcinv.feed.normalise import Normaliser
from hpcinv.fileio import TMP_INFIX, atomic_path
from hpcinv.folders import CHECKPOINT_PREFIX, inspect

STATE = "state.pt"
CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_PREFIX}\d{{6}}")


def unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", None)  # DistributedDataParallel / DataParallel wrap the model as .module
    return inner if isinstance(inner, nn.Module) else model


def rng_state() -> dict:
    state = np.random.get_state(legacy=True)
    assert isinstance(state, tuple)  # the global RandomState is an MT19937, whose legacy state is a tuple
    kind, keys, pos, has_gauss, gauss = state
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def save_state(folder: str | os.PathLike, state: dict) -> Path:
    """Write ``folder/state.pt`` atomically (temp + fsync + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / STATE) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    return folder / STATE


def checkpoint_dir(run_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(run_dir) / f"{CHECKPOINT_PREFIX}{epoch:06d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoint folders of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if CHECKPOINT_NAME.fullmatch(p.name) and (p / STATE).is_file())


def save_checkpoint(run_dir: str | os.PathLike, epoch: int, state: dict, keep: int) -> Path:
    """Publish ``state`` as ``checkpoint_epoch{epoch}`` atomically, then delete all but the newest ``keep``."""
    bad = nonfinite_entries(state)
    if bad:
        raise HpcinvError(f"refusing to write a checkpoint holding NaN/Inf values (in {', '.join(bad[:3])})")
    final = checkpoint_dir(run_dir, epoch)
    with atomic_path(final, folder=True) as tmp, open(tmp / STATE, "wb") as fh:
        torch.save(state, fh)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial_checkpoints(run_dir: str | os.PathLike) -> None:
    """Folders of a checkpoint writer that was killed before its rename (never read by anything)."""
    for leftover in Path(run_dir).glob(f".{CHECKPOINT_PREFIX}*{TMP_INFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def nonfinite_entries(tree, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) state that hold a NaN or Inf."""
    if isinstance(tree, torch.Tensor):
        return [prefix or "tensor"] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list | tuple) else ()
    found = []
    for key, value in items:
        found += nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A ``state.pt`` from a file, a checkpoint folder, or a run folder (its newest complete checkpoint)."""
    p = Path(path)
    if p.is_file():
        return p
    if (p / STATE).is_file():
        return p / STATE
    found = list_checkpoints(p)
    if found:
        return found[-1] / STATE
    folder = inspect(p)
    if folder.kind == "run":
        raise HpcinvError(f"training run {str(path)!r} has no complete checkpoint yet; train it (longer) first")
    if folder.is_hpcinv:
        raise HpcinvError(f"{folder.describe()}, not a training run or checkpoint (made by `hpcinv train`)")
    raise HpcinvError(f"no checkpoint at {str(path)!r}: expected a {STATE}, a checkpoint folder or a run folder")


def _unreadable(file: Path, data: bytes, exc: BaseException) -> HpcinvError:
    """One line for a checkpoint file torch cannot load: not a checkpoint, cut short, or holding code."""
    name = f"checkpoint {str(file)!r}"
    if not data.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        return HpcinvError(
            f"{name} is not a checkpoint (not the archive torch.save writes); give a state.pt, a checkpoint "
            "folder or a run folder made by `hpcinv train`"
        )
    if isinstance(exc, pickle.UnpicklingError):
        return HpcinvError(
            f"{name} holds Python objects besides tensors and numbers; hpcinv loads checkpoints with "
            "weights_only=True and never runs code stored in one, so it is not an hpcinv checkpoint"
        )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return HpcinvError(f"{name} is truncated or damaged (its archive has no end); use another checkpoint")
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return HpcinvError(f"{name} is damaged ({reason}); use another checkpoint of the run")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read once: the file, the sha256 of its bytes and its state (on the CPU), with what
    inference needs of it as typed properties."""

    file: Path
    sha256: str
    state: dict

    @property
    def run(self) -> Path | None:
        """The run folder it belongs to (None for a bare state.pt outside a run)."""
        parent = self.file.parent
        return parent.parent if CHECKPOINT_NAME.fullmatch(parent.name) else None

    @property
    def spec(self) -> dict:
        """What rebuilds the network (:func:`hpcinv.nets.build_model`): its config and shapes."""
        return self.state["model_spec"]

    @property
    def normaliser(self) -> Normaliser:
        """How the network's inputs were scaled and its outputs map back to m/s."""
        return Normaliser(**self.state["normaliser"])

    @property
    def epoch(self) -> int | None:
        return self.state.get("epoch")

    @property
    def training_survey(self) -> dict | None:
        """The survey record (geometry, wavelet, time axis, grid, modelling) of the training data, or None
        for a checkpoint that does not record it."""
        survey = (self.state.get("dataset") or {}).get("survey")
        return json.loads(survey) if isinstance(survey, str) else survey

    @property
    def training_data(self) -> list[tuple[str, str | None]] | None:
        """(dataset, split) pairs the network learned from, where the checkpoint records them."""
        data = (self.state.get("config") or {}).get("data") or {}
        if not data.get("train"):
            return None
        return [(data["train"], data.get("train_split")), *map(folder_and_split, data.get("mix") or [])]

    @property
    def velocity_range(self) -> tuple[float, float] | None:
        """The velocity range (m/s) the network learned to output, where the checkpoint tells it."""
        if "velocity_range_mps" in self.state:
            low, high = self.state["velocity_range_mps"]
            return float(low), float(high)
        norm = self.normaliser
        return (norm.v_min, norm.v_max) if norm.velocity == "minmax" else None


def payload(rank_state: dict, cfg, spec: dict, norm: Normaliser, metrics: dict, v_range, manifest: dict) -> dict:
    """What a training checkpoint holds besides a rank's state (``Trainer.state_dict()``): the resolved
    config, the network's spec, the normaliser, the epoch's metrics, the velocity range it learned and
    the training data's config hash and survey -- all inference needs (see :class:`Checkpoint`)."""
    return rank_state | {
        "config": cfg.model_dump(mode="json"),
        "model_spec": spec,
        "normaliser": norm.to_dict(),
        "metrics": metrics,
        "velocity_range_mps": list(v_range),
        "dataset": {
            "train": str(cfg.data.train),
            "mix": list(cfg.data.mix),
            "config_hash": manifest["config_hash"],
            "survey": json.dumps(manifest["survey"]),  # a string: read by every hpcinv since the first
        },
    }


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Find (:func:`find_checkpoint`), read and load a checkpoint once, with ``weights_only=True``: from
    then on nothing that happens to the file (a training run rotating its checkpoints) changes what
    this process uses; any way it can be unreadable is one line."""
    file = find_checkpoint(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise HpcinvError(f"cannot read checkpoint {str(file)!r}: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings():  # (torch warns about pickle protocols before it refuses a file)
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable(file, data, exc) from None
    if not isinstance(state, dict) or "model" not in state or "model_spec" not in state:
        raise HpcinvError(f"{str(file)!r} is not an hpcinv checkpoint (no model / model_spec)")
    return Checkpoint(file, hashlib.sha256(data).hexdigest(), state)


def check_archive(file: str | os.PathLike) -> None:
    """A cheap check that a checkpoint file is whole (its zip archive ends): it reads the file's end only."""
    file = Path(file)
    try:
        with open(file, "rb") as fh:
            head = fh.read(4)
        whole = zipfile.is_zipfile(file)
    except OSError as exc:
        raise HpcinvError(f"cannot read checkpoint {str(file)!r}: {exc.strerror or exc}") from None
    if not whole:
        raise _unreadable(file, head, zipfile.BadZipFile())


def load_state(path: str | os.PathLike) -> dict:
    return read_checkpoint(path).state


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
