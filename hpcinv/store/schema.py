"""The dataset schema, in one place: what every shard and the manifest say about the survey
(:func:`survey_attrs`), and a new dataset's manifest (:func:`new_manifest`). docs/FORMAT.md describes it."""

from __future__ import annotations

from hpcinv.config import DataConfig, config_hash
from hpcinv.physics import make_geometry
from hpcinv.physics.survey import n_output_samples, peak_time_s
from hpcinv.store.shard import FORMAT_VERSION


def survey_attrs(cfg: DataConfig) -> dict:
    """Everything a reader needs to interpret the gathers, stored in every shard and the manifest."""
    s, g, m = cfg.survey, cfg.grid, cfg.modelling
    geometry = make_geometry(s, g)
    return {
        "nz": g.nz,
        "nx": g.nx,
        "dx_m": g.dx_m,
        "n_shots": geometry.n_shots,
        "n_receivers": geometry.n_receivers,
        "source_cells_zx": geometry.source_cells.tolist(),
        "receiver_cells_zx": geometry.receiver_cells.tolist(),
        "f0_hz": s.f0_hz,
        "peak_time_s": peak_time_s(s),
        "wavelet": "ricker" if s.wavelet_samples is None else "samples",  # (samples: in the dataset's config)
        "simulation_dt_s": s.dt_s,
        "simulation_nt": s.nt,
        "downsample": s.downsample,
        "dt_s": s.dt_s * s.downsample,
        "nt": n_output_samples(s),
        "accuracy": m.accuracy,
        "pml_width": m.pml_width,
        "pml_freq_hz": m.pml_freq_hz or s.f0_hz,
        "max_vel_mps": m.max_vel_mps,
        **({"free_surface": True} if m.free_surface else {}),  # (absent: absorbing on every edge)
    }


def new_manifest(cfg: DataConfig, n_samples: int, physics: dict) -> dict:
    """The manifest of a dataset of ``cfg`` with ``n_samples`` samples and no shard yet."""
    survey = survey_attrs(cfg)
    return {
        "format": "hpcinv-dataset",
        "format_version": FORMAT_VERSION,
        "config_hash": config_hash(cfg),
        "n_samples": n_samples,
        "shard_size": cfg.dataset.shard_size,
        "velocity_shape": [cfg.grid.nz, cfg.grid.nx],
        "gathers_shape": [survey["n_shots"], n_output_samples(cfg.survey), survey["n_receivers"]],
        "gathers_dtype": cfg.dataset.gathers_dtype,
        "splits": cfg.dataset.split_ranges(n_samples),
        "survey": survey,
        "physics": physics,
        "shards": [],
    }
