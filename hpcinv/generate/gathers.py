"""``hpcinv import-gathers``: recorded gathers without true velocities, stored as a dataset.

Field data, or any gathers a user wants a velocity model for, become a dataset like a generated one
(same shards, checksums, manifest, survey record), with ``has_velocity: false``: ``predict``,
``refine`` and ``evaluate`` (data misfit only) work on it; ``train`` refuses it. The data config gives
the survey, grid and modelling settings the gathers were recorded (or modelled) with: ``refine``
re-simulates with exactly those. ``dataset.start_index`` and ``dataset.n_samples`` select the
samples of the file to import.

The gathers are checked like generated data before anything is written: a readable ``.npy``/``.npz``
of real numbers, at least one sample, no NaN or Inf, no shot that records nothing (all zeros), and
no value the stored dtype cannot hold (float16 overflows above 65504: refused with the peak found,
unless ``--scale`` brings it into range; the scale is recorded and undone whenever the gathers are
read). The dataset's identity is its config hash together with the sha256 of the imported gathers,
so velocity stores made from one recording are refused on another imported with the same config.
The folder is built under a temporary name and renamed into place when complete, so an interrupted
or refused import leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hpcinv.config import DataConfig, SurveySection, config_hash, save_config
from hpcinv.errors import HpcinvError
from hpcinv.field.condition import condition, n_kept
from hpcinv.field.segy import is_segy, read_shot_gathers
from hpcinv.field.wavelet import estimate_from_direct_wave
from hpcinv.fileio import atomic_path
from hpcinv.folders import ABSENT, EMPTY, LOCK, inspect, mark
from hpcinv.physics.survey import make_geometry, n_output_samples
from hpcinv.store.manifest import CONFIG, read_manifest, write_manifest
from hpcinv.store.schema import new_manifest, survey_attrs
from hpcinv.store.shard import FLOAT16_MAX, SHARD_DIR, plan_shards, write_shard

log = logging.getLogger(__name__)

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
FLOAT32_MAX = float(np.finfo(np.float32).max)
DEFAULT_PAD_M = 500.0  # model margin beyond the outermost source or receiver of a SEG-Y line
MAX_COLUMNS = 20_000  # a SEG-Y line wider than this many cells is a wrong coordinate scalar or --pad-m


def _load(path: str | os.PathLike, key: str | None) -> np.ndarray:
    """The array in a ``.npy`` (memory-mapped) or an ``.npz`` (``key``), or one line saying why not."""
    path = Path(path)
    name = f"--gathers {str(path)!r}"
    if not path.exists():
        raise HpcinvError(f"{name} does not exist")
    if not path.is_file():
        raise HpcinvError(f"{name} is not a file; give a .npy (or an .npz with --key)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as exc:
        raise HpcinvError(f"cannot read {name}: {exc.strerror or exc}") from None
    if not head:
        raise HpcinvError(f"{name} is an empty file")
    try:
        if head.startswith(NPY_MAGIC):
            if key is not None:
                raise HpcinvError(f"{name} is a .npy, which holds one array: --key is for .npz files")
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        elif head.startswith(ZIP_MAGIC):
            with np.load(path, allow_pickle=False) as archive:
                if key is None or key not in archive.files:
                    given = f"--key {key!r} is not in it" if key is not None else "give --key"
                    raise HpcinvError(f"{name} is an .npz: {given}; its arrays: {sorted(archive.files)}")
                data = archive[key]
        else:
            raise HpcinvError(
                f"{name} is not a .npy or .npz file (it does not begin with NumPy's header); save the array "
                "with numpy.save first"
            )
    except HpcinvError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise HpcinvError(f"{name} is a damaged or unsupported NumPy file ({reason})") from None
    if data.dtype.kind not in "fiu":
        raise HpcinvError(f"{name} holds {data.dtype} values; gathers must be real numbers (float or integer)")
    return data


def _select(data: np.ndarray, cfg: DataConfig, expected: tuple[int, int, int], chosen: bool) -> tuple[np.ndarray, int]:
    """The samples of ``data`` to import, checked against the survey's shape: ``dataset.start_index`` and
    ``dataset.n_samples`` when they are ``chosen`` (on the command line), else all. Returns them and the
    first one's index in the file."""
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4 or tuple(data.shape[1:]) != expected:
        raise HpcinvError(
            f"--gathers holds an array of shape {list(data.shape)}, but the config's survey records "
            f"[N, {expected[0]} shots, {expected[1]} samples, {expected[2]} receivers]"
        )
    total, start, n = data.shape[0], cfg.dataset.start_index, cfg.dataset.n_samples
    if not chosen:
        if (start, n) not in ((0, None), (0, total)):
            log.info(
                "importing all %d samples of --gathers: the config's dataset.start_index=%d / n_samples=%s are "
                "generation settings (give them on the command line to import fewer)",
                total,
                start,
                n,
            )
        start, n = 0, None
    if total == 0:
        raise HpcinvError(f"--gathers holds no samples (shape {list(data.shape)}); nothing to import")
    if start >= total:
        raise HpcinvError(f"dataset.start_index={start} is beyond the {total} samples in --gathers (0..{total - 1})")
    n = total - start if n is None else n
    if start + n > total:
        raise HpcinvError(
            f"dataset.n_samples={n} from dataset.start_index={start} needs samples up to {start + n - 1}, but "
            f"--gathers holds {total} (0..{total - 1}); lower dataset.n_samples, or pass dataset.n_samples=null to "
            f"import all {total - start} from the start index"
        )
    return data[start : start + n], start


def scan(data: np.ndarray, first: int, dtype: str, scale: float, progress: bool = False) -> str:
    """Check every sample before anything is written (finite; no shot all zeros, as given or as stored
    after ``scale`` in ``dtype``; what ``dtype`` holds); returns the sha256 of the gathers as given
    (their dtype, shape and bytes)."""
    digest = hashlib.sha256(f"{data.dtype.str}{list(data.shape)}".encode())
    peak, at = 0.0, first
    for i in tqdm(range(len(data)), desc="check", disable=not progress):
        sample = np.ascontiguousarray(data[i])
        digest.update(sample.data)
        index = first + i
        finite = np.isfinite(sample).reshape(len(sample), -1).all(axis=1)
        if not finite.all():
            raise HpcinvError(f"--gathers sample {index} (shot {int(np.argmin(finite))}) holds NaN or Inf values")
        shot_peak = np.abs(sample).reshape(len(sample), -1).max(axis=1)
        if not shot_peak.all():
            raise HpcinvError(
                f"--gathers sample {index}, shot {int(np.argmin(shot_peak))} is all zeros (a dead or missing shot): "
                "there is nothing to fit or score in it; remove it or fill it before importing"
            )
        if float(shot_peak.max()) > peak:
            peak, at = float(shot_peak.max()), index
        with np.errstate(over="ignore"):  # (values too large for the dtype are refused below, by the peak)
            stored = np.abs(sample.astype(np.float32) * np.float32(scale)).astype(dtype).reshape(len(sample), -1)
        if not stored.max(axis=1).all():
            raise HpcinvError(
                f"--scale {scale:g} makes shot {int(np.argmin(stored.max(axis=1)))} of sample {index} all zeros in "
                f"{dtype} (its peak is {float(shot_peak[np.argmin(stored.max(axis=1))]):.3g}); use a larger --scale"
            )
    limit, name = (FLOAT16_MAX, "float16") if dtype == "float16" else (FLOAT32_MAX, "float32")
    if peak * scale > limit:
        suggest = 10.0 ** -math.ceil(math.log10(peak * scale / 1e4))
        raise HpcinvError(
            f"--gathers peak |amplitude| is {peak * scale:.4g} (sample {at}), more than {name} holds ({limit:g})"
            + ("; import with dataset.gathers_dtype=float32, or" if name == "float16" else ";")
            + f" scale it with --scale {scale * suggest:g} (recorded, and undone when the gathers are read)"
        )
    return digest.hexdigest()


def segy_sample(
    cfg: DataConfig,
    path: str | os.PathLike,
    pad_m: float,
    wavelet: str = "config",
    wavelet_window: tuple[float, float] = (1000.0, 0.2),
) -> tuple[DataConfig, np.ndarray, dict]:
    """The shot gathers of a SEG-Y line as one sample (1, shots, time, receivers), conditioned as
    ``cfg.conditioning`` says, with ``cfg``'s survey and grid replaced by the recording's: sources and
    receivers where the headers put them (receivers moving with the shot for a towed streamer), the
    file's sampling, and a grid of ``cfg.grid.dx_m`` cells reaching ``pad_m`` beyond the outermost source
    or receiver. With ``modelling.free_surface`` the surface lies one cell above the top row (deepwave's
    ghost plane), so depths below it are stored one cell shallower. Returns the config, the sample and
    what the manifest records about the file. ``wavelet="estimate"``: the source wavelet is estimated
    from the recording's direct wave (:func:`hpcinv.field.wavelet.estimate_from_direct_wave`: traces within
    ``wavelet_window[0]`` m of their shot, ``wavelet_window[1]`` s after its arrival) and becomes the
    survey's ``wavelet_samples``."""
    if not (math.isfinite(pad_m) and pad_m >= 0):
        raise HpcinvError(f"--pad-m must be a finite number of metres >= 0, got {pad_m}")
    near_m, after_s = wavelet_window
    for flag, value in (("--wavelet-near-m", near_m), ("--wavelet-after-s", after_s)):
        if not (math.isfinite(value) and value > 0):
            raise HpcinvError(f"{flag} must be a finite number > 0, got {value}")
    record = read_shot_gathers(path)
    layout, receivers = record.receiver_layout()
    dx = cfg.grid.dx_m
    spacing = record.group_interval_m()
    if spacing and spacing < dx * (1 - 1e-6):
        raise HpcinvError(
            f"the line's receivers are {spacing:g} m apart, less than a grid cell (grid.dx_m={dx:g}): two would share "
            f"a cell; use grid.dx_m <= {spacing:g}"
        )
    positions = np.concatenate([record.source_x_m, record.receiver_x_m.ravel()])
    left = float(positions.min()) - pad_m
    nx = int(math.ceil((float(positions.max()) + pad_m - left) / dx)) + 1
    if nx > MAX_COLUMNS:
        raise HpcinvError(
            f"the line spans {float(np.ptp(positions)) / 1000:.4g} km, so with --pad-m {pad_m:g} the grid would be "
            f"{nx} columns of {dx:g} m (more than {MAX_COLUMNS}); check the coordinate scalar (trace byte 71) and "
            "--pad-m"
        )
    below_surface = dx if cfg.modelling.free_surface else 0.0
    nt = n_kept(record.data_STR.shape[1], record.dt_s, cfg.conditioning)
    if nt < 2:
        raise HpcinvError(
            f"conditioning.max_time_s={cfg.conditioning.max_time_s} keeps {nt} sample of the {record.dt_s * 1e3:g} ms "
            f"record; give at least {record.dt_s:g} s (two samples)"
        )
    survey = cfg.survey.model_copy(
        update={
            "n_shots": record.n_shots,
            "source_x_m": (record.source_x_m - left).tolist(),
            "n_receivers": None,
            "receiver_x_m": (receivers - left).tolist() if layout == "fixed" else None,
            "receiver_offsets_m": receivers.tolist() if layout == "moving" else None,
            "source_depth_m": max(record.source_depth_m - below_surface, 0.0),
            "receiver_depth_m": max(record.receiver_depth_m - below_surface, 0.0),
            "dt_s": record.dt_s,
            "nt": nt,
            "downsample": 1,
        }
    )
    grid = cfg.grid.model_copy(update={"nx": nx, "origin_x_m": round(left, 6)})
    cfg = cfg.model_copy(update={"survey": SurveySection.model_validate(survey.model_dump()), "grid": grid})
    recorded = record.data_STR
    if cfg.conditioning.spreading_to_2d:  # (recorded data only: the modelling is 2-D already)
        recorded = recorded * np.sqrt(np.arange(recorded.shape[1]) * record.dt_s, dtype=np.float32)[None, :, None]
    estimate = None
    if wavelet == "estimate":
        unmuted = cfg.conditioning.model_copy(update={"mute_velocity_mps": None, "gain_power": None})
        at_import = cfg.model_copy(update={"conditioning": unmuted})
        samples, estimate = estimate_from_direct_wave(
            at_import,
            condition(recorded, record.dt_s, record.offsets_m, unmuted),
            near_m=wavelet_window[0],
            after_s=wavelet_window[1],
        )
        cfg = cfg.model_copy(update={"survey": cfg.survey.model_copy(update={"wavelet_samples": samples.tolist()})})
        log.info(
            "wavelet estimated from the direct wave of %d traces (window misfit %.3f)",
            estimate["traces"],
            estimate["window_misfit"],
        )
    data = condition(recorded, record.dt_s, record.offsets_m, cfg.conditioning)
    silent = np.flatnonzero(~np.abs(data).reshape(len(data), -1).any(axis=1))
    if silent.size and np.abs(record.data_STR[silent[0]]).any():
        raise HpcinvError(
            f"the conditioning leaves shot {int(silent[0])} all zeros (it records data before): check "
            f"conditioning.mute_window_s={cfg.conditioning.mute_window_s}, max_time_s and bandpass_hz"
        )
    log.info(
        "SEG-Y %s: %d shots x %d receivers (%s), %d samples at %g ms; grid %d x %d cells of %g m from %g m",
        path,
        record.n_shots,
        len(receivers),
        "moving with the shot" if layout == "moving" else "fixed",
        nt,
        record.dt_s * 1e3,
        cfg.grid.nz,
        nx,
        dx,
        left,
    )
    extra = {
        "segy": {
            "field_records": record.field_records.tolist(),
            "receivers": layout,
            "source_depth_m": record.source_depth_m,
            "receiver_depth_m": record.receiver_depth_m,
            "line_origin_xy_m": list(record.origin_xy_m),
            "line_direction_xy": list(record.direction_xy),
            "samples_in_file": int(record.data_STR.shape[1]),
            "notes": record.notes,
        },
        "conditioning": cfg.conditioning.model_dump(),
        **({"wavelet_estimate": estimate} if estimate else {}),
    }
    return cfg, data[None], extra


def import_gathers(
    cfg: DataConfig,
    gathers: str | os.PathLike,
    out: str | os.PathLike,
    *,
    key: str | None = None,
    scale: float = 1.0,
    chosen: bool = False,
    pad_m: float = DEFAULT_PAD_M,
    wavelet: str = "config",
    wavelet_window: tuple[float, float] = (1000.0, 0.2),
    progress: bool = True,
) -> dict:
    """Store the gathers of ``gathers`` (all samples, or ``dataset.start_index``/``n_samples`` when
    ``chosen``) as a dataset in the new folder ``out``, checked before anything is written. A SEG-Y file
    is one sample, its survey read from the trace headers (:func:`segy_sample`)."""
    out = Path(out)
    if not (math.isfinite(scale) and scale > 0):
        raise HpcinvError(f"--scale must be a finite number > 0, got {scale}")
    found = inspect(out)
    if found.kind not in (ABSENT, EMPTY):
        raise HpcinvError(f"--out {found.describe()}; import-gathers makes a new folder: give one that does not exist")
    extra: dict = {}
    if is_segy(gathers):
        if key is not None:
            raise HpcinvError("--key is for .npz files; a SEG-Y file holds one line of shot gathers")
        cfg, loaded, extra = segy_sample(cfg, gathers, pad_m, wavelet, wavelet_window)
    else:
        if cfg.conditioning.active or cfg.conditioning.spreading_to_2d or wavelet != "config":
            raise HpcinvError(
                "conditioning: and --wavelet estimate are for SEG-Y imports (and conditioning for generated data); "
                "condition a .npy before importing it"
            )
        loaded = _load(gathers, key)
    geometry = make_geometry(cfg.survey, cfg.grid)  # sources and receivers inside the grid
    expected = (geometry.n_shots, n_output_samples(cfg.survey), geometry.n_receivers)
    data, first = _select(loaded, cfg, expected, chosen)
    n = data.shape[0]
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"n_samples": n, "start_index": first})})
    cfg.dataset.split_ranges(n)
    data_sha256 = scan(data, first, cfg.dataset.gathers_dtype, scale, progress)
    digest = config_hash(cfg)
    identity = hashlib.sha256(f"{digest}:{data_sha256}:{scale!r}".encode()).hexdigest()
    physics = {"v_min_mps": None, "v_max_mps": None, "note": "recorded gathers: no velocity models"}
    manifest = new_manifest(cfg, n, physics) | {
        "has_velocity": False,
        "imported_from": str(Path(gathers).resolve()),
        "imported_samples": [first, first + n],
        "gathers_sha256": data_sha256,
        "identity": identity,
        **({"gathers_scale": scale} if scale != 1.0 else {}),
        **extra,
    }
    records = []

    def still_free() -> None:  # nothing appeared in --out while the gathers were being written
        if inspect(out).kind not in (ABSENT, EMPTY):
            raise HpcinvError(f"--out {str(out)!r} was filled by something else meanwhile; nothing was written over it")

    with atomic_path(out, folder=True, before_publish=still_free) as tmp:
        mark(tmp, "imported", identity)
        (tmp / LOCK).touch()  # readers lock it without writing into the dataset
        (tmp / SHARD_DIR).mkdir()
        save_config(cfg, tmp / CONFIG)
        for spec in tqdm(plan_shards(n, cfg.dataset.shard_size), desc="import", disable=not progress):
            block = np.asarray(data[spec.start : spec.stop], dtype=np.float32)
            if scale != 1.0:
                block = block * np.float32(scale)
            records.append(
                write_shard(
                    tmp / SHARD_DIR,
                    spec,
                    None,
                    block,
                    config_hash=digest,
                    survey=survey_attrs(cfg),
                    gathers_dtype=cfg.dataset.gathers_dtype,
                )
            )
        write_manifest(tmp, manifest | {"shards": records})
    final = read_manifest(out)
    return {
        "out": str(out),
        "samples": final["n_samples"],
        "shards": len(final["shards"]),
        "has_velocity": False,
        "imported_samples": [first, first + n],
        "gathers_sha256": data_sha256,
        "scale": scale,
    }
