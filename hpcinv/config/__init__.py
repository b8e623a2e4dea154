"""Typed configuration: one model per stage, YAML files plus ``key.sub=value`` overrides, validated by
pydantic (the machinery: :mod:`hpcinv.config.base`).

* generate, import-gathers: :class:`DataConfig` (:mod:`~hpcinv.config.data`): grid, velocity, survey,
  modelling, dataset;
* train: :class:`TrainConfig` (:mod:`~hpcinv.config.train`): model, data, train, scaling, tracking;
* predict: :class:`PredictConfig` (:mod:`~hpcinv.config.predict`): its flags as one model;
* refine: :class:`RefineConfig` (:mod:`~hpcinv.config.refine`): refine;
* evaluate: :class:`EvaluateConfig` (:mod:`~hpcinv.config.evaluate`): its flags as one model; field-report:
  :class:`FieldReportConfig`;
* the launchers and ``hpcinv cluster``: :class:`SlurmConfig`, :class:`ClusterConfig` (:mod:`~hpcinv.config.launch`).

A config's parts are *sections* (``GridSection``; ``TrainSection`` holds the ``train:`` keys).
"""

from __future__ import annotations

import os

import yaml
from pydantic import BaseModel

from hpcinv.config.base import (
    EXECUTION,
    RESUMABLE,
    ROLE_NOTES,
    ConfigError,
    Section,
    build_config,
    config_difference,
    config_hash,
    describe,
    flatten,
    folder_and_split,
    format_validation_error,
    load_config,
    merge_dicts,
    parse_overrides,
    resolve_config_path,
    role_paths,
    save_config,
    to_yaml,
    tree_difference,
    without_role,
)
from hpcinv.config.data import (
    DataConfig,
    DatasetSection,
    GridSection,
    ModellingSection,
    SaltModelSection,
    SurveySection,
    VelocitySection,
    VelocitySourceName,
)
from hpcinv.config.evaluate import EvaluateConfig, FieldReportConfig, VelanSection
from hpcinv.config.launch import ClusterConfig, SlurmConfig
from hpcinv.config.predict import PredictConfig
from hpcinv.config.refine import RefineConfig, RefineSection
from hpcinv.config.train import (
    ModelSection,
    ScalingSection,
    TrackingSection,
    TrainConfig,
    TrainDataSection,
    TrainSection,
)


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


__all__ = [
    "EXECUTION",
    "RESUMABLE",
    "ROLE_NOTES",
    "ClusterConfig",
    "ConfigError",
    "DataConfig",
    "DatasetSection",
    "EvaluateConfig",
    "FieldReportConfig",
    "VelanSection",
    "GridSection",
    "ModelSection",
    "ModellingSection",
    "PredictConfig",
    "RefineConfig",
    "RefineSection",
    "SaltModelSection",
    "ScalingSection",
    "Section",
    "SlurmConfig",
    "SurveySection",
    "TrackingSection",
    "TrainConfig",
    "TrainDataSection",
    "TrainSection",
    "VelocitySection",
    "VelocitySourceName",
    "build_config",
    "config_difference",
    "config_hash",
    "config_kind",
    "describe",
    "flatten",
    "folder_and_split",
    "format_validation_error",
    "load_config",
    "merge_dicts",
    "parse_overrides",
    "resolve_config_path",
    "role_paths",
    "save_config",
    "to_yaml",
    "tree_difference",
    "without_role",
]
