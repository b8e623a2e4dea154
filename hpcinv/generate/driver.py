"""Generation driver: validate, plan shards, run the shard work.

The dataset folder is opened by :func:`hpcinv.store.folder.open_dataset_folder` (a folder holding a
dataset of another config -- or whose ``config.yaml`` and manifest disagree -- is refused, naming the
difference, unless ``restart=True``) and its manifest kept by a :class:`~hpcinv.store.writer.StoreWriter`:
re-running the same command on the same folder skips complete shards whose files are unchanged since
they were recorded (one ``stat`` each; ``--verify full``: their sha256), adopting complete
shard files that a crashed driver had not yet recorded, or all of them when the manifest itself was
damaged) and recomputes only missing or corrupt ones. The whole run holds the folder's lock
(:mod:`hpcinv.store.lock`): exclusively, or shared by the parts of an array job, so a second writer
is refused instead of mixing two datasets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from hpcinv.config import DataConfig
from hpcinv.errors import HpcinvError
from hpcinv.field.condition import n_kept
from hpcinv.generate.worker import ShardWorker
from hpcinv.physics import validate_physics
from hpcinv.physics.forward import torch_threads
from hpcinv.physics.survey import n_output_samples
from hpcinv.store.folder import open_dataset_folder
from hpcinv.store.schema import new_manifest
from hpcinv.store.shard import ShardSpec, plan_shards
from hpcinv.store.writer import Executor, StoreWriter
from hpcinv.threads import ahead
from hpcinv.velocity import VelocitySource, make_source

log = logging.getLogger(__name__)


@dataclass
class Plan:
    cfg: DataConfig
    out: Path
    source: VelocitySource
    writer: StoreWriter  # its todo: the shards to compute
    part: tuple[int, int] | None = None  # (i, k): only shards i, i+k, i+2k, ... and no manifest writes


@dataclass
class Summary:
    out: str
    samples: int
    shards: int
    computed_shards: int
    skipped_shards: int
    wall_s: float
    samples_per_s: float
    extra: dict = field(default_factory=dict)


def check_dataset_config(cfg: DataConfig) -> tuple[VelocitySource, dict]:
    """Build the velocity source and run every physical check; nothing is written."""
    source = make_source(cfg)
    cfg.dataset.split_ranges(len(source))  # raises on splits that do not cover the samples
    recorded = n_output_samples(cfg.survey)
    if n_kept(recorded, cfg.survey.dt_s * cfg.survey.downsample, cfg.conditioning) < recorded:
        raise HpcinvError(
            f"conditioning.max_time_s={cfg.conditioning.max_time_s} would cut the {recorded}-sample record a "
            "generated dataset stores; shorten survey.nt instead (the window is for imported recordings)"
        )
    v_min, v_max = source.bounds()
    report = validate_physics(cfg, v_min, v_max)
    return source, report.__dict__


def check_part(part: tuple[int, int] | None) -> None:
    if part is not None and not (part[1] >= 1 and 0 <= part[0] < part[1]):
        raise HpcinvError(f"part {part[0]} of {part[1]} is not valid: give i of k with 0 <= i < k")


def prepare(
    cfg: DataConfig,
    out: str | Path,
    *,
    restart: bool = False,
    validated: tuple[VelocitySource, dict] | None = None,
    part: tuple[int, int] | None = None,
    full: bool = False,
) -> Plan:
    """Validate (unless ``validated`` is given), then create or reopen ``out`` and list the shards to compute
    (``full``: every recorded shard re-checked by its sha256, not only by its file's size and times).

    With ``part=(i, k)`` only every k-th shard from the i-th is planned and neither the manifest nor
    other parts' files are touched, so k independent jobs can fill one dataset at once; a final run
    without ``part`` adopts their shards (verified) into the manifest.
    """
    check_part(part)
    source, physics = validated or check_dataset_config(cfg)
    specs = plan_shards(len(source), cfg.dataset.shard_size)
    if part is not None:
        if restart:
            raise HpcinvError("--restart cannot be combined with a part: discard the dataset once, before the parts")
        specs = specs[part[0] :: part[1]]
    manifest = open_dataset_folder(cfg, out, restart=restart) or new_manifest(cfg, len(source), physics)
    writer = StoreWriter(Path(out), manifest, specs, write=part is None, full=full, part=part)
    return Plan(cfg, Path(out), source, writer, part=part)


def in_process_executor(plan: Plan) -> Executor:
    """Shards modelled in this process by a modelling thread that runs ahead, while this thread writes,
    fsyncs and hashes the previous one and records it in the manifest: the device (or core) that
    models never waits for the host work. Up to three shards are in host memory at once (one written,
    one waiting, one being modelled). A stopped run does not wait for the shard being modelled."""

    def run(specs: list[ShardSpec]) -> Iterator[dict]:
        if not specs:
            return
        with torch_threads(plan.cfg.modelling.threads):
            worker = ShardWorker(plan.cfg, plan.out, source=plan.source)

            def modelling():
                return ((spec, *worker.model(spec)) for spec in specs)

            with closing(ahead(modelling, 1, "hpcinv-modeller", wait=False)) as modelled:
                for spec, vel_NZX, gathers, stats in modelled:
                    yield worker.write(spec, vel_NZX, gathers, stats)

    return run


def execute(plan: Plan, executor: Executor, *, progress: bool = True) -> Summary:
    """Run the plan's shards through ``executor``, recording each finished shard in the manifest."""
    t0 = time.perf_counter()
    writer = plan.writer
    samples = writer.run(executor, desc="generate", progress=progress)
    wall = time.perf_counter() - t0
    rate = round(samples / wall, 3) if wall > 0 else 0.0
    computed = len(writer.todo)
    if plan.part is not None:
        extra = {"part": list(plan.part)}
        return Summary(
            str(plan.out), samples, writer.skipped + computed, computed, writer.skipped, round(wall, 3), rate, extra
        )
    final = writer.finish("generation")
    return Summary(
        str(plan.out), final["n_samples"], len(final["shards"]), computed, writer.skipped, round(wall, 3), rate
    )


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise HpcinvError(f"--workers must be a whole number >= 1, got {workers} (leave it out for one per core/GPU)")


def check_device(cfg: DataConfig) -> None:
    """In-process generation with ``modelling.device=cuda`` needs a GPU here."""
    if cfg.modelling.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise HpcinvError(
                "modelling.device=cuda but this machine has no usable CUDA GPU; use "
                "modelling.device=cpu (or auto), or run on a GPU node"
            )
