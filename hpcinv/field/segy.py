"""Shot gathers in SEG-Y: read with their geometry from the trace headers, and written back.

:func:`read_shot_gathers` groups the traces of a 2-D line into shots (by field record number, or by
source position when every trace has the same record number), orders each shot's traces by their
position along the line, and reads the geometry the survey needs from the standard trace-header
bytes (SEG-Y rev 1):

=========================  ======  =================================================================
what                       bytes   notes
=========================  ======  =================================================================
field record               9       one shot per record number
source x, y                73, 77  scaled by the coordinate scalar (byte 71: < 0 divides, > 0
group x, y                 81, 85  multiplies, 0 is 1)
offset                     37      read back for the check below
source depth               49      scaled by the elevation scalar (byte 69); when 0, the source
                                   surface elevation (byte 45) is used if negative (below datum)
receiver group elevation   41      negative: the receiver depth below datum (a towed streamer)
sample interval            117     every trace must agree with the binary header (byte 3217)
=========================  ======  =================================================================

The line may run along x, along y or obliquely: positions are distances along the line fitted through
every source and group, from its first point. A file is refused, with one line saying why, when it
cannot be described as a 2-D survey: mixed sample intervals, no coordinates, points off the line (3-D
geometry), shots of different trace counts, or receivers that neither stay put nor keep their offsets
from shot to shot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import segyio
from segyio import TraceField as H

from hpcinv.errors import HpcinvError

SEGY_SUFFIXES = (".sgy", ".segy")
OFF_LINE_FRACTION = 0.25  # of the group interval: farther from the fitted line is 3-D geometry


@dataclass
class ShotRecord:
    """Shot gathers of a 2-D line and where they were recorded, in metres along the line."""

    data_STR: np.ndarray  # (shots, time, receivers) float32
    dt_s: float
    source_x_m: np.ndarray  # (shots,)
    receiver_x_m: np.ndarray  # (shots, receivers): each shot's receivers, in the order of data's last axis
    source_depth_m: float = 0.0
    receiver_depth_m: float = 0.0
    field_records: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    origin_xy_m: tuple[float, float] = (0.0, 0.0)  # file coordinates of the point at distance 0
    direction_xy: tuple[float, float] = (1.0, 0.0)  # unit vector of the line in file coordinates
    notes: list[str] = field(default_factory=list)  # what was inferred while reading (for the manifest)

    @property
    def n_shots(self) -> int:
        return self.data_STR.shape[0]

    @property
    def offsets_m(self) -> np.ndarray:
        """(shots, receivers) signed offsets: receiver minus source, along the line."""
        return self.receiver_x_m - self.source_x_m[:, None]

    def receiver_layout(self) -> tuple[str, np.ndarray]:
        """("fixed", receiver x (R,)) when every shot records at the same places, ("moving", offsets
        (R,)) when the receivers keep their offsets from the source (a towed streamer); else refused."""
        tolerance = 0.01 * max(self.group_interval_m(), 1.0)
        if np.abs(self.receiver_x_m - self.receiver_x_m[0]).max() <= tolerance:
            return "fixed", self.receiver_x_m[0]
        offsets = self.offsets_m
        if np.abs(offsets - offsets[0]).max() <= tolerance:
            return "moving", offsets[0]
        shot = int(np.argmax(np.abs(offsets - offsets[0]).max(axis=1)))
        raise HpcinvError(
            f"the receivers of shot {shot} (field record {int(self.field_records[shot])}) neither stay where the "
            "first shot's were nor keep their offsets from the source; hpcinv models fixed spreads and towed "
            "streamers: split the file into parts that are one or the other"
        )

    def group_interval_m(self) -> float:
        steps = np.abs(np.diff(self.receiver_x_m, axis=1))
        steps = steps[steps > 0]
        return float(np.median(steps)) if steps.size else 0.0


def is_segy(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SEGY_SUFFIXES


def _scaled(values: np.ndarray, scalars: np.ndarray) -> np.ndarray:
    """SEG-Y scalar convention: negative divides by its magnitude, positive multiplies, 0 means 1."""
    s = scalars.astype(np.float64)
    factor = np.where(s < 0, 1.0 / np.abs(np.where(s == 0, 1, s)), np.where(s == 0, 1.0, s))
    return values.astype(np.float64) * factor


def _headers(f, keys) -> dict:
    return {k: np.asarray(f.attributes(k)[:]).astype(np.int64) for k in keys}


def read_shot_gathers(path: str | os.PathLike) -> ShotRecord:
    """The shot gathers of a 2-D SEG-Y line with their geometry (see the module docstring)."""
    path = Path(path)
    name = f"SEG-Y file {str(path)!r}"
    if not path.is_file():
        raise HpcinvError(f"{name} does not exist or is not a file")
    if path.stat().st_size < 3600 + 240:
        raise HpcinvError(f"{name} is too short to hold SEG-Y headers and a trace ({path.stat().st_size} bytes)")
    try:
        with segyio.open(path, ignore_geometry=True) as f:
            interval_us = int(f.bin[segyio.BinField.Interval])
            keys = (
                H.FieldRecord,
                H.SourceX,
                H.SourceY,
                H.GroupX,
                H.GroupY,
                H.offset,
                H.SourceGroupScalar,
                H.SourceDepth,
                H.SourceSurfaceElevation,
                H.ReceiverGroupElevation,
                H.ElevationScalar,
                H.TRACE_SAMPLE_INTERVAL,
                H.DelayRecordingTime,
            )
            h = _headers(f, keys)
            data = np.asarray(f.trace.raw[:], dtype=np.float32)
    except HpcinvError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise HpcinvError(f"{name} cannot be read as SEG-Y ({reason})") from None
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] < 2:
        raise HpcinvError(f"{name} holds no traces of two or more samples (traces x samples: {list(data.shape)})")
    notes: list[str] = []
    trace_intervals = sorted(set(h[H.TRACE_SAMPLE_INTERVAL].tolist()) - {0})
    if interval_us <= 0 and len(trace_intervals) > 1:
        raise HpcinvError(
            f"{name} mixes sample intervals: traces say {trace_intervals} us (and the binary header none); "
            "resample the traces to one interval first"
        )
    if interval_us <= 0 and len(trace_intervals) == 1:
        interval_us = trace_intervals[0]
    if interval_us <= 0:
        raise HpcinvError(f"{name} gives no sample interval (binary header byte 3217 and trace byte 117 are 0)")
    if any(t != interval_us for t in trace_intervals):
        raise HpcinvError(
            f"{name} mixes sample intervals: the binary header says {interval_us} us, traces say "
            f"{trace_intervals} us; resample the traces to one interval first"
        )
    delays = sorted(set(h[H.DelayRecordingTime].tolist()))
    if delays != [0]:
        raise HpcinvError(
            f"{name} has traces that start {delays} ms after the shot (trace byte 109); hpcinv models recordings "
            "that start at the shot: pad the traces to time zero first"
        )
    if not np.isfinite(data).all():
        raise HpcinvError(f"{name} holds NaN or Inf samples (trace {int(np.argmax(~np.isfinite(data).all(1)))})")

    sx = _scaled(h[H.SourceX], h[H.SourceGroupScalar])
    sy = _scaled(h[H.SourceY], h[H.SourceGroupScalar])
    gx = _scaled(h[H.GroupX], h[H.SourceGroupScalar])
    gy = _scaled(h[H.GroupY], h[H.SourceGroupScalar])
    points = np.concatenate([np.stack([sx, sy], 1), np.stack([gx, gy], 1)])
    if np.ptp(points, axis=0).max() == 0:
        raise HpcinvError(
            f"{name} has no source or group coordinates (trace bytes 73-88 are the same on every trace); "
            "write the geometry into the headers first"
        )
    origin_all = points.mean(axis=0)
    _, singular, vt = np.linalg.svd(points - origin_all, full_matrices=False)
    direction = vt[0] * (1 if vt[0][np.argmax(np.abs(vt[0]))] > 0 else -1)
    along = (points - origin_all) @ direction
    across = (points - origin_all) @ np.array([-direction[1], direction[0]])

    # shots: by field record, or by source position when the record numbers do not tell them apart
    s_along = along[: len(sx)]
    g_along = along[len(sx) :]
    ids = h[H.FieldRecord]
    if len(np.unique(ids)) == 1 and len(np.unique(s_along)) > 1:
        ids = np.unique(np.round(s_along, 3), return_inverse=True)[1]
        notes.append("shots told apart by source position (every trace has the same field record number)")
    records, first = np.unique(ids, return_index=True)
    records = records[np.argsort(first)]  # in file order
    counts = {int(r): int((ids == r).sum()) for r in records}
    if len(set(counts.values())) != 1:
        raise HpcinvError(
            f"{name}: shots hold different numbers of traces ({counts} traces per field record); hpcinv needs "
            "the same channels in every shot: drop or pad the odd shots"
        )
    group_steps = np.abs(np.diff(np.sort(g_along[ids == records[0]])))
    group_interval = float(np.median(group_steps[group_steps > 0])) if (group_steps > 0).any() else 0.0
    limit = OFF_LINE_FRACTION * group_interval if group_interval else 1.0
    if np.abs(across).max() > limit:
        worst = int(np.argmax(np.abs(across)))
        kind = "source" if worst < len(sx) else "group"
        raise HpcinvError(
            f"{name} is not a 2-D line: a {kind} lies {np.abs(across).max():.1f} m off the line through every "
            f"source and receiver (more than {limit:.1f} m, a quarter of the group interval): 3-D geometry "
            "cannot be modelled in 2-D; extract a 2-D line first"
        )
    origin_along = float(along.min())  # distances from the first point of the line
    shots, src_x, rec_x = [], [], []
    for r in records:
        rows = np.flatnonzero(ids == r)
        if np.ptp(s_along[rows]) > limit:
            raise HpcinvError(f"{name}: the traces of field record {int(r)} have different source positions")
        rows = rows[np.argsort(g_along[rows], kind="stable")]
        steps = np.diff(g_along[rows])
        if (steps < 1e-3).any():
            at = float(g_along[rows][int(np.argmax(steps < 1e-3))] - origin_along)
            raise HpcinvError(
                f"{name}: field record {int(r)} has two traces at the same position ({at:g} m along the line); "
                "hpcinv needs one trace per receiver position: stack or drop the duplicates"
            )
        shots.append(data[rows])
        src_x.append(float(s_along[rows].mean()) - origin_along)
        rec_x.append(g_along[rows] - origin_along)
        recorded = np.abs(h[H.offset][rows]).astype(np.float64)
        computed = np.abs(g_along[rows] - s_along[rows])
        if recorded.any() and np.abs(recorded - computed).max() > max(limit, 0.02 * computed.max()):
            notes.append(
                f"field record {int(r)}: header offsets (byte 37) differ from the coordinates by up to "
                f"{np.abs(recorded - computed).max():.1f} m; the coordinates are used"
            )

    def depth(primary: np.ndarray, elevation: np.ndarray, what: str) -> float:
        scale = h[H.ElevationScalar]
        d = _scaled(primary, scale) if primary.any() else -np.minimum(_scaled(elevation, scale), 0.0)
        if np.ptp(d) > 0.5:
            raise HpcinvError(f"{name}: {what} depths vary from {d.min():g} to {d.max():g} m; hpcinv needs one depth")
        return float(d.mean())

    source_depth = depth(h[H.SourceDepth], h[H.SourceSurfaceElevation], "source")
    receiver_depth = depth(np.zeros_like(h[H.ReceiverGroupElevation]), h[H.ReceiverGroupElevation], "receiver")
    start = origin_all + direction * origin_along
    return ShotRecord(
        data_STR=np.ascontiguousarray(np.stack(shots).transpose(0, 2, 1)),
        dt_s=interval_us * 1e-6,
        source_x_m=np.asarray(src_x),
        receiver_x_m=np.stack(rec_x),
        source_depth_m=source_depth,
        receiver_depth_m=receiver_depth,
        field_records=np.asarray(records, dtype=np.int64),
        origin_xy_m=(float(start[0]), float(start[1])),
        direction_xy=(float(direction[0]), float(direction[1])),
        notes=notes,
    )


def write_shot_gathers(path: str | os.PathLike, record: ShotRecord, *, coordinate_scalar: int = -100) -> None:
    """Write ``record`` as SEG-Y (IEEE float, one trace per receiver, shots in order) with its geometry in
    the trace headers that :func:`read_shot_gathers` reads (coordinates to 1/|scalar| m)."""
    n_shots, nt, n_rec = record.data_STR.shape
    spec = segyio.spec()
    spec.format = 5  # 4-byte IEEE float
    spec.samples = np.arange(nt) * record.dt_s * 1e3
    spec.tracecount = n_shots * n_rec
    unit = 1.0 / abs(coordinate_scalar) if coordinate_scalar < 0 else float(max(coordinate_scalar, 1))
    ox, oy = record.origin_xy_m
    ux, uy = record.direction_xy

    def coord(distance: float) -> tuple[int, int]:
        return int(round((ox + ux * distance) / unit)), int(round((oy + uy * distance) / unit))

    records = record.field_records if len(record.field_records) == n_shots else np.arange(1, n_shots + 1)
    with segyio.create(str(path), spec) as f:
        f.bin.update({segyio.BinField.Interval: int(round(record.dt_s * 1e6)), segyio.BinField.Samples: nt})
        i = 0
        for s in range(n_shots):
            sx, sy = coord(float(record.source_x_m[s]))
            for r in range(n_rec):
                gx, gy = coord(float(record.receiver_x_m[s, r]))
                f.header[i] = {
                    H.FieldRecord: int(records[s]),
                    H.TraceNumber: r + 1,
                    H.SourceX: sx,
                    H.SourceY: sy,
                    H.GroupX: gx,
                    H.GroupY: gy,
                    H.offset: int(round(record.receiver_x_m[s, r] - record.source_x_m[s])),
                    H.SourceGroupScalar: coordinate_scalar,
                    H.ElevationScalar: -100,
                    H.SourceDepth: int(round(record.source_depth_m * 100)),
                    H.ReceiverGroupElevation: -int(round(record.receiver_depth_m * 100)),
                    H.TRACE_SAMPLE_INTERVAL: int(round(record.dt_s * 1e6)),
                    H.TRACE_SAMPLE_COUNT: nt,
                }
                f.trace[i] = np.ascontiguousarray(record.data_STR[s, :, r], dtype=np.float32)
                i += 1
