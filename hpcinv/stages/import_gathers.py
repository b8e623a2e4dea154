"""The ``import-gathers`` stage: recorded gathers (no true velocities) stored as a dataset, checked
before anything is written (:mod:`hpcinv.generate.gathers`)."""

from __future__ import annotations

from hpcinv.generate.gathers import import_gathers
from hpcinv.stages.base import Execution
from hpcinv.stages.requests import ImportRequest


def run(req: ImportRequest, execution: Execution) -> dict:
    return import_gathers(
        req.config,
        req.gathers,
        req.out,
        key=req.key,
        scale=req.scale,
        chosen=req.chosen,
        pad_m=req.pad_m,
        wavelet=req.wavelet,
        wavelet_window=(req.wavelet_near_m, req.wavelet_after_s),
        progress=execution.progress,
    )


def check(req: ImportRequest, execution: Execution | None = None) -> None:
    """(Nothing to check without reading the file: the import checks everything before it writes.)"""
