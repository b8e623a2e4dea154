"""``hpcinv predict``: a trained network's velocity model for every sample of a dataset.

The network is rebuilt from its checkpoint (the model spec and normaliser stored there), checked
against the dataset (finite weights; the input and output shapes; the survey, grid and modelling it
was trained on, see :func:`survey_differences`), and applied to every sample of the dataset or its
split, shard by shard by a :class:`PredictWorker` (in this process, or in the Ray actors of the
``predict`` stage, :mod:`hpcinv.stages.predict`). The output is a velocity store (:mod:`hpcinv.store.velocities`):
velocities in m/s, the dataset index of each, the checkpoint (path, sha256, epoch) and the dataset
(path, config hash, split) they came from. Shards are written atomically; re-running the same command
finishes an interrupted one; on the same machine a rerun writes bit-identical velocities.
Works on gathers-only datasets (no true velocities are read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpcinv.checkpoint import Checkpoint, load_weights, nonfinite_entries, read_checkpoint
from hpcinv.config import PredictConfig
from hpcinv.errors import HpcinvError
from hpcinv.feed import Normaliser
from hpcinv.folders import DATASETS, distinct, require
from hpcinv.nets import build_model
from hpcinv.store import ShardedDataset, folder_lock, plan_shards, require_readable
from hpcinv.store.folder import check_store_folder, open_store_folder
from hpcinv.store.manifest import dataset_identity, read_manifest, select_range
from hpcinv.store.shard import SHARD_DIR, ShardSpec
from hpcinv.store.velocities import read_store_manifest, store_manifest, write_velocity_shard
from hpcinv.store.writer import Executor, StoreWriter

log = logging.getLogger(__name__)


def survey_differences(trained: dict, data: dict) -> list[str]:
    """Keys of the survey record (geometry, wavelet, time axis, grid, modelling) that differ."""
    keys = [k for k in sorted(set(trained) | set(data)) if trained.get(k) != data.get(k)]
    return [
        f"{k} differs"
        if isinstance(data.get(k), list) or isinstance(trained.get(k), list)
        else f"{k} is {data.get(k)!r} in the data but {trained.get(k)!r} in training"
        for k in keys
    ]


@dataclass
class Network:
    """A trained network, read once from its checkpoint and checked against a dataset."""

    checkpoint: Checkpoint
    model: torch.nn.Module
    norm: Normaliser
    warnings: list[str]

    @property
    def state(self) -> dict:
        return self.checkpoint.state


def load_network(path: str | Path, manifest: dict, dataset: str, allow_survey_mismatch: bool = False) -> Network:
    """The network of a checkpoint (read once), checked against the dataset's manifest."""
    checkpoint = read_checkpoint(path)
    state = checkpoint.state
    bad = nonfinite_entries(state["model"])
    if bad:
        raise HpcinvError(
            f"checkpoint {str(path)!r} holds NaN/Inf values (in {', '.join(bad[:3])}); the run that "
            "wrote it diverged, so there is nothing to apply"
        )
    spec = checkpoint.spec
    if (list(spec["gathers_shape"]), list(spec["velocity_shape"])) != (
        manifest["gathers_shape"],
        manifest["velocity_shape"],
    ):
        raise HpcinvError(
            f"checkpoint {str(path)!r} expects gathers {spec['gathers_shape']} -> velocity {spec['velocity_shape']} "
            f"but dataset {dataset!r} holds {manifest['gathers_shape']} -> {manifest['velocity_shape']} "
            "(a different survey or grid)"
        )
    warnings = []
    trained = checkpoint.training_survey
    if trained is None:
        warnings.append("the checkpoint does not record its training survey: not compared with the data")
    elif diffs := survey_differences(trained, manifest["survey"]):
        text = "; ".join(diffs)
        if not allow_survey_mismatch:
            raise HpcinvError(
                f"dataset {dataset!r} was recorded with another survey than checkpoint {str(path)!r} "
                f"was trained on: {text}; use data of the training survey, or pass "
                "--allow-survey-mismatch to apply it anyway"
            )
        warnings.append(f"survey differs from training (--allow-survey-mismatch): {text}")
    model = build_model(spec)
    load_weights(model, state, repr(str(path)))
    return Network(checkpoint, model.eval(), checkpoint.normaliser, warnings)


@torch.no_grad()
def predict_gathers(
    model: torch.nn.Module, norm: Normaliser, gathers_NSTR: np.ndarray, device: torch.device | None = None
) -> np.ndarray:
    """Velocities (n, nz, nx) float32 m/s of a batch of stored gathers (the network on ``device``)."""
    g = norm.gathers_fwd(torch.from_numpy(np.asarray(gathers_NSTR, dtype=np.float32)).to(device or "cpu"))
    return norm.velocity_inv(model(g).float())[:, 0].cpu().numpy()


def _hash(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def store_writer(out: Path, manifest: dict, lo: int) -> StoreWriter:
    """The writer of a velocity store being (re)made in ``out``, whose shards hold samples ``lo + ...``."""
    specs = plan_shards(manifest["n_samples"], manifest["shard_size"])
    return StoreWriter(out, manifest, specs, index_of=lambda s: np.arange(lo + s.start, lo + s.stop))


class PredictWorker:
    """Predicts and writes the shards of one velocity store (in this process, or in a Ray actor of
    :class:`~hpcinv.distributed.pool.ShardPool`): shard ``spec`` holds dataset samples ``lo + spec.start``..."""

    def __init__(
        self,
        model: torch.nn.Module,
        norm: Normaliser,
        dataset: str | Path,
        out: str | Path,
        lo: int,
        store_hash: str,
        device: str = "cpu",
    ):
        self.device = torch.device(device)
        self.model, self.norm = model.to(self.device).eval(), norm
        self.ds = ShardedDataset(dataset)
        self.folder, self.lo, self.hash = Path(out) / SHARD_DIR, lo, store_hash

    def run(self, spec: ShardSpec) -> dict:
        gathers = np.stack([self.ds.read(i)[0] for i in range(self.lo + spec.start, self.lo + spec.stop)])
        velocity = predict_gathers(self.model, self.norm, gathers, self.device)
        return write_velocity_shard(self.folder, spec, self.lo, velocity, config_hash=self.hash)


def predict_worker(state: dict, **kwargs) -> PredictWorker:
    """A :class:`PredictWorker` built where it runs (a Ray actor) from a checkpoint's ``state``."""
    model = build_model(state["model_spec"])
    load_weights(model, state, "for prediction")
    return PredictWorker(model, Normaliser(**state["normaliser"]), **kwargs)


@dataclass
class PredictPlan:
    """Everything ``predict`` will do, checked; nothing written yet."""

    network: Network
    dataset: Path
    lo: int
    hi: int
    out: Path
    manifest: dict  # of the store to make (or continue)
    restart: bool
    owner: Path | None = None  # the store ``out`` is part of (a refine's start)

    def worker_args(self, device: str = "cpu") -> dict:
        """What a :class:`PredictWorker` of this plan takes, besides the network."""
        return {
            "dataset": str(self.dataset.resolve()),
            "out": str(self.out.resolve()),
            "lo": self.lo,
            "store_hash": self.manifest["config_hash"],
            "device": device,
        }


def plan_predict(
    checkpoint: str | Path,
    dataset: str | Path,
    out: str | Path,
    settings: PredictConfig | None = None,
    *,
    restart: bool = False,
    network: Network | None = None,
    owner: Path | None = None,
) -> PredictPlan:
    """Check every input of a prediction of ``dataset`` into ``out`` -- the dataset (its split and samples
    as ``settings`` say), the checkpoint (``network``, if it is loaded already), the output folder --
    before anything is written."""
    s = settings or PredictConfig()
    out = Path(out)
    require(dataset, DATASETS, what="--data")
    manifest = require_readable(dataset, s.split, full=s.verify == "full")
    lo, hi = select_range(manifest, s.split, s.samples, f"dataset {str(dataset)!r}")
    network = network or load_network(checkpoint, manifest, str(dataset), s.allow_survey_mismatch)
    distinct(out, {"--data": dataset, "the checkpoint's run": network.checkpoint.run})
    for text in network.warnings:
        log.warning("%s", text)
    source = {
        "checkpoint": str(network.checkpoint.file.resolve()),
        "checkpoint_sha256": network.checkpoint.sha256,
        "epoch": network.checkpoint.epoch,
        "model": network.checkpoint.spec["config"]["name"],
        "warnings": network.warnings,
    }
    request = {
        "checkpoint_sha256": network.checkpoint.sha256,
        "dataset": dataset_identity(manifest),
        "range": [lo, hi],
        "shard_size": s.shard_size,
    }
    new = store_manifest(
        "prediction", _hash(request), dataset, manifest, s.split, (lo, hi), s.shard_size, source, request=request
    )
    check_store_folder(out, new, restart=restart, command="predict", owner=owner)  # before anything is written
    return PredictPlan(network, Path(dataset), lo, hi, out, new, restart, owner)


def run_predict(
    plan: PredictPlan,
    *,
    progress: bool = True,
    predicted: np.ndarray | None = None,
    executor: Executor | None = None,
    device: str = "cpu",
) -> dict:
    """Write (or finish) the store of ``plan``: its shards computed by ``executor`` (e.g. a pool of Ray
    actors), else in this process on ``device``; ``predicted``: the velocities of samples [lo, hi), when
    the caller has computed them already. The store's lock is taken here, unless it is part of another
    (``plan.owner``, whose writer holds both)."""
    out, network = plan.out, plan.network
    with contextlib.ExitStack() as held:
        held.enter_context(folder_lock(plan.dataset, shared=True, create=False))
        if plan.owner is None:
            held.enter_context(folder_lock(out, what="velocity store"))
        else:
            out.mkdir(exist_ok=True)
        store = open_store_folder(out, plan.manifest, restart=plan.restart, command="predict", owner=plan.owner)
        writer = store_writer(out, store, plan.lo)
        if executor is None:
            worker = PredictWorker(network.model, network.norm, **plan.worker_args(device))

            def in_process(specs: list[ShardSpec]):
                for spec in specs:
                    if predicted is None:
                        yield worker.run(spec)
                    else:
                        velocity = predicted[spec.start : spec.stop]
                        yield write_velocity_shard(worker.folder, spec, plan.lo, velocity, config_hash=worker.hash)

            executor = in_process
        writer.run(executor, desc="predict", progress=progress)
    final = writer.manifest
    return {
        "out": str(out),
        "samples": final["n_samples"],
        "computed_shards": len(writer.todo),
        "skipped_shards": writer.skipped,
        "complete": final["complete"],
        "warnings": network.warnings,
    }


def dataset_of(store_root: str | Path) -> dict:
    """The dataset manifest a velocity store was made from (by the path it records)."""
    return read_manifest(read_store_manifest(store_root)["dataset"]["path"])
