"""The ``field-report`` stage: velocity models shown against a recording without a true model — data
misfit per shot and band, recorded beside modelled gathers, a classical velocity analysis beside the
models' profiles (:mod:`hpcinv.evaluate.field`). No Ray: one process."""

from __future__ import annotations

from hpcinv.evaluate.field import check_inputs, field_report
from hpcinv.stages.base import Execution
from hpcinv.stages.requests import FieldReportRequest


def check(req: FieldReportRequest, execution: Execution | None = None) -> None:
    check_inputs(req.data, req.models, req.out)


def run(req: FieldReportRequest, execution: Execution) -> dict:
    result = field_report(req.data, req.models, req.out, req.config)
    return {
        "out": req.out,
        "misfit": result["misfit"],
        "velocity_analysis_picks": len(result["velocity_analysis"].get("t0_s", [])),
    }
