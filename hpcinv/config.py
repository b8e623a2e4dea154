"""Typed configuration: YAML files plus ``key.sub=value`` overrides, validated by pydantic.

Every run has one source of truth: a YAML preset from ``configs/`` merged with dotted command-line
overrides, validated into the models below. Unknown keys and wrong types raise :class:`ConfigError`
with the offending key, the bad value and what would be valid. The resolved config is written
beside every output (:func:`save_config`) and hashed (:func:`config_hash`) so a dataset can refuse
to be extended with a different one.

Physical checks that need the survey and the velocity range (CFL, dispersion, geometry, record
length) live in :mod:`hpcinv.physics.validate`; they run before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpcinv.environment import environment
from hpcinv.errors import ConfigError, HpcinvError
from hpcinv.fileio import atomic_write_text

# What a setting means beyond its value, declared on its field and read by :func:`without_role`:
EXECUTION: dict[str, Any] = {"role": "execution"}  # how fast, not what: left out of the hash of what a run makes
RESUMABLE: dict[str, Any] = {"role": "resumable"}  # may differ when a training run is resumed
ROLE_NOTES = {"execution": "not part of the result", "resumable": "may change on resume"}


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, types are not coerced from strings,
    and no number may be infinite or NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------- data


class GridConfig(Section):
    """Model grid: ``nz`` × ``nx`` cells of ``dx`` metres (square cells)."""

    nz: int = Field(201, ge=8, description="cells in depth")
    nx: int = Field(301, ge=8, description="cells across")
    dx_m: float = Field(10.0, gt=0, description="cell size in metres")


class SaltModelConfig(Section):
    """Synthetic layered + salt generator (see :mod:`hpcinv.velocity.synthetic`).

    Ranges are ``[low, high]``; every sample draws from them with its own RNG stream, so a sample
    is a pure function of (this config, ``dataset.seed``, global index).
    """

    n_layers: list[int] = Field([5, 10], description="number of sedimentary layers, inclusive range")
    v_top_mps: list[float] = Field([2000.0, 2800.0], description="velocity of the top layer (m/s)")
    v_bottom_mps: list[float] = Field([3000.0, 4000.0], description="velocity of the deepest layer (m/s)")
    fold_amplitude_m: list[float] = Field([0.0, 60.0], description="amplitude of the gentle fold")
    roughness_m: list[float] = Field([2.0, 15.0], description="amplitude of small interface wiggles")
    fault_probability: float = Field(0.3, ge=0.0, le=1.0)
    fault_throw_m: list[float] = Field([20.0, 120.0])
    salt_velocity_mps: float | list[float] = Field(
        4500.0, description="salt velocity (m/s), or [low, high]: one value drawn per model"
    )
    n_salt: list[int] = Field([1, 2], description="salt bodies per model, inclusive range")
    dome_probability: float = Field(0.85, ge=0.0, le=1.0, description="dome from the base vs. a lens")
    salt_top_depth: list[float] = Field([0.3, 0.75], description="salt top as a fraction of depth")
    salt_width: list[float] = Field([0.3, 0.8], description="salt width as a fraction of the extent")
    water_depth_m: list[float] = Field(
        [0.0, 0.0], description="water layer thickness (m) at the surface, [low, high]; [0, 0] = no water"
    )
    water_velocity_mps: float = Field(1500.0, gt=0)

    @model_validator(mode="after")
    def _ranges(self) -> SaltModelConfig:
        for name in (
            "n_layers",
            "v_top_mps",
            "v_bottom_mps",
            "fold_amplitude_m",
            "roughness_m",
            "fault_throw_m",
            "n_salt",
            "salt_top_depth",
            "salt_width",
            "salt_velocity_mps",
            "water_depth_m",
        ):
            lo_hi = self.salt_velocity_range() if name == "salt_velocity_mps" else getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] < 0:
                raise ValueError(f"{name} must be [low, high] with 0 <= low <= high, got {lo_hi}")
        if self.n_layers[0] < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.salt_velocity_range()[0] <= 0:
            raise ValueError(f"salt_velocity_mps must be > 0, got {self.salt_velocity_mps}")
        for name in ("salt_top_depth", "salt_width"):
            if getattr(self, name)[1] > 1:
                raise ValueError(f"{name} is a fraction in [0, 1], got {getattr(self, name)}")
        return self

    def salt_velocity_range(self) -> list[float]:
        v = self.salt_velocity_mps
        return [float(v), float(v)] if isinstance(v, (int, float)) else list(v)

    def velocity_bounds(self) -> tuple[float, float]:
        vmax = max(self.v_bottom_mps[1], self.v_top_mps[1])
        if self.n_salt[1] > 0:
            vmax = max(vmax, self.salt_velocity_range()[1])
        vmin = self.v_top_mps[0]
        if self.water_depth_m[1] > 0:
            vmin = min(vmin, self.water_velocity_mps)
            vmax = max(vmax, self.water_velocity_mps)
        return vmin, vmax


VelocitySourceName = Literal["synthetic", "fcnvmb", "npz", "openfwi", "segy", "binary"]


class VelocityConfig(Section):
    """Where the velocity models come from.

    ``synthetic`` draws from the salt generator; the others import a collection from ``path``
    (FCNVMB ``.mat`` file, folder or glob; ``.npz`` with ``key``; OpenFWI ``.npy`` (N, 1, nz, nx);
    SEG-Y with one trace per column; raw little-endian float32 with ``shape``). Imported models whose
    shape differs from the grid are resampled onto it (``resample``).
    """

    source: VelocitySourceName = "synthetic"
    path: str | None = None
    key: str | list[str] | None = Field(None, description="array name(s) in a .npz / .mat file; a list is concatenated")
    shape: list[int] | None = Field(None, description="binary: [nz, nx] or [n, nz, nx]")
    order: Literal["C", "F"] = Field("C", description="binary: C (x fastest) or F (z fastest) order")
    resample: Literal["bilinear", "nearest"] = "bilinear"
    synthetic: SaltModelConfig = SaltModelConfig()

    @model_validator(mode="after")
    def _path_needed(self) -> VelocityConfig:
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"velocity.source={self.source!r} needs velocity.path (a file to import)")
        if self.source == "binary" and not self.shape:
            raise ValueError("velocity.source='binary' needs velocity.shape, e.g. [201, 301] or [n, 201, 301]")
        return self


class SurveyConfig(Section):
    """Acquisition: sources and receivers on depth rows, Ricker wavelet, time sampling.

    Positions are in metres from the model's top-left corner and are snapped to the nearest cell.
    Without explicit lists, ``n_shots`` sources and ``n_receivers`` receivers are spread evenly
    across the whole surface (``n_receivers: null`` puts one receiver in every column).
    """

    n_shots: int = Field(29, ge=1)
    source_depth_m: float = Field(0.0, ge=0)
    source_x_m: list[float] | None = Field(None, description="explicit source positions (overrides n_shots)")
    n_receivers: int | None = Field(None, ge=1, description="null: one per grid column")
    receiver_depth_m: float = Field(0.0, ge=0)
    receiver_x_m: list[float] | None = None
    f0_hz: float = Field(25.0, gt=0, description="Ricker peak frequency")
    peak_time_s: float | None = Field(None, gt=0, description="wavelet peak time; null = 1.5 / f0")
    dt_s: float = Field(0.001, gt=0, description="time step of the simulation and the raw record")
    nt: int = Field(2000, ge=2, description="time samples simulated")
    downsample: int = Field(5, ge=1, description="keep the middle sample of every block of this many")


class ModellingConfig(Section):
    """deepwave settings pinned per dataset so every model is simulated with the same internal step."""

    accuracy: Literal[2, 4, 6, 8] = 8
    pml_width: int = Field(20, ge=0)
    pml_freq_hz: float | None = Field(None, gt=0, description="null = survey.f0_hz")
    max_vel_mps: float = Field(4500.0, gt=0, description="pinned CFL velocity: no model may exceed it")
    min_points_per_wavelength: float = Field(
        6.0, gt=0, description="at 2.5 x f0 and the slowest velocity; below it the run is refused"
    )
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", json_schema_extra=EXECUTION)
    threads: int = Field(
        1, ge=1, description="torch threads per modelling process (1 is fastest on CPU)", json_schema_extra=EXECUTION
    )
    models_per_call: int = Field(
        1, ge=1, description="models batched into one deepwave call", json_schema_extra=EXECUTION
    )


class DatasetConfig(Section):
    """Sample count, sharding and splits. ``splits`` maps a name to a count or a fraction; the splits
    are contiguous index ranges in the order given (e.g. ``{train: 1600, test: 100}``)."""

    n_samples: int | None = Field(None, ge=1, description="null: every model of an imported collection")
    start_index: int = Field(0, ge=0, description="first model of an imported collection to use")
    shard_size: int = Field(16, ge=1, description="samples per HDF5 shard")
    gathers_dtype: Literal["float16", "float32"] = "float32"
    seed: int = Field(0, ge=0)
    splits: dict[str, float] | None = Field(None, description="name -> count, or fraction of n_samples")

    def split_ranges(self, n_samples: int) -> dict[str, list[int]]:
        """``{name: [start, stop)}`` covering [0, n_samples); counts, or fractions that sum to 1."""
        if not self.splits:
            return {"all": [0, n_samples]}
        values = list(self.splits.values())
        if any(v < 0 for v in values):
            raise HpcinvError(f"dataset.splits must not be negative, got {self.splits}")
        if all(v <= 1 for v in values) and abs(sum(values) - 1) < 1e-9:
            counts = [int(round(v * n_samples)) for v in values]
            counts[-1] = n_samples - sum(counts[:-1])
        else:
            counts = [int(v) for v in values]
            if any(c != v for c, v in zip(counts, values, strict=True)) or sum(counts) != n_samples:
                raise HpcinvError(
                    f"dataset.splits {self.splits} must be whole counts summing to n_samples={n_samples} "
                    "or fractions summing to 1"
                )
        ranges, start = {}, 0
        for name, count in zip(self.splits, counts, strict=True):
            ranges[name] = [start, start + count]
            start += count
        return ranges


class DataConfig(Section):
    """Everything that defines a dataset: grid, velocity source, survey, modelling, sharding."""

    grid: GridConfig = GridConfig()
    velocity: VelocityConfig = VelocityConfig()
    survey: SurveyConfig = SurveyConfig()
    modelling: ModellingConfig = ModellingConfig()
    dataset: DatasetConfig = DatasetConfig()


# ----------------------------------------------------------------------------- load and save

C = TypeVar("C", bound=BaseModel)

# Settings added after datasets were made, with the default that reproduces those datasets: left out
# of the hash while at that default, so a dataset made before they existed keeps its identity.
LATER_KEYS = {
    ("velocity", "synthetic", "water_depth_m"): [0.0, 0.0],
    ("velocity", "synthetic", "water_velocity_mps"): 1500.0,
}


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into a nested dict; values are parsed as YAML scalars/lists."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc.problem})") from None
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-4" as a string; a number is meant
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = value
    return tree


def merge_dicts(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (for listing valid keys)."""
    model: type[BaseModel] | None = cls
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def format_validation_error(exc: ValidationError, cls: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            owner = _model_at(cls, loc)
            valid = ", ".join(owner.model_fields) if owner else "?"
            lines.append(f"unknown key {key!r}; valid keys here: {valid}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            bad = err.get("input")
            shown = "" if isinstance(bad, dict) else f" (got {bad!r})"
            lines.append(f"{key}: {msg}{shown}")
    return "; ".join(lines)


def build_config(cls: type[C], data: dict[str, Any]) -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls)) from None


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file: ``path`` itself, or the shipped preset of that name (``bench2``, ``tiny.yaml``)."""
    from hpcinv.presets import preset_names, preset_path

    given = Path(path)
    if given.is_dir():
        raise ConfigError(f"config file {str(given)!r} is a folder; give a YAML file (e.g. configs/tiny.yaml)")
    if given.is_file():
        return given
    shipped = preset_path(str(path)) if len(given.parts) == 1 else None
    if shipped is None:
        raise ConfigError(
            f"config file {str(given)!r} does not exist, and is not a preset; presets: {', '.join(preset_names())}"
        )
    return shipped


def load_config(cls: type[C], path: str | os.PathLike | None, overrides: list[str] | None = None) -> C:
    """Load ``path`` (YAML; ``None`` = defaults), apply dotted overrides, validate into ``cls``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            reason = " ".join(str(exc).split())
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {reason}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    return build_config(cls, merge_dicts(data, parse_overrides(overrides or [])))


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_kind(path: str | os.PathLike) -> type[BaseModel]:
    """Which config a YAML file is: a ``refine`` section makes a refine config, ``model``/``train``/``scaling``
    a training config, anything else a dataset config."""
    try:
        loaded = yaml.safe_load(resolve_config_path(path).read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        loaded = {}  # load_config reports what is wrong with the file
    keys = set(loaded) if isinstance(loaded, dict) else set()
    if "refine" in keys:
        return RefineConfig
    return TrainConfig if keys & {"model", "train", "scaling"} else DataConfig


def describe(cfg: BaseModel, indent: int = 0) -> str:
    """The resolved config as YAML, each key followed by its description."""
    lines, pad = [], " " * indent
    for name, field in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        role = ROLE_NOTES.get(str(extra.get("role")))
        said = " ".join(t for t in (field.description, role and f"({role})") if t)
        note = f"  # {said}" if said else ""
        if isinstance(value, BaseModel):
            doc = (type(value).__doc__ or "").strip().split("\n")[0]
            lines.append(f"{pad}{name}:" + (f"  # {doc}" if doc and not note else note))
            lines.append(describe(value, indent + 2))
        else:
            text = (
                yaml.safe_dump(
                    value if not isinstance(value, BaseModel) else value.model_dump(mode="json"),
                    default_flow_style=True,
                    width=10**6,
                )
                .strip()
                .removesuffix("...")
                .strip()
            )
            lines.append(f"{pad}{name}: {text}{note}")
    return "\n".join(lines)


def role_paths(model: type[BaseModel], role: str) -> list[tuple[str, ...]]:
    """The key paths of ``model``'s fields (its sections' too) declared with ``role`` (``EXECUTION``, ``RESUMABLE``)."""
    paths: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("role") == role:
            paths.append((name,))
            continue
        for kind in (field.annotation, *get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                paths += [(name, *sub) for sub in role_paths(kind, role)]
    return paths


def without_role(cfg: BaseModel, role: str) -> dict:
    """``cfg`` as JSON data without the settings declared with ``role``."""
    data = cfg.model_dump(mode="json")
    for *parents, key in role_paths(type(cfg), role):
        node: Any = data
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return data


def flatten(tree: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_difference(there: BaseModel, here: BaseModel, *, ignore: str, limit: int = 4) -> str:
    """The settings that differ, except those declared with role ``ignore``, in words, e.g.
    "dataset.n_samples is 240 there, 8 here" (to explain a refusal decided by comparing the configs)."""
    return tree_difference(without_role(there, ignore), without_role(here, ignore), limit=limit)


def tree_difference(there: dict, here: dict, *, limit: int = 4, width: int | None = None) -> str:
    """The keys of two nested dicts whose values differ, in words ("a.b is 1 there, 2 here"); values
    longer than ``width`` characters are shortened."""

    def shown(value) -> str:
        text = repr(value)
        return text if width is None or len(text) <= width else text[: width // 2] + "..." + text[-6:]

    a, b = flatten(there), flatten(here)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    said = [f"{k} is {shown(a.get(k))} there, {shown(b.get(k))} here" for k in keys[:limit]]
    return "; ".join(said) + (f" (and {len(keys) - limit} more keys)" if len(keys) > limit else "")


def config_hash(cfg: BaseModel) -> str:
    """sha256 of the canonical JSON of everything that decides a dataset's bits."""
    data = without_role(cfg, "execution")
    for (*parents, key), default in LATER_KEYS.items():
        node = data
        for name in parents:
            node = node.get(name, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and node.get(key, default) == default:
            node.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def save_config(cfg: BaseModel, path: str | os.PathLike) -> None:
    atomic_write_text(path, to_yaml(cfg))


# ----------------------------------------------------------------------------------- training


class ModelConfig(Section):
    """Network choice and size. ``fcnvmb`` at base_channels 64 / depth 4 is the paper's 31.06 M U-Net."""

    name: Literal["fcnvmb", "inversionnet"] = "fcnvmb"
    base_channels: int = Field(64, ge=1, description="fcnvmb: filters of the first level")
    depth: int = Field(4, ge=1, le=6, description="fcnvmb: pooling levels")
    skip: Literal["pooled", "standard"] = Field("pooled", description="fcnvmb: pooled = the official code")
    batchnorm: bool = True
    dims: list[int] = Field([32, 64, 128, 256, 512], description="inversionnet: the five widths")


class TrainDataConfig(Section):
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


class TrainingConfig(Section):
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


class ScalingConfig(Section):
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


class EvaluateConfig(Section):
    """How ``hpcinv evaluate`` (and ``python -m launch.evaluate``) scores runs: its options as one model."""

    split: str | None = Field(None, description="dataset split (e.g. test)")
    samples: int | None = Field(None, ge=1, description="only the first N samples of the split")
    misfit_samples: int | None = Field(None, ge=0, description="samples re-simulated for the data misfit (null: all)")
    baseline: str | None = Field(
        None, description="DATASET[:SPLIT] whose mean model is the data-free baseline (null: the first network's data)"
    )
    figures: int = Field(2, ge=0, description="figures per run")
    verify: Literal["fast", "full"] = Field("fast", description="full: also each shard's sha256 before reading")
    allow_survey_mismatch: bool = Field(False, description="a warning instead of an error for another survey")

    @classmethod
    def from_args(cls, args: Any) -> EvaluateConfig:
        return cls.model_validate({name: getattr(args, name) for name in cls.model_fields})


class SlurmConfig(Section):
    """What a launcher (``python -m launch.*``) asks SLURM for: the one table of SLURM defaults. The
    launchers' flags are made from it (``--cpus-per-node`` for ``cpus_per_node``), and the #SBATCH lines
    of slurm/*.sbatch hold the same defaults (tests/test_launch.py checks both)."""

    nodes: int = Field(1, ge=1, description="nodes (one Ray node each)")
    cpus_per_node: int = Field(2, ge=1, description="CPUs per node")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node")
    mem_gb: float | None = Field(None, gt=0, description="memory per node in GB (default: the partition's)")
    partition: str | None = Field(None, description="partition (default: the cluster's default partition)")
    time: int = Field(60, ge=1, description="time limit in minutes")
    signal_delay_s: int = Field(
        120, ge=10, description="USR2 this many seconds before the time limit: checkpoint and requeue"
    )
    account: str | None = Field(None, description="account to charge")
    qos: str | None = Field(None, description="quality of service")
    constraint: str | None = Field(None, description="node features, e.g. a100")
    job_name: str | None = Field(None, description="job name (default: hpcinv-<stage>)")
    after: str | None = Field(None, description="start only after job JOBID succeeded (afterok)")
    folder: str = Field("slurm-logs", description="shared folder for job logs, pickles and the Ray rendezvous")
    setup: list[str] = Field([], description="shell line run before the job, e.g. 'module load cuda/12.4' (repeatable)")
    max_timeouts: int = Field(3, ge=0, description="requeues after hitting the time limit (preemptions: always)")


class ClusterConfig(Section):
    """How a Ray cluster is brought up over the nodes of a SLURM job step (``hpcinv cluster`` and the
    launchers' jobs; :mod:`hpcinv.cluster`). ``hpcinv cluster``'s flags and the launchers' are made from it."""

    cluster_dir: str | None = Field(
        None,
        description="shared folder for the head address and the job's token (default: $HPCINV_CLUSTER_DIR, "
        "else $SLURM_SUBMIT_DIR/.hpcinv-ray; launchers: FOLDER/ray)",
    )
    object_store_gb: float | None = Field(
        None,
        ge=0.1,
        description="Ray object store per node in GB (default: $HPCINV_OBJECT_STORE_GB, else 30% of the "
        "job's memory on the node)",
    )
    join_timeout_s: float = Field(300.0, gt=0, description="seconds the nodes wait for one another to join")

    def resolved(self, env: dict[str, str] | None = None) -> ClusterConfig:
        """Unset fields from the environment (``env``, default the process's); the folder made absolute."""
        values = dict(os.environ) if env is None else env
        found = environment(values)
        folder = self.cluster_dir or found.cluster_dir
        folder = folder or os.path.join(values.get("SLURM_SUBMIT_DIR", "."), ".hpcinv-ray")
        store = self.object_store_gb if self.object_store_gb is not None else found.object_store_gb
        return self.model_copy(update={"cluster_dir": str(Path(folder).resolve()), "object_store_gb": store})


class TrackingConfig(Section):
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

    model: ModelConfig = ModelConfig()
    data: TrainDataConfig = TrainDataConfig()
    train: TrainingConfig = TrainingConfig()
    scaling: ScalingConfig = ScalingConfig()
    tracking: TrackingConfig = Field(TrackingConfig(), json_schema_extra=RESUMABLE)

    @model_validator(mode="after")
    def _datasets(self) -> TrainConfig:
        if not self.data.train:
            raise ValueError("data.train must name a dataset folder (e.g. data.train=runs/tiny)")
        return self

    def training_sets(self) -> list[tuple[str, str | None]]:
        """(folder, split) of every training dataset: data.train, then data.mix."""
        assert self.data.train is not None  # guaranteed by _datasets
        return [(self.data.train, self.data.train_split), *map(folder_and_split, self.data.mix)]


def folder_and_split(text: str) -> tuple[str, str | None]:
    """``"FOLDER:SPLIT"`` -> (FOLDER, SPLIT); ``"FOLDER"`` -> (FOLDER, None) (also when a folder of that
    whole name, colon and all, exists)."""
    folder, sep, split = str(text).rpartition(":")
    if not sep or Path(text).exists():
        return str(text), None
    return folder, split or None


# ------------------------------------------------------------------------------------- refine


class RefineSection(Section):
    """Full-waveform inversion from a starting model (``hpcinv refine``; :mod:`hpcinv.refine.fwi`)."""

    bands_hz: list[float | None] = Field(
        [1.5, 3.0, None],
        description="low-pass cut-offs from low to high, applied to both modelled and recorded "
        "gathers; null = the full band",
    )
    iterations_per_band: list[int] = Field([30, 30, 40], description="iteration budget of each band")
    lr_mps: float = Field(30.0, gt=0, description="Adam step size in m/s (cosine-decayed to a tenth in each band)")
    shots_per_iteration: int | None = Field(None, ge=1, description="random shots per iteration (null: all)")
    v_min_mps: float | None = Field(
        None,
        gt=0,
        description="lower velocity bound; null: the slowest velocity the dataset's grid and wavelet "
        "resolve (modelling.min_points_per_wavelength)",
    )
    v_max_mps: float | None = Field(None, gt=0, description="upper bound; null: the dataset's modelling.max_vel_mps")
    start_outside_max_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="a start with at most this fraction of its cells outside the bounds is "
        "clipped into them; more is refused (the bounds exclude the start)",
    )
    smooth_gradient_cells: float = Field(1.0, ge=0, description="Gaussian smoothing of the gradient (0: none)")
    tv_weight: float = Field(0.0, ge=0, description="total-variation regularisation weight (0: none)")
    freeze_top_cells: int = Field(0, ge=0, description="rows below the surface left unchanged (source imprint)")
    patience: int = Field(
        10,
        ge=0,
        description="a band ends when its misfit fell by less than min_improvement "
        "over this many iterations (0: never early)",
    )
    min_improvement: float = Field(0.01, ge=0, lt=1)
    target_misfit: float = Field(0.0, ge=0, description="stop once the full-band misfit is at or below this")
    smooth_v_top_mps: float = Field(2000.0, gt=0, description="--init smooth: velocity at the surface")
    smooth_v_bottom_mps: float = Field(4000.0, gt=0, description="--init smooth: velocity at the model base")
    smooth_reference: str | None = Field(
        None,
        description="--init smooth: a dataset[:split] whose mean model, averaged laterally and smoothed in "
        "depth, is the start instead of the linear v(z)",
    )
    smooth_sigma_cells: float = Field(5.0, ge=0, description="--init smooth with a reference: depth smoothing")
    shard_size: int = Field(4, ge=1, description="models per output shard (the unit of work and of resume)")
    seed: int = Field(0, ge=0, description="shot mini-batch draws (sample i uses seed + i)")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", json_schema_extra=EXECUTION)
    threads: int = Field(
        1, ge=1, description="torch threads per refine actor (1 is fastest on CPU)", json_schema_extra=EXECUTION
    )

    @model_validator(mode="after")
    def _bands(self) -> RefineSection:
        if not self.bands_hz or len(self.bands_hz) != len(self.iterations_per_band):
            raise ValueError(
                f"bands_hz ({self.bands_hz}) and iterations_per_band ({self.iterations_per_band}) must "
                "be non-empty lists of the same length"
            )
        cutoffs = [b for b in self.bands_hz if b is not None]
        if any(b <= 0 for b in cutoffs) or cutoffs != sorted(cutoffs) or None in self.bands_hz[:-1]:
            raise ValueError(
                f"bands_hz must rise from low to high, each > 0, with null (full band) only last; got {self.bands_hz}"
            )
        if any(n < 0 for n in self.iterations_per_band):
            raise ValueError(f"iterations_per_band must be >= 0, got {self.iterations_per_band}")
        if self.v_min_mps is not None and self.v_max_mps is not None and self.v_min_mps >= self.v_max_mps:
            raise ValueError(f"v_min_mps ({self.v_min_mps}) must be below v_max_mps ({self.v_max_mps})")
        return self


class RefineConfig(Section):
    """The ``hpcinv refine`` config: one section, ``refine``."""

    refine: RefineSection = RefineSection()
