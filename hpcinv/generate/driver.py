"""Generation driver: validate, plan shards, resume, run the shard work, keep the manifest.

The driver alone writes the manifest, atomically, as shards finish (at most every
``MANIFEST_INTERVAL_S``, and at the end). Re-running the same
command on the same folder skips complete, verified shards (adopting complete shard files that a
crashed driver had not yet recorded, or all of them when the manifest itself was damaged) and
recomputes only missing or corrupt ones. A folder holding a dataset of another config -- or whose
``config.yaml`` and manifest disagree -- is refused, naming the difference, unless ``restart=True``.
The whole run holds the folder's lock (:mod:`hpcinv.store.lock`): exclusively, or shared by the
parts of an array job, so a second writer is refused instead of mixing two datasets.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hpcinv.config import EXECUTION_KEYS, DataConfig, config_hash, load_config, save_config
from hpcinv.errors import HpcinvError
from hpcinv.generate.worker import ShardWorker
from hpcinv.physics import validate_physics
from hpcinv.store.lock import LOCK
from hpcinv.store.manifest import CONFIG, MANIFEST, read_manifest, write_manifest
from hpcinv.store.schema import new_manifest
from hpcinv.store.shard import FORMAT_VERSION, SHARD_DIR, ShardSpec, plan_shards
from hpcinv.velocity import VelocitySource, make_source
from hpcinv.work import Executor, record_shards, remove_stale, resume_shards

log = logging.getLogger(__name__)


@dataclass
class Plan:
    cfg: DataConfig
    out: Path
    source: VelocitySource
    manifest: dict
    todo: list[ShardSpec]
    skipped: int = 0
    adopted: int = 0
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
    v_min, v_max = source.bounds()
    report = validate_physics(cfg, v_min, v_max)
    return source, report.__dict__


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_difference(there: DataConfig, here: DataConfig, limit: int = 4) -> str:
    """The keys that decide a dataset's bits and differ, e.g. "dataset.n_samples is 240 there, 8 here"."""
    skip = {f"{section}.{key}" for section, keys in EXECUTION_KEYS.items() for key in keys}
    a, b = _flatten(there.model_dump(mode="json")), _flatten(here.model_dump(mode="json"))
    keys = [k for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)]
    shown = [f"{k} is {a.get(k)!r} there, {b.get(k)!r} here" for k in keys[:limit]]
    return "; ".join(shown) + (f" (and {len(keys) - limit} more keys)" if len(keys) > limit else "")


def _folder_problem(cfg: DataConfig, out: Path) -> str | None:
    """Why ``out``'s dataset cannot be continued with ``cfg`` (None: it can)."""
    disk_cfg = None
    if (out / CONFIG).exists():
        try:
            disk_cfg = load_config(DataConfig, out / CONFIG)
        except HpcinvError as exc:
            return f"its {CONFIG} is unreadable ({exc})"
    if (out / MANIFEST).exists():
        try:
            manifest = read_manifest(out)
        except HpcinvError:
            manifest = None  # rebuilt from the shards by prepare() if config.yaml agrees
        if manifest is not None:
            if manifest["format_version"] != FORMAT_VERSION:
                return (
                    f"it was written by an older hpcinv (dataset format {manifest['format_version']}, this one "
                    f"writes {FORMAT_VERSION}); it can be read but not extended"
                )
            if disk_cfg is None:
                return f"it has a {MANIFEST} but no {CONFIG}"
            if config_hash(disk_cfg) != manifest["config_hash"]:
                return (
                    f"its {CONFIG} (hash {config_hash(disk_cfg)[:12]}) and {MANIFEST} (hash "
                    f"{manifest['config_hash'][:12]}) disagree: two different runs wrote into it"
                )
    if disk_cfg is not None and config_hash(disk_cfg) != config_hash(cfg):
        return f"it holds a dataset made with a different config: {config_difference(disk_cfg, cfg)}"
    return None


def check_output_folder(cfg: DataConfig, out: str | Path, *, restart: bool = False) -> bool:
    """Read-only check that ``out`` may receive ``cfg``'s dataset; True if an old one must be discarded."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HpcinvError(f"--out {str(out)!r} exists and is not a folder")
    if (out / CONFIG).exists() or (out / MANIFEST).exists():
        problem = _folder_problem(cfg, out)
        if problem is None:
            return False
        if not restart:
            raise HpcinvError(
                f"{str(out)!r}: {problem}; use another --out, the same config, or --restart to discard it"
            )
        return True
    if out.is_dir() and any(p.name != LOCK and not p.name.startswith(f".{CONFIG}.tmp-") for p in out.iterdir()):
        # (a config being written by a concurrent part of the same dataset is not "non-empty")
        raise HpcinvError(f"--out {str(out)!r} is a non-empty folder that is not an hpcinv dataset")
    return False


def open_dataset_folder(cfg: DataConfig, out: str | Path, *, restart: bool = False) -> None:
    """Create ``out`` for ``cfg``'s dataset (its config, written atomically, then the shard folder), or
    reopen it; safe when several parts of one dataset start at once. The caller holds ``out``'s lock."""
    out = Path(out)
    if check_output_folder(cfg, out, restart=restart):
        log.warning("discarding the dataset in %s (--restart)", out)
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
        for name in (MANIFEST, CONFIG):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CONFIG).exists():
        save_config(cfg, out / CONFIG)
    (out / SHARD_DIR).mkdir(exist_ok=True)


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
) -> Plan:
    """Validate (unless ``validated`` is given), then create or reopen ``out`` and list the shards to compute.

    With ``part=(i, k)`` only every k-th shard from the i-th is planned and neither the manifest nor
    other parts' files are touched, so k independent jobs can fill one dataset at once; a final run
    without ``part`` adopts their shards (verified) into the manifest.
    """
    check_part(part)
    source, physics = validated or check_dataset_config(cfg)
    out = Path(out)
    new_hash = config_hash(cfg)
    specs = plan_shards(len(source), cfg.dataset.shard_size)
    if part is not None:
        if restart:
            raise HpcinvError("--restart cannot be combined with a part: discard the dataset once, before the parts")
        specs = specs[part[0] :: part[1]]
    open_dataset_folder(cfg, out, restart=restart)
    remove_stale(out, specs)
    manifest = new_manifest(cfg, len(source), physics)
    if (out / MANIFEST).exists():
        try:
            manifest = read_manifest(out)
        except HpcinvError as exc:
            log.warning("%s; rebuilding it from the shards on disk", exc)
    kept, todo, adopted = resume_shards(out, specs, manifest["shards"], new_hash)
    if part is not None:
        return Plan(cfg, out, source, manifest, todo, skipped=len(kept), adopted=adopted, part=part)
    manifest["shards"] = kept
    write_manifest(out, manifest)
    return Plan(cfg, out, source, read_manifest(out), todo, skipped=len(kept), adopted=adopted)


def in_process_executor(plan: Plan) -> Executor:
    """Shards modelled in this process; each is written by a writer thread while the next is modelled."""

    def run(specs: list[ShardSpec]) -> Iterator[dict]:
        worker = ShardWorker(plan.cfg, plan.out, source=plan.source)
        with ThreadPoolExecutor(1, thread_name_prefix="hpcinv-writer") as writer:
            pending = None
            for spec in specs:
                modelled = worker.model(spec)
                if pending is not None:
                    yield pending.result()
                pending = writer.submit(worker.write, spec, *modelled)
            if pending is not None:
                yield pending.result()

    return run


def execute(plan: Plan, executor: Executor, *, progress: bool = True) -> Summary:
    """Run ``plan.todo`` through ``executor``, recording each finished shard in the manifest."""
    t0 = time.perf_counter()
    todo_samples = sum(s.size for s in plan.todo)
    record_shards(
        plan.out,
        plan.manifest,
        executor(plan.todo),
        total=todo_samples,
        desc="generate",
        progress=progress,
        write=plan.part is None,
    )
    wall = time.perf_counter() - t0
    rate = round(todo_samples / wall, 3) if wall > 0 else 0.0
    if plan.part is not None:
        n_part = plan.skipped + len(plan.todo)
        return Summary(
            str(plan.out),
            sum(s.size for s in plan.todo),
            n_part,
            len(plan.todo),
            plan.skipped,
            round(wall, 3),
            rate,
            extra={"part": list(plan.part)},
        )
    final = read_manifest(plan.out)
    if not final["complete"]:
        raise HpcinvError(f"generation ended with {final['samples_written']} of {final['n_samples']} samples")
    return Summary(
        str(plan.out), final["n_samples"], len(final["shards"]), len(plan.todo), plan.skipped, round(wall, 3), rate
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
