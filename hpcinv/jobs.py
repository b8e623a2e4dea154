"""The job that the ``launch/`` submitit launchers send to SLURM: one stage's request, run on the job's
nodes (:class:`StageJob`).

It lives in the package (not in the launch scripts) so it unpickles on any node that has hpcinv
installed. It is a :class:`submitit.helpers.Checkpointable`: on preemption or timeout (SLURM's USR2)
submitit pickles the same call again and requeues the job, and re-running it continues the work,
because every hpcinv stage resumes by being re-run -- generation keeps its verified shards, training
restarts from its newest checkpoint in the same run folder, refine keeps its finished shards.

The request travels validated (a pydantic model, not a YAML path), so a job does not depend on a file
changing after submission; its folders are made absolute when it is made, and jobs run in the
submission directory (SLURM's default), so relative paths inside a config mean what they meant on the
submitting shell. A stage that runs on Ray gets a private Ray cluster over the job's nodes
(:func:`hpcinv.distributed.cluster.run_on_cluster`); the others run on the first node alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import submitit
from pydantic import BaseModel

from hpcinv.config import ClusterConfig
from hpcinv.stages import STAGES, Execution
from hpcinv.stages.requests import EvaluateRequest, GenerateRequest, RefineRequest, TrainRequest

log = logging.getLogger(__name__)

PATH_FIELDS = ("out", "data", "run", "gathers")  # a request's folders and files, made absolute at submission


def absolute(request: BaseModel) -> BaseModel:
    """``request`` with its folders as seen from the submitting shell (``--init smooth`` is no folder)."""
    update: dict = {k: str(Path(v).resolve()) for k in PATH_FIELDS if isinstance(v := getattr(request, k, None), str)}
    if isinstance(init := getattr(request, "init", None), str) and init != "smooth":
        update["init"] = str(Path(init).resolve())
    if isinstance(runs := getattr(request, "runs", None), list):
        update["runs"] = [str(Path(r).resolve()) for r in runs]
    return request.model_copy(update=update)


def _absolute(cluster: ClusterConfig) -> ClusterConfig:
    """``cluster`` with its folder as seen from the submitting shell (the other fields are resolved on the nodes)."""
    if cluster.cluster_dir is None:
        return cluster
    return cluster.model_copy(update={"cluster_dir": str(Path(cluster.cluster_dir).resolve())})


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class StageJob(submitit.helpers.Checkpointable):
    """Run stage ``stage`` with ``request`` on the job's nodes (a Ray cluster over them when the stage
    runs on Ray); returns the stage's summary (from the first node)."""

    def __init__(self, stage: str, request: BaseModel, cluster: ClusterConfig | None = None):
        self.stage, self.request = stage, absolute(request)
        self.cluster = _absolute(cluster or ClusterConfig())

    def __call__(self) -> dict | None:
        _setup_logging()
        stage = STAGES[self.stage]
        if stage.ray == "none":
            return stage.run(self.request, Execution(progress=False))
        from hpcinv.distributed.cluster import run_on_cluster

        def work(address: str) -> dict:
            with contextlib.redirect_stdout(sys.stderr):
                return stage.run(self.request, Execution(address=address, progress=False))

        result = run_on_cluster(work, self.cluster)
        if result is not None:
            log.info("result: %s", json.dumps(result, default=str)[:2000])
        return result


# ---------------------------------------------------------------------------------------------------
# Jobs pickled by an earlier hpcinv (queued, or requeued, across an upgrade of a shared install) were one
# class per stage; they unpickle into the job above.


class _Earlier(StageJob):
    def __setstate__(self, state: dict) -> None:
        if "stage" not in state:  # (a job pickled again after its first unpickle is a StageJob already)
            if "cluster" not in state and "cluster_dir" in state:  # (before ClusterConfig: two attributes)
                state["cluster"] = ClusterConfig(
                    cluster_dir=state.pop("cluster_dir"), object_store_gb=state.pop("object_store_gb", None)
                )
            state = self._stage_job(state)
        self.__dict__.update(state)
        self.__class__ = StageJob  # so that a requeue (submitit pickles the job again) writes the new class

    @staticmethod
    def _stage_job(state: dict) -> dict:
        raise NotImplementedError


class GenerateJob(_Earlier):
    @staticmethod
    def _stage_job(state: dict) -> dict:
        request = GenerateRequest(config=state["cfg"], out=state["out"], part=state.get("part"))
        return {"stage": "generate", "request": request, "cluster": state["cluster"]}


class TrainJob(_Earlier):
    @staticmethod
    def _stage_job(state: dict) -> dict:
        request = TrainRequest(config=state["cfg"], out=state["run_dir"])
        return {"stage": "train", "request": request, "cluster": state["cluster"]}


class RefineJob(_Earlier):
    @staticmethod
    def _stage_job(state: dict) -> dict:
        request = RefineRequest(
            config=state["cfg"],
            data=state["data"],
            init=state["init"],
            out=state["out"],
            split=state.get("split"),
            samples=state.get("samples"),
        )
        return {"stage": "refine", "request": request, "cluster": state["cluster"]}


class EvaluateJob(_Earlier):
    @staticmethod
    def _stage_job(state: dict) -> dict:
        request = EvaluateRequest(runs=state["runs"], data=state["data"], out=state["out"], settings=state["settings"])
        return {"stage": "evaluate", "request": request, "cluster": ClusterConfig()}
