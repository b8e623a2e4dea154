import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hpcinv.config import DataConfig, load_config
from hpcinv.feed import Normalised, Normaliser
from hpcinv.physics import simulate
from hpcinv.store import RunningStats, ShardedDataset, ShardSpec, read_manifest, verify_dataset, write_shard
from hpcinv.store.shard import read_shard_record
from hpcinv.velocity import make_source
from tests.conftest import ROOT, run_cli


def test_round_trip_is_bit_identical_to_regeneration(tiny_dataset):
    """Samples written by the CLI process equal an in-process regeneration of the same indices."""
    cfg = load_config(DataConfig, tiny_dataset / "config.yaml")
    ds = ShardedDataset(tiny_dataset)
    assert len(ds) == 24
    for index in (0, 9, 23):
        gathers, vel = ds.read(index)
        model = make_source(cfg).model(index)
        assert vel.tobytes() == model.tobytes()
        again = simulate(model, cfg.survey, cfg.grid, cfg.modelling).numpy()
        assert gathers.dtype == np.float32 and gathers.tobytes() == again.tobytes()


def test_manifest_statistics_match_data(tiny_dataset):
    manifest = read_manifest(tiny_dataset)
    ds = ShardedDataset(tiny_dataset)
    vel = np.stack([ds.read(i)[1] for i in range(len(ds))]).astype(np.float64)
    gat = np.stack([ds.read(i)[0] for i in range(len(ds))]).astype(np.float64)
    assert manifest["complete"] and manifest["samples_written"] == 24
    assert manifest["stats"]["velocity"]["mean"] == pytest.approx(vel.mean(), rel=1e-9)
    assert manifest["stats"]["velocity"]["std"] == pytest.approx(vel.std(), rel=1e-9)
    assert manifest["stats"]["gathers"]["min"] == pytest.approx(gat.min())
    assert manifest["stats"]["gathers"]["std"] == pytest.approx(gat.std(), rel=1e-9)
    assert manifest["physics"]["step_ratio"] >= 1


def test_running_stats_of_a_tensor_equal_those_of_its_array():
    """Generation reduces the gathers where they were modelled (a GPU) instead of on the host."""
    x = torch.randn(3, 5, 40, 7, generator=torch.Generator().manual_seed(0)).half() * 3 + 1
    on_device, on_host = RunningStats.of(x), RunningStats.of(x.numpy())
    assert on_device.count == on_host.count and (on_device.min, on_device.max) == (on_host.min, on_host.max)
    assert on_device.mean == pytest.approx(on_host.mean, rel=1e-12)
    assert on_device.m2 == pytest.approx(on_host.m2, rel=1e-12)
    assert RunningStats.of(torch.zeros(0)).count == 0


def test_running_stats_merge_equals_whole():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 2, 1000), rng.normal(-1, 5, 333)
    merged = RunningStats.of(a).merge(RunningStats.of(b))
    whole = RunningStats.of(np.concatenate([a, b]))
    assert merged.count == whole.count and merged.mean == pytest.approx(whole.mean)
    assert merged.std == pytest.approx(whole.std) and merged.min == whole.min


def test_dataloader_with_workers_and_normalisation(tiny_dataset):
    manifest = read_manifest(tiny_dataset)
    norm = Normaliser.from_manifest(manifest, gathers="openfwi", velocity="minmax", v_range=(1500.0, 4500.0))
    ds = Normalised(ShardedDataset(tiny_dataset), norm)
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = 0
    for g, v in loader:
        assert g.dtype == torch.float32 and g.shape[1:] == tuple(manifest["gathers_shape"])
        assert g.min() >= -1 - 1e-5 and g.max() <= 1 + 1e-5
        assert v.min() >= -1 and v.max() <= 1
        seen += len(g)
    assert seen == 24
    raw_v = torch.from_numpy(ShardedDataset(tiny_dataset).read(3)[1])
    torch.testing.assert_close(norm.velocity_inv(ds[3][1]), raw_v, rtol=0, atol=1e-3)
    std = Normaliser.from_manifest(manifest, gathers="standard", velocity="standard")
    all_g = torch.stack([Normalised(ShardedDataset(tiny_dataset), std)[i][0] for i in range(24)]).double()
    assert float(all_g.mean()) == pytest.approx(0, abs=1e-5) and float(all_g.std()) == pytest.approx(1, abs=1e-3)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_verify_names_truncated_and_corrupted_shards(tiny_dataset, tmp_path):
    ds = _copy(tiny_dataset, tmp_path / "ds")
    assert verify_dataset(ds).ok
    truncated = ds / "shards" / "shard-000001.h5"
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    flipped = ds / "shards" / "shard-000002.h5"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    report = verify_dataset(ds)
    assert not report.ok and report.shards_ok == 1
    text = "\n".join(report.problems)
    assert "shard-000001.h5: truncated" in text and "shard-000002.h5: corrupted" in text
    proc = run_cli("verify", str(ds))
    assert proc.returncode == 1 and "shard-000001.h5" in proc.stdout and "shard-000002.h5" in proc.stdout
    (ds / "shards" / "shard-000000.h5").unlink()
    assert "shard-000000.h5: file missing" in "\n".join(verify_dataset(ds).problems)


@pytest.mark.slow
def test_killed_writer_leaves_nothing_a_reader_accepts(tmp_path):
    """SIGKILL a process while it writes a large shard: only a temp file remains, which nothing accepts."""
    script = (
        "import numpy as np, sys; from hpcinv.store import ShardSpec, write_shard\n"
        "g = np.ones((24, 29, 400, 301), np.float32); v = np.ones((24, 20, 30), np.float32)\n"
        "print('start', flush=True)\n"
        f"write_shard({str(tmp_path)!r}, ShardSpec(0, 0, 24), v, g, config_hash='h', survey={{}})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout.readline().strip() == b"start"
    deadline = time.time() + 60
    while time.time() < deadline and not any(
        p.name.startswith(".shard-") and p.stat().st_size > 1 << 20 for p in tmp_path.iterdir()
    ):
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    names = [p.name for p in tmp_path.iterdir()]
    assert "shard-000000.h5" not in names, "a killed writer must never leave a file under the final name"
    assert any(n.startswith(".shard-000000.h5.tmp-") for n in names)
    # and the leftover is not a valid shard
    tmp = next(p for p in tmp_path.iterdir() if p.name.startswith(".shard-"))
    with pytest.raises(ValueError):
        read_shard_record(tmp, ShardSpec(0, 0, 24), "h")


def test_write_shard_refuses_mismatched_sizes(tmp_path):
    with pytest.raises(ValueError, match="expects 2 samples"):
        write_shard(tmp_path, ShardSpec(0, 0, 2), np.ones((3, 4, 4)), np.ones((3, 1, 2, 4)), config_hash="h", survey={})
    assert list(tmp_path.iterdir()) == []


def test_manifest_is_valid_json_with_documented_fields(tiny_dataset):
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    for key in (
        "format",
        "format_version",
        "config_hash",
        "n_samples",
        "shard_size",
        "velocity_shape",
        "gathers_shape",
        "gathers_dtype",
        "survey",
        "physics",
        "shards",
        "stats",
        "complete",
    ):
        assert key in manifest
    rec = manifest["shards"][0]
    assert set(rec) == {"name", "start", "stop", "bytes", "sha256", "stats", "mtime_ns", "ctime_ns"}


def test_shard_aware_sampler_gives_ranks_whole_shards_and_equal_lengths():
    from hpcinv.feed.sampler import ShardAwareSampler

    groups = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 20)]
    ranks = [ShardAwareSampler(groups, r, 2, seed=3) for r in range(2)]
    seen = [list(s) for s in ranks]
    assert len(seen[0]) == len(seen[1]) == 12  # rank 1 (one shard of 8) wraps around to 12
    assert set(seen[0]) == set(range(0, 8)) | set(range(16, 20)) and set(seen[1]) == set(range(8, 16))
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != seen[0] and sorted(ranks[0]) == sorted(seen[0])  # reshuffled, same samples
    # the rank's shards are interleaved, not read one after another: the first 4 samples (a batch)
    # come from both of rank 0's shards in most epochs
    mixed_batches = 0
    for epoch in range(20):
        ranks[0].set_epoch(epoch)
        first = list(ranks[0])[:4]
        mixed_batches += any(i < 8 for i in first) and any(i >= 16 for i in first)
    assert mixed_batches >= 10
    few = [list(ShardAwareSampler([np.arange(5)], r, 2, shuffle=False)) for r in range(2)]
    assert few == [[0, 2, 4], [1, 3, 1]]  # fewer shards than ranks: samples are split instead


def test_shard_aware_sampler_reads_a_window_of_shards_at_a_time():
    """With more shards than the window, a batch reads from at most about ``window`` shards, whatever the
    dataset's size; every sample still comes once per epoch; up to the window the order is the full
    shuffle's, sample for sample."""
    from hpcinv.feed.sampler import ShardAwareSampler

    groups = [np.arange(k * 10, (k + 1) * 10) for k in range(100)]  # 100 shards of 10 samples
    windowed = ShardAwareSampler(groups, 0, 1, seed=1, window=8)
    for epoch in (0, 1):
        windowed.set_epoch(epoch)
        order = list(windowed)
        assert sorted(order) == list(range(1000))
        shards_per_window = [len({i // 10 for i in order[j : j + 80]}) for j in range(0, 1000, 80)]
        assert max(shards_per_window) == 8  # each run of 80 samples: one window of 8 shards
        batches = [len({i // 10 for i in order[j : j + 32]}) for j in range(0, 992, 32)]
        assert max(batches) <= 16 and np.mean(batches) > 5  # a batch: a few shards, never all 100
    full = ShardAwareSampler(groups, 0, 1, seed=1)
    assert len({i // 10 for i in list(full)[:32]}) > 20  # the full shuffle: about one shard per sample
    assert list(ShardAwareSampler(groups, 0, 1, seed=1, window=100)) == list(full)


def test_store_writer_keeps_adopts_recomputes_and_records(tmp_path):
    """The manifest's resume cycle: a recorded intact shard is kept, a complete file the manifest does
    not list is adopted, a corrupt one is deleted and recomputed, a killed writer's temp file removed;
    recording writes the manifest with merged statistics, and finish() refuses an incomplete store."""
    from hpcinv.errors import HpcinvError
    from hpcinv.folders import SHARD_DIR
    from hpcinv.store import plan_shards
    from hpcinv.store.writer import StoreWriter

    specs = plan_shards(8, 2)  # 4 shards
    shards = tmp_path / SHARD_DIR
    shards.mkdir()
    rng = np.random.default_rng(0)

    def write(spec, digest="h"):
        v, g = rng.uniform(1500, 4500, (spec.size, 3, 4)), rng.normal(size=(spec.size, 1, 5, 4))
        return write_shard(shards, spec, v, g, config_hash=digest, survey={})

    manifest = {
        "format": "hpcinv-dataset",
        "format_version": 2,
        "config_hash": "h",
        "n_samples": 8,
        "shard_size": 2,
        "velocity_shape": [3, 4],
        "gathers_shape": [1, 5, 4],
        "survey": {},
        "shards": [write(specs[0])],
    }
    write(specs[1])  # complete, not recorded: adopted
    (shards / specs[2].name).write_bytes(b"not hdf5")  # corrupt: recomputed
    (shards / f".{specs[3].name}.tmp-123").write_bytes(b"half")  # a killed writer's temp file

    part = StoreWriter(tmp_path, dict(manifest), specs, write=False)
    assert not (tmp_path / "manifest.json").exists()  # a part of an array job writes no manifest

    writer = StoreWriter(tmp_path, manifest, specs)
    assert [s.name for s in writer.todo] == [specs[2].name, specs[3].name] == [s.name for s in part.todo]
    assert (writer.skipped, writer.adopted) == (2, 1)
    assert not (shards / specs[2].name).exists() and not list(shards.glob(".*tmp-*"))
    on_disk = read_manifest(tmp_path)
    assert [r["name"] for r in on_disk["shards"]] == [specs[0].name, specs[1].name]
    assert (on_disk["samples_written"], on_disk["complete"]) == (4, False)
    with pytest.raises(HpcinvError, match="ended with 4 of 8 samples"):
        writer.finish("generation")

    assert writer.record((write(s) for s in reversed(writer.todo)), desc="test", progress=False) == 4
    final = read_manifest(tmp_path)
    assert final == writer.finish("generation")
    assert [r["start"] for r in final["shards"]] == [0, 2, 4, 6] and final["complete"]
    assert final["stats"]["velocity"]["count"] == 8 * 3 * 4


def test_the_readmes_python_example_runs(tiny_dataset):
    """The README's Python API block, on the tiny dataset (which has no splits: all its samples)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Python API\n\n```python\n", 1)[1].split("```", 1)[0]
    assert '"runs/quickstart/dataset", split="train"' in block
    namespace: dict = {}
    exec(block.replace('"runs/quickstart/dataset", split="train"', repr(str(tiny_dataset))), namespace)
    gathers_STR, vel_ZX = namespace["gathers_STR"], namespace["vel_ZX"]
    assert gathers_STR.dtype == vel_ZX.dtype == torch.float32 and gathers_STR.ndim == 3 and vel_ZX.ndim == 2
    assert -1.0 <= float(vel_ZX.min()) < float(vel_ZX.max()) <= 1.0  # minmax: the manifest's range onto [-1, 1]
