"""The actor paths in process, on one local Ray for the module: generation fanned out over
two single-thread modelling actors gives exactly the serial result, and an imported collection reaches
the actors through the object store. The CLI runs of the same paths (killed actors, killed drivers,
unreachable clusters) are in test_generate_ray.py."""

import h5py
import numpy as np
import pytest

from hpcinv.distributed.pool import ShardPool, place
from hpcinv.errors import HpcinvError
from hpcinv.physics import simulate
from hpcinv.stages import Execution
from hpcinv.stages.generate import run as run_generate
from hpcinv.stages.requests import GenerateRequest
from hpcinv.store import ShardedDataset, plan_shards, read_manifest, verify_dataset
from hpcinv.velocity import make_source
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # Ray is started: not in the fast tier


def _check_complete(out, n_samples) -> ShardedDataset:
    report = verify_dataset(out)
    assert report.ok, report.problems
    indices = []
    for rec in read_manifest(out)["shards"]:
        with h5py.File(out / "shards" / rec["name"]) as fh:
            indices.extend(fh["index"][:].tolist())
    assert sorted(indices) == list(range(n_samples)), "every global index exactly once"
    return ShardedDataset(out)


def generate(cfg, out, workers=None):
    """The generate stage on Ray (the module's local instance)."""
    return run_generate(GenerateRequest(config=cfg, out=str(out)), Execution(workers=workers, progress=False))


def test_two_actors_complete_and_match_serial_modelling(tmp_path, ray_local):
    cfg = tiny_config("dataset.n_samples=12", "dataset.shard_size=3")
    out = tmp_path / "ds"
    summary = generate(cfg, out, workers=2)
    assert summary["computed_shards"] == 4 and summary["extra"]["workers"] == 2
    assert len(summary["extra"]["samples_per_s_per_worker"]) == 2
    ds = _check_complete(out, 12)
    models = make_source(cfg).models(0, 12)
    gathers = simulate(models, cfg.survey, cfg.grid, cfg.modelling).numpy()
    for i in range(12):
        g, v = ds.read(i)
        assert v.tobytes() == models[i].tobytes() and g.tobytes() == gathers[i].tobytes()
    again = generate(cfg, out, workers=2)  # done: nothing is recomputed
    assert (again["computed_shards"], again["skipped_shards"]) == (0, 4)


def test_collection_is_shared_with_actors(tmp_path, ray_local):
    models = np.stack([np.full((48, 64), 3000.0 + 50 * i, dtype=np.float32) for i in range(6)])
    np.savez(tmp_path / "m.npz", v=models)
    cfg = tiny_config(
        "velocity.source=npz", f"velocity.path={tmp_path / 'm.npz'}", "dataset.n_samples=null", "dataset.shard_size=2"
    )
    out = tmp_path / "ds"
    generate(cfg, out, workers=2)
    ds = _check_complete(out, 6)
    assert [float(ds.read(i)[1][0, 0]) for i in range(6)] == [3000.0 + 50 * i for i in range(6)]


def test_an_actor_that_refuses_to_start_is_one_clear_line(ray_local):
    def _refusing():  # (nested: Ray pickles it by value, the actors cannot import this test module)
        raise HpcinvError("modelling.device=cuda needs a working GPU, but: no CUDA driver")

    pool = ShardPool(place("cpu", 1, 2, "modelling.device"), _refusing, {}, what="modelling")
    with pytest.raises(HpcinvError) as caught:
        list(pool(plan_shards(4, 2)))
    assert str(caught.value) == (
        "the modelling actors could not start: modelling.device=cuda needs a working GPU, but: no CUDA driver"
    )


def test_placement_refuses_what_the_cluster_cannot_hold_before_anything_is_written(tmp_path, ray_local):
    cfg = tiny_config("dataset.n_samples=4")
    with pytest.raises(HpcinvError, match=r"--workers 3 asks for 3 actors of 1 CPU\(s\) each, .* 2 CPUs: at most 2"):
        generate(cfg, tmp_path / "ds", workers=3)
    with pytest.raises(HpcinvError, match="modelling.device=cuda but the Ray cluster has no GPU"):
        generate(tiny_config("modelling.device=cuda"), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    # "auto" is decided once, by the driver: actors are told "cpu" here, one per core
    placement = place("auto", 1, None, "modelling.device")
    assert (placement.device, placement.options, placement.actors) == ("cpu", {"num_cpus": 1}, 2)
