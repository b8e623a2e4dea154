"""The callables that the ``launch/`` submitit launchers send to SLURM.

They live in the package (not in the launch scripts) so they unpickle on any node that has hpcinv
installed. Each is a :class:`submitit.helpers.Checkpointable`: on preemption or timeout (SLURM's
USR2) submitit pickles the same call again and requeues the job, and re-running it continues the
work, because every hpcinv stage resumes by being re-run -- generation keeps its verified shards,
training restarts from its last Ray Train checkpoint in the same run folder.

The config travels validated (a pydantic model, not a YAML path), so a job does not depend on a file
changing after submission; jobs run in the submission directory (SLURM's default), so relative
paths in a config mean what they meant on the submitting shell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import submitit

from hpcinv.config import ClusterConfig, DataConfig, EvaluateConfig, RefineConfig, TrainConfig

log = logging.getLogger(__name__)


def _absolute(cluster: ClusterConfig) -> ClusterConfig:
    """``cluster`` with its folder as seen from the submitting shell (the other fields are resolved on the nodes)."""
    if cluster.cluster_dir is None:
        return cluster
    return cluster.model_copy(update={"cluster_dir": str(Path(cluster.cluster_dir).resolve())})


class _ClusterJob(submitit.helpers.Checkpointable):
    """A job that runs on a Ray cluster over its nodes (``self.cluster``)."""

    cluster: ClusterConfig

    def __setstate__(self, state: dict) -> None:
        # A job pickled by an hpcinv before ClusterConfig (queued or requeued across an upgrade of a
        # shared install) carried the folder and the object store as two attributes.
        if "cluster" not in state and "cluster_dir" in state:
            old = {"cluster_dir": state.pop("cluster_dir"), "object_store_gb": state.pop("object_store_gb", None)}
            state["cluster"] = ClusterConfig(**old)
        self.__dict__.update(state)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class GenerateJob(_ClusterJob):
    """Generate (or finish) a dataset on a Ray cluster spanning the job's nodes."""

    def __init__(self, cfg: DataConfig, out: str, cluster: ClusterConfig, *, part: tuple[int, int] | None = None):
        self.cfg, self.out, self.cluster, self.part = cfg, str(Path(out).resolve()), _absolute(cluster), part

    def __call__(self) -> dict | None:
        from hpcinv.cluster import run_on_cluster
        from hpcinv.generate import generate

        _setup_logging()

        def work(address: str) -> dict:
            with contextlib.redirect_stdout(sys.stderr):
                summary = generate(self.cfg, self.out, use_ray=True, address=address, progress=False, part=self.part)
            return asdict(summary)

        return run_on_cluster(work, self.cluster)


class TrainJob(_ClusterJob):
    """DDP training (or its resumption) on a Ray cluster spanning the job's nodes."""

    def __init__(self, cfg: TrainConfig, run_dir: str, cluster: ClusterConfig):
        self.cfg, self.run_dir, self.cluster = cfg, str(Path(run_dir).resolve()), _absolute(cluster)

    def __call__(self) -> dict | None:
        from hpcinv.cluster import run_on_cluster
        from hpcinv.train.trainer import train

        _setup_logging()

        def work(address: str) -> dict:
            with contextlib.redirect_stdout(sys.stderr):
                return train(self.cfg, self.run_dir, address=address)

        result = run_on_cluster(work, self.cluster)
        if result is not None:
            log.info("result: %s", json.dumps(result))
        return result


class EvaluateJob(submitit.helpers.Checkpointable):
    """Metrics, figures and data misfit of runs on a dataset (one node, no Ray needed)."""

    def __init__(self, runs: list[str], data: str, out: str, settings: EvaluateConfig):
        self.runs = [str(Path(r).resolve()) for r in runs]
        self.data, self.out = str(Path(data).resolve()), str(Path(out).resolve())
        self.settings = settings

    def __call__(self) -> dict:
        from hpcinv.evaluate.report import evaluate

        _setup_logging()
        result = evaluate(self.runs, self.data, self.out, self.settings)
        return {"out": result["out"], "table": result["table"]}


class RefineJob(_ClusterJob):
    """FWI of a dataset's models from a start, on a Ray cluster spanning the job's nodes (resumed on
    requeue: finished shards are kept)."""

    def __init__(
        self,
        cfg: RefineConfig,
        data: str,
        init: str,
        out: str,
        cluster: ClusterConfig,
        *,
        split: str | None = None,
        samples: int | None = None,
    ):
        self.cfg, self.split, self.samples, self.cluster = cfg, split, samples, _absolute(cluster)
        self.data, self.out = str(Path(data).resolve()), str(Path(out).resolve())
        self.init = init if init == "smooth" else str(Path(init).resolve())

    def __call__(self) -> dict | None:
        from hpcinv.cluster import run_on_cluster
        from hpcinv.refine import refine

        _setup_logging()

        def work(address: str) -> dict:
            with contextlib.redirect_stdout(sys.stderr):
                return refine(
                    self.data,
                    self.init,
                    self.out,
                    self.cfg,
                    split=self.split,
                    samples=self.samples,
                    use_ray=True,
                    address=address,
                    progress=False,
                )

        return run_on_cluster(work, self.cluster)
