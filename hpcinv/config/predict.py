"""Prediction (``hpcinv predict``): which samples, how the store is cut, how the data is checked, as one
model (its fields are the command's flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hpcinv.config.base import EXECUTION, Section


class PredictConfig(Section):
    """How ``hpcinv predict`` applies a network to a dataset: its options as one model."""

    split: str | None = Field(None, description="dataset split (e.g. test)")
    samples: int | None = Field(None, ge=1, description="only the first N samples of the split")
    shard_size: int = Field(16, ge=1, description="models per output shard (the unit of work and of resume)")
    allow_survey_mismatch: bool = Field(False, description="apply a network to data of another survey (a warning)")
    verify: Literal["fast", "full"] = Field("fast", description="full: also each shard's sha256 before reading")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="where the network runs (with Ray: one actor per GPU)", json_schema_extra=EXECUTION
    )
