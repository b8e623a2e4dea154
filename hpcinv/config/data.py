"""What a dataset is (``hpcinv generate``, ``hpcinv import-gathers``): grid, velocity models, survey,
modelling and sampling. Physical checks that need the survey and the velocity range (CFL, dispersion,
geometry, record length) live in :mod:`hpcinv.physics.validate`; they run before any work starts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hpcinv.config.base import EXECUTION, Section
from hpcinv.errors import HpcinvError


class GridSection(Section):
    """Model grid: ``nz`` × ``nx`` cells of ``dx`` metres (square cells)."""

    nz: int = Field(201, ge=8, description="cells in depth")
    nx: int = Field(301, ge=8, description="cells across")
    dx_m: float = Field(10.0, gt=0, description="cell size in metres")
    origin_x_m: float = Field(
        0.0,
        description="imported SEG-Y: where the first column lies along the line, in metres from the line's first "
        "source or receiver (whose file coordinates the manifest gives as segy.line_origin_xy_m)",
    )


class SaltModelSection(Section):
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
    sheet_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="of the bodies that are not domes, the share that are sheets (tabular salt with a rough "
        "top and base and sediments below it, as allochthonous salt) instead of lenses",
    )
    salt_top_depth: list[float] = Field([0.3, 0.75], description="salt top as a fraction of depth")
    salt_width: list[float] = Field([0.3, 0.8], description="salt width as a fraction of the extent")
    water_depth_m: list[float] = Field(
        [0.0, 0.0], description="water layer thickness (m) at the surface, [low, high]; [0, 0] = no water"
    )
    water_velocity_mps: float = Field(1500.0, gt=0)

    @model_validator(mode="after")
    def _ranges(self) -> SaltModelSection:
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


class VelocitySection(Section):
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
    synthetic: SaltModelSection = SaltModelSection()

    @model_validator(mode="after")
    def _path_needed(self) -> VelocitySection:
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"velocity.source={self.source!r} needs velocity.path (a file to import)")
        if self.source == "binary" and not self.shape:
            raise ValueError("velocity.source='binary' needs velocity.shape, e.g. [201, 301] or [n, 201, 301]")
        return self


class SurveySection(Section):
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
    receiver_offsets_m: list[float] | None = Field(
        None,
        description="receivers that move with each shot (a towed streamer): their offsets from the source in "
        "metres, negative behind it (towards x = 0); replaces n_receivers and receiver_x_m",
    )
    f0_hz: float = Field(25.0, gt=0, description="Ricker peak frequency")
    wavelet_samples: list[float] | None = Field(
        None,
        description="the source wavelet itself, sampled at dt_s from time 0 (e.g. estimated from recorded data: "
        "hpcinv.field.wavelet); null: a Ricker of f0_hz",
    )
    peak_time_s: float | None = Field(None, gt=0, description="wavelet peak time; null = 1.5 / f0")
    dt_s: float = Field(0.001, gt=0, description="time step of the simulation and the raw record")
    nt: int = Field(2000, ge=2, description="time samples simulated")
    downsample: int = Field(5, ge=1, description="keep the middle sample of every block of this many")

    @model_validator(mode="after")
    def _one_receiver_layout(self) -> SurveySection:
        if self.receiver_offsets_m is not None and (self.receiver_x_m is not None or self.n_receivers is not None):
            raise ValueError(
                "survey.receiver_offsets_m (receivers moving with the shot) replaces survey.receiver_x_m and "
                "survey.n_receivers (receivers fixed on the grid): give one layout"
            )
        if self.wavelet_samples is not None and not (0 < len(self.wavelet_samples) <= self.nt):
            raise ValueError(
                f"survey.wavelet_samples holds {len(self.wavelet_samples)} samples; give 1 to nt={self.nt} "
                "(shorter ones are padded with zeros)"
            )
        if self.receiver_offsets_m is not None and not self.receiver_offsets_m:
            raise ValueError("survey.receiver_offsets_m is empty; give at least one offset, or null")
        return self


class ModellingSection(Section):
    """deepwave settings pinned per dataset so every model is simulated with the same internal step."""

    accuracy: Literal[2, 4, 6, 8] = 8
    pml_width: int = Field(20, ge=0)
    free_surface: bool = Field(
        False,
        description="the top edge a free surface (pressure zero: the sea surface of marine data, with its source "
        "and receiver ghosts and surface multiples) instead of an absorbing layer",
    )
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


class DatasetSection(Section):
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


class ConditioningSection(Section):
    """Processing applied to every gathers of the dataset before it is stored, each step optional and in
    this order: time window, band-pass, mute of the direct wave, gain (see :mod:`hpcinv.field.condition`).
    Recorded with the dataset (part of its identity)."""

    max_time_s: float | None = Field(None, gt=0, description="keep the record up to this time")
    bandpass_hz: list[float] | None = Field(
        None, description="[low, high] zero-phase Butterworth band-pass (order 4); low 0: a low-pass only"
    )
    mute_velocity_mps: float | None = Field(
        None, gt=0, description="mute the direct wave, arriving at |offset| / this velocity (water: 1500)"
    )
    mute_window_s: list[float] = Field(
        [0.05, 0.25], description="[before, after] its arrival: the muted window (0.02 s cosine tapers)"
    )
    gain_power: float | None = Field(None, ge=0, description="multiply by time^power (recorded and modelled data)")
    spreading_to_2d: bool = Field(
        False,
        description="recorded data only, at import: multiply by sqrt(time), turning a point source's 3-D spreading "
        "into the 2-D line source's that the modelling has (the filter part of that correction is left to the "
        "estimated wavelet)",
    )

    @model_validator(mode="after")
    def _ranges(self) -> ConditioningSection:
        if self.bandpass_hz is not None and not (
            len(self.bandpass_hz) == 2 and 0 <= self.bandpass_hz[0] < self.bandpass_hz[1]
        ):
            raise ValueError(
                f"conditioning.bandpass_hz={self.bandpass_hz} must be [low, high] with 0 <= low < high "
                "(low 0: a low-pass)"
            )
        if len(self.mute_window_s) != 2 or min(self.mute_window_s) < 0:
            raise ValueError(f"conditioning.mute_window_s={self.mute_window_s} must be [before, after], both >= 0")
        return self

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_time_s, self.bandpass_hz, self.mute_velocity_mps, self.gain_power))


class DataConfig(Section):
    """Everything that defines a dataset: grid, velocity source, survey, modelling, sharding."""

    grid: GridSection = GridSection()
    velocity: VelocitySection = VelocitySection()
    survey: SurveySection = SurveySection()
    modelling: ModellingSection = ModellingSection()
    dataset: DatasetSection = DatasetSection()
    conditioning: ConditioningSection = ConditioningSection()
