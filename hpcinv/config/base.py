"""The config machinery every stage shares: the base of every section, loading YAML files and preset
names with ``key.sub=value`` overrides, validation errors in one line, what a setting means beyond its
value (``EXECUTION``, ``RESUMABLE``), hashing, saving and describing a config.

Every run has one source of truth: a YAML preset from ``configs/`` merged with dotted command-line
overrides, validated into a stage's config model (:mod:`hpcinv.config.data`, ``train``, ``refine``,
``evaluate``, ``predict``, ``launch``). Unknown keys and wrong types raise :class:`ConfigError` with the
offending key, the bad value and what would be valid. The resolved config is written beside every
output (:func:`save_config`) and hashed (:func:`config_hash`) so a dataset can refuse to be extended
with a different one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hpcinv.errors import ConfigError
from hpcinv.fileio import atomic_write_text

# What a setting means beyond its value, declared on its field and read by :func:`without_role`:
EXECUTION: dict[str, Any] = {"role": "execution"}  # how fast, not what: left out of the hash of what a run makes
RESUMABLE: dict[str, Any] = {"role": "resumable"}  # may differ when a training run is resumed
ROLE_NOTES = {"execution": "not part of the result", "resumable": "may change on resume"}


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, types are not coerced from strings,
    and no number may be infinite or NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False)


C = TypeVar("C", bound=BaseModel)

# Settings added after datasets were made, with the default that reproduces those datasets: left out
# of the hash while at that default, so a dataset made before they existed keeps its identity.
LATER_KEYS = {
    ("velocity", "synthetic", "water_depth_m"): [0.0, 0.0],
    ("velocity", "synthetic", "water_velocity_mps"): 1500.0,
    ("velocity", "synthetic", "sheet_probability"): 0.0,
    ("survey", "receiver_offsets_m"): None,
    ("survey", "wavelet_samples"): None,
    ("modelling", "free_surface"): False,
    ("grid", "origin_x_m"): 0.0,
    ("conditioning",): {
        "max_time_s": None,
        "bandpass_hz": None,
        "mute_velocity_mps": None,
        "mute_window_s": [0.05, 0.25],
        "gain_power": None,
        "spreading_to_2d": False,
    },
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
    """A config file: ``path`` itself, or the shipped preset of that name (``tiny``, ``tiny.yaml``; an
    earlier name of a preset, also as ``configs/NAME.yaml``, is understood)."""
    import hpcinv.presets
    from hpcinv.presets import preset_names, preset_path

    given = Path(path)
    if given.is_dir():
        raise ConfigError(f"config file {str(given)!r} is a folder; give a YAML file (e.g. configs/tiny.yaml)")
    if given.is_file():
        return given
    in_presets = given.parent.resolve() == Path(hpcinv.presets.__file__).parent.resolve()
    shipped = preset_path(given.name if in_presets else str(path)) if len(given.parts) == 1 or in_presets else None
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


def folder_and_split(text: str) -> tuple[str, str | None]:
    """``"FOLDER:SPLIT"`` -> (FOLDER, SPLIT); ``"FOLDER"`` -> (FOLDER, None) (also when a folder of that
    whole name, colon and all, exists)."""
    folder, sep, split = str(text).rpartition(":")
    if not sep or Path(text).exists():
        return str(text), None
    return folder, split or None
