"""Full-waveform inversion from a starting model (``hpcinv refine``; :mod:`hpcinv.refine.fwi`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hpcinv.config.base import EXECUTION, Section


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
    holdout_shots: list[int] = Field(
        [],
        description="shots left out of the fit (indices from 0): their misfit, before and after, says whether "
        "the refined model predicts data it was not fitted to",
    )
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
        if any(i < 0 for i in self.holdout_shots) or len(set(self.holdout_shots)) != len(self.holdout_shots):
            raise ValueError(f"holdout_shots must be distinct shot indices >= 0, got {self.holdout_shots}")
        if self.v_min_mps is not None and self.v_max_mps is not None and self.v_min_mps >= self.v_max_mps:
            raise ValueError(f"v_min_mps ({self.v_min_mps}) must be below v_max_mps ({self.v_max_mps})")
        return self


class RefineConfig(Section):
    """The ``hpcinv refine`` config: one section, ``refine``."""

    refine: RefineSection = RefineSection()
