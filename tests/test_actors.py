"""The actor paths in process, on one session-wide local Ray (fast tier): generation fanned out over
two single-thread modelling actors gives exactly the serial result, and an imported collection reaches
the actors through the object store. The CLI runs of the same paths (killed actors, killed drivers,
unreachable clusters) are in test_generate_ray.py."""

import h5py
import numpy as np

from hpcinv.generate import generate
from hpcinv.physics import simulate
from hpcinv.store import ShardedDataset, read_manifest, verify_dataset
from hpcinv.velocity import make_source
from tests.conftest import tiny_config


def _check_complete(out, n_samples) -> ShardedDataset:
    report = verify_dataset(out)
    assert report.ok, report.problems
    indices = []
    for rec in read_manifest(out)["shards"]:
        with h5py.File(out / "shards" / rec["name"]) as fh:
            indices.extend(fh["index"][:].tolist())
    assert sorted(indices) == list(range(n_samples)), "every global index exactly once"
    return ShardedDataset(out)


def test_two_actors_complete_and_match_serial_modelling(tmp_path, ray_local):
    cfg = tiny_config("dataset.n_samples=12", "dataset.shard_size=3")
    out = tmp_path / "ds"
    summary = generate(cfg, out, use_ray=True, workers=2, progress=False)
    assert summary.computed_shards == 4 and summary.extra["workers"] == 2
    assert len(summary.extra["samples_per_s_per_worker"]) == 2
    ds = _check_complete(out, 12)
    models = make_source(cfg).models(0, 12)
    gathers = simulate(models, cfg.survey, cfg.grid, cfg.modelling).numpy()
    for i in range(12):
        g, v = ds.read(i)
        assert v.tobytes() == models[i].tobytes() and g.tobytes() == gathers[i].tobytes()
    again = generate(cfg, out, use_ray=True, workers=2, progress=False)  # done: nothing is recomputed
    assert (again.computed_shards, again.skipped_shards) == (0, 4)


def test_collection_is_shared_with_actors(tmp_path, ray_local):
    models = np.stack([np.full((48, 64), 3000.0 + 50 * i, dtype=np.float32) for i in range(6)])
    np.savez(tmp_path / "m.npz", v=models)
    cfg = tiny_config(
        "velocity.source=npz", f"velocity.path={tmp_path / 'm.npz'}", "dataset.n_samples=null", "dataset.shard_size=2"
    )
    out = tmp_path / "ds"
    generate(cfg, out, use_ray=True, workers=2, progress=False)
    ds = _check_complete(out, 6)
    assert [float(ds.read(i)[1][0, 0]) for i in range(6)] == [3000.0 + 50 * i for i in range(6)]
