"""The request of every stage: what it makes, from what, where -- everything that decides its result
(how it runs is an :class:`~hpcinv.stages.base.Execution`). Pydantic models of the configs only: the
command line builds and validates them before torch or Ray is imported, and a SLURM job carries one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from hpcinv.config import DataConfig, EvaluateConfig, FieldReportConfig, PredictConfig, RefineConfig, TrainConfig
from hpcinv.errors import ConfigError

DATA_SECTIONS = set(DataConfig.model_fields)  # grid, velocity, survey, modelling, dataset
TRAIN_SECTIONS = set(TrainConfig.model_fields)  # model, data, train, scaling, tracking (no name in both)
REFINE_SECTIONS = set(RefineConfig.model_fields)  # refine


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The quickstart's overrides for its dataset, its run and its refine, told apart by their section
    (the configs share none): ``dataset.n_samples=64``, ``train.epochs=5`` and
    ``refine.iterations_per_band=[10,10]`` alike. (``gen.KEY=...``, the spelling of older versions, is
    read as ``KEY=...``.)"""
    data, train, refine = [], [], []
    for item in overrides:
        item = item.removeprefix("gen.")
        section = item.partition("=")[0].split(".")[0]
        if section in DATA_SECTIONS:
            data.append(item)
        elif section in TRAIN_SECTIONS:
            train.append(item)
        elif section in REFINE_SECTIONS:
            refine.append(item)
        else:
            raise ConfigError(
                f"override {item!r}: the quickstart's keys begin with a section of its dataset "
                f"({', '.join(sorted(DATA_SECTIONS))}), of its run ({', '.join(sorted(TRAIN_SECTIONS))}) "
                f"or {', '.join(sorted(REFINE_SECTIONS))}"
            )
    return data, train, refine


class GenerateRequest(BaseModel):
    """One ``hpcinv generate``: the dataset's config, its folder, and whether to discard another dataset
    there (``restart``) or make only ``part`` (i, k): shards i, i+k, ... of an array job. ``verify``: how
    the shards already there are checked (fast: one stat each; full: their sha256)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: DataConfig
    out: str
    restart: bool = False
    part: tuple[int, int] | None = None
    verify: Literal["fast", "full"] = "fast"


class ImportRequest(BaseModel):
    """One ``hpcinv import-gathers``: the recording's config (survey, grid, modelling), the file, the new
    dataset folder, the scale stored, and whether the samples to take were ``chosen`` on the command line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: DataConfig
    gathers: str
    out: str
    key: str | None = None
    scale: float = 1.0
    chosen: bool = False
    pad_m: float = 500.0
    wavelet: Literal["config", "estimate"] = "config"
    wavelet_near_m: float = 1000.0
    wavelet_after_s: float = 0.2


class TrainRequest(BaseModel):
    """One ``hpcinv train``: the run's config and its folder (re-run the same request to resume)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: TrainConfig
    out: str


class PredictRequest(BaseModel):
    """One ``hpcinv predict``: the network (a run, checkpoint folder or state.pt), the dataset, the store
    to write, its settings, and whether to discard another prediction there (``restart``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str
    data: str
    out: str
    settings: PredictConfig = PredictConfig()
    restart: bool = False


class RefineRequest(BaseModel):
    """One ``hpcinv refine``: its settings (``refine:``), the dataset, the start, the store to write, the
    samples (``split``, first ``samples``), figures, and whether to discard another refine there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: RefineConfig = RefineConfig()
    data: str
    init: str
    out: str
    split: str | None = None
    samples: int | None = None
    figures: int = 2
    allow_survey_mismatch: bool = False
    restart: bool = False


class EvaluateRequest(BaseModel):
    """One ``hpcinv evaluate``: what to score (``runs``: runs, checkpoints, stores), on which dataset,
    into which report folder, and how (``settings``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runs: list[str]
    data: str
    out: str
    settings: EvaluateConfig = EvaluateConfig()


class QuickstartRequest(BaseModel):
    """One ``hpcinv quickstart``: its folder and its overrides (dataset's and run's sections alike)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out: str = "runs/quickstart"
    overrides: list[str] = []


class FieldReportRequest(BaseModel):
    """One ``hpcinv field-report``: the recording's dataset, the named velocity stores shown against it,
    the report folder, and how (``config``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: FieldReportConfig = FieldReportConfig()
    data: str
    models: dict[str, str]
    out: str
