"""A training run (``hpcinv train``): the network, its data and how they are fed, the loop, the ranks,
W&B tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hpcinv.config.base import RESUMABLE, Section, folder_and_split
from hpcinv.errors import ConfigError


class ModelSection(Section):
    """Network choice and size. ``fcnvmb`` at base_channels 64 / depth 4 is the paper's 31.06 M U-Net;
    ``model_domain_unet`` maps the gathers onto the velocity grid first and runs its U-Net there."""

    name: Literal["fcnvmb", "inversionnet", "model_domain_unet"] = "fcnvmb"
    base_channels: int = Field(64, ge=1, description="fcnvmb, model_domain_unet: filters of the first level")
    depth: int = Field(4, ge=1, le=6, description="fcnvmb, model_domain_unet: pooling levels")
    skip: Literal["pooled", "standard"] = Field("pooled", description="fcnvmb: pooled = the official code")
    batchnorm: bool = True
    dims: list[int] = Field([32, 64, 128, 256, 512], description="inversionnet: the five widths")
    encoder: Literal["columns", "resample"] = Field(
        "columns",
        description="model_domain_unet: how the gathers reach the latent grid (columns: a learned "
        "time-to-depth map per receiver; resample: time resampled onto depth)",
    )
    latent_scale: Literal[1, 2] = Field(
        1, description="model_domain_unet: the latent grid is the velocity grid (1) or every other cell (2)"
    )


class TrainDataSection(Section):
    """Datasets (folders made by ``hpcinv generate``) and how they are fed."""

    train: str | None = Field(None, description="training dataset folder")
    train_split: str | None = Field(None, description="split of the training dataset (null: all samples)")
    mix: list[str] = Field(
        [],
        description="more training datasets, each FOLDER or FOLDER:SPLIT, trained on together "
        "with data.train (same survey and grid; normalised by their pooled statistics)",
    )
    val: str | None = Field(None, description="validation dataset folder (null: no validation)")
    val_split: str | None = None
    gathers_norm: Literal["none", "standard", "openfwi"] = "standard"
    velocity_norm: Literal["none", "minmax", "standard"] = "minmax"
    v_range_mps: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[min, max] for minmax; null: the dataset's"
    )
    mirror_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="chance that a training sample is mirrored left-right (model flipped, "
        "shots and receivers reversed: exact on a symmetric survey, refused on another)",
    )
    shuffle_window_shards: int = Field(
        32,
        ge=1,
        description="a rank's shards are shuffled, then taken this many at a time and their samples "
        "shuffled together: a batch reads from about this many files (a rank with no more shards than this "
        "shuffles all its samples at once)",
    )
    loader_workers: int = Field(
        1,
        json_schema_extra=RESUMABLE,
        ge=0,
        description="reader processes per training worker (each reads whole batches, one HDF5 read per "
        "shard touched, into reused shared-memory buffers; 0: read in the training process's feed thread)",
    )
    cache: Literal["none", "memory"] = Field(
        "none",
        json_schema_extra=RESUMABLE,
        description="memory: read this rank's samples once, as stored (float16 gathers), into one "
        "contiguous tensor: on the GPU when it takes at most data.cache_gpu_fraction of its memory and fits in "
        "what is free, else in pinned host memory; refused when the node has not the memory available",
    )
    cache_gpu_fraction: float = Field(
        0.3,
        json_schema_extra=RESUMABLE,
        ge=0.0,
        le=0.9,
        description="largest share of a GPU's memory that data.cache=memory may take there (0: always in host memory)",
    )
    prefetch_factor: int = Field(
        2, ge=1, description="batches each reader process reads ahead", json_schema_extra=RESUMABLE
    )
    prefetch_batches: int = Field(
        2,
        json_schema_extra=RESUMABLE,
        ge=1,
        description="batches converted and normalised on the device ahead of "
        "the training step (by a background thread)",
    )
    verify: Literal["fast", "full"] = Field(
        "fast",
        json_schema_extra=RESUMABLE,
        description="before training, check every shard to be read: fast = size, HDF5 header, sample "
        "range and config hash (milliseconds per shard; damaged samples are caught by their per-chunk checksums "
        "when read); full = also each shard's sha256 (reads every byte once)",
    )


class TrainSection(Section):
    """The ``train:`` section: how a run trains -- epochs, optimiser and schedule, loss, precision,
    activation checkpointing, checkpoints, the network it starts from and the failures it survives."""

    epochs: int = Field(100, ge=1, json_schema_extra=RESUMABLE)
    batch_size: int = Field(10, ge=1, description="per training worker")
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    scale_lr_with_workers: bool = Field(
        False,
        description="OpenFWI: lr x world size (the linear scaling rule; "
        "use train.warmup_epochs with it on many workers)",
    )
    warmup_epochs: float = Field(
        0.0,
        ge=0,
        description="linear learning-rate warm-up from ~0 over this many epochs, step by step (then the schedule)",
    )
    accumulate_steps: int = Field(
        1,
        ge=1,
        description="batches whose gradients are summed per optimizer step "
        "(effective batch: batch_size x accumulate_steps x workers)",
    )
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_epochs: int = Field(30, ge=1, description="step schedule: epochs between decays")
    gamma: float = Field(0.1, gt=0, description="step schedule: decay factor")
    loss: Literal["mse", "l1"] = "mse"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    activation_checkpointing: Literal["none", "blocks", "units", "nested"] = "none"
    grad_clip: float | None = Field(None, gt=0)
    seed: int = 0
    init_from: str | None = Field(None, description="checkpoint (file, folder or run) to fine-tune from")
    freeze_encoder: bool = False
    checkpoint_every_epochs: int = Field(1, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(
        2, ge=0, description="worker-group restarts from the last checkpoint", json_schema_extra=RESUMABLE
    )
    stop_after_epochs: int | None = Field(
        None, ge=1, description="stop early (the run can be resumed)", json_schema_extra=RESUMABLE
    )
    record_weights_digest: bool = Field(
        False,
        json_schema_extra=RESUMABLE,
        description="every rank logs a sha256 of its weights at each epoch's end (shows that DDP keeps "
        "ranks in step; costs a device-to-host copy of the whole model per rank and epoch)",
    )
    check_every_steps: int = Field(
        16,
        json_schema_extra=RESUMABLE,
        ge=1,
        description="steps between the checks for NaN/Inf and damaged samples on every rank (each is one "
        "collective and one device-to-host read; also done at every epoch's end, before any checkpoint)",
    )


class ScalingSection(Section):
    """The ``scaling:`` section: how many DDP ranks, on what."""

    num_workers: int = Field(2, ge=1, description="DDP ranks (Ray Train workers)")
    use_gpu: bool = False
    cpus_per_worker: int = Field(1, ge=1)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK", description="how Ray places the ranks on nodes (SPREAD: one per node where possible)"
    )

    def resources(self) -> dict[str, int]:
        """What the ranks take from the cluster: CPUs, and one GPU each when ``use_gpu``."""
        need = {"CPU": self.num_workers * self.cpus_per_worker}
        if self.use_gpu:
            need["GPU"] = self.num_workers
        return need

    def check_fits(self, have: dict[str, float], where: str, remedy: str) -> None:
        """The one resource check (SLURM request at submission, Ray cluster at start): Ray Train would
        otherwise wait forever for ranks that cannot be placed."""
        need = self.resources()
        if any(have.get(k, 0) < v for k, v in need.items()):
            has = {k: have.get(k, 0) for k in need}
            raise ConfigError(
                f"scaling.num_workers={self.num_workers} x cpus_per_worker={self.cpus_per_worker}"
                f"{' (one GPU each)' if self.use_gpu else ''} needs {need} but {where} has {has}; {remedy}"
            )


class TrackingSection(Section):
    mode: Literal["online", "offline", "disabled"] = "offline"
    project: str = "hpcinv"
    entity: str | None = None
    log_every_steps: int = Field(10, ge=1)
    figures: bool = True
    init_timeout_s: float = Field(
        20.0,
        gt=0,
        description="online: seconds to reach the W&B server (checked once by the driver, and bounding "
        "wandb.init) before logging offline instead",
    )


class TrainConfig(Section):
    """One training run: model, data, optimisation, scaling, tracking."""

    model: ModelSection = ModelSection()
    data: TrainDataSection = TrainDataSection()
    train: TrainSection = TrainSection()
    scaling: ScalingSection = ScalingSection()
    tracking: TrackingSection = Field(TrackingSection(), json_schema_extra=RESUMABLE)

    @model_validator(mode="after")
    def _datasets(self) -> TrainConfig:
        if not self.data.train:
            raise ValueError("data.train must name a dataset folder (e.g. data.train=runs/tiny)")
        return self

    def training_sets(self) -> list[tuple[str, str | None]]:
        """(folder, split) of every training dataset: data.train, then data.mix."""
        assert self.data.train is not None  # guaranteed by _datasets
        return [(self.data.train, self.data.train_split), *map(folder_and_split, self.data.mix)]
