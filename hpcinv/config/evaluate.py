"""Evaluation (``hpcinv evaluate``): how runs and stores are scored, as one model (its fields are the
command's flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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


class VelanSection(Section):
    """The classical velocity analysis of a field report (:mod:`hpcinv.field.velan`)."""

    time_shift_s: float | None = Field(
        None,
        ge=0,
        description="the recording is moved this much earlier first, so reflections start at their travel times "
        "(null: the peak time of the dataset's source wavelet)",
    )
    v_min_mps: float = Field(1400.0, gt=0, description="slowest RMS velocity scanned")
    v_max_mps: float = Field(4500.0, gt=0, description="fastest RMS velocity scanned")
    v_step_mps: float = Field(20.0, gt=0, description="scan step")
    window_s: float = Field(0.04, gt=0, description="semblance time window")
    max_stretch: float = Field(0.5, gt=0, description="NMO stretch mute (t / t0 - 1)")
    min_semblance: float = Field(0.2, gt=0, le=1, description="weakest semblance picked")
    min_separation_s: float = Field(0.1, gt=0, description="closest picks")
    min_time_s: float = Field(0.0, ge=0, description="no pick before this time (e.g. the sea floor)")
    min_interval_mps: float = Field(1450.0, ge=0, description="picks giving a slower Dix interval velocity are dropped")

    @model_validator(mode="after")
    def _scan(self) -> VelanSection:
        steps = (self.v_max_mps - self.v_min_mps) / self.v_step_mps
        if not 1 <= steps <= 2000:
            raise ValueError(
                f"velan scans v_min_mps={self.v_min_mps:g} to v_max_mps={self.v_max_mps:g} in steps of "
                f"{self.v_step_mps:g} m/s: give v_min_mps < v_max_mps and 2 to 2001 velocities"
            )
        return self


class FieldReportConfig(Section):
    """How ``hpcinv field-report`` shows velocity models against a recording (its fields are flags)."""

    sample: int = Field(0, ge=0, description="the recording (sample) of the dataset")
    profile_x_m: float | None = Field(
        None, description="where the profiles are drawn, metres from the grid's first column (null: mid-spread)"
    )
    velan: VelanSection = VelanSection()
