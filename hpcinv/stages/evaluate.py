"""The ``evaluate`` stage: runs, checkpoints and velocity stores scored side by side on a dataset, with
the data-free baseline row (:mod:`hpcinv.evaluate.report`). No Ray: one process."""

from __future__ import annotations

from hpcinv.evaluate.report import check_inputs, evaluate
from hpcinv.stages.base import Execution
from hpcinv.stages.requests import EvaluateRequest


def check(req: EvaluateRequest, execution: Execution | None = None) -> None:
    check_inputs(req.runs, req.data, req.out, req.settings)


def run(req: EvaluateRequest, execution: Execution) -> dict:
    result = evaluate(req.runs, req.data, req.out, req.settings)
    return {"out": result["out"], "table": result["table"], "means": result["means"], "warnings": result["warnings"]}
