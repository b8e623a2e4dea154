"""Evaluation (``hpcinv evaluate``): how runs and stores are scored, as one model (its fields are the
command's flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hpcinv.config.base import Section


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
