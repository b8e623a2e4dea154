"""The training input path: whole batches as stored, normalised on the device, prepared ahead."""

import shutil

import h5py
import numpy as np
import pytest
import torch

from hpcinv.errors import DataError, HpcinvError
from hpcinv.feed import BatchReaders, Normalised, Normaliser, RawBatches, RawCache
from hpcinv.feed import batches as batches_module
from hpcinv.feed.device import DeviceFeed, batches_of, cache_batches, normalised
from hpcinv.feed.mixture import Concatenated
from hpcinv.feed.sampler import ShardAwareSampler
from hpcinv.store import ShardedDataset, read_manifest
from hpcinv.train.loop import epoch_batches


def _zero_chunk(shard, row: int) -> None:
    with h5py.File(shard, "r") as fh:
        info = fh["gathers"].id.get_chunk_info_by_coord((row, 0, 0, 0))
    with open(shard, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\0" * info.size)


def _norm(root) -> Normaliser:
    return Normaliser.from_manifest(read_manifest(root), "openfwi", "minmax")


def test_read_batch_equals_sample_reads_in_any_order(tiny_dataset):
    ds = ShardedDataset(tiny_dataset, split=None)
    positions = [17, 3, 9, 3, 0, 23, 8]  # several shards, unsorted, a repeat
    gathers, vel = ds.read_batch(positions)
    assert gathers.dtype == np.dtype(read_manifest(tiny_dataset)["gathers_dtype"]) and vel.dtype == np.float32
    for k, p in enumerate(positions):
        g, v = ds.read(p)
        assert gathers[k].tobytes() == g.tobytes() and vel[k].tobytes() == v.tobytes()
    both = Concatenated([ShardedDataset(tiny_dataset, indices=[5, 6]), ShardedDataset(tiny_dataset, indices=[20])])
    g2, _ = both.read_batch([2, 0, 1])
    assert [x.tobytes() for x in g2] == [ds.read(i)[0].tobytes() for i in (20, 5, 6)]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_readers_give_the_stored_bytes_in_order_from_reused_buffers(tiny_dataset, workers):
    """Batches arrive as the same bytes, in the order asked (runs of consecutive rows, repeats, a short
    last batch), epoch after epoch, always in one of the few buffers allocated up front: shared memory
    for reader processes, a plain buffer in the calling thread with none."""
    ds = ShardedDataset(tiny_dataset, split=None)
    order = [4, 5, 6, 1, 2, 23, 22, 9, 9, 0, 13]
    readers = BatchReaders(ds, batch_size=3, workers=workers, depth=2)
    assert len(readers.slots) == (workers * 2 + 1 if workers else 1)
    slot_ptrs = {g.data_ptr() for g, _ in readers.slots}
    procs = []
    try:
        for _ in range(2):
            got = []
            for g, v in readers.epoch(order):
                assert g.data_ptr() in slot_ptrs and g.is_shared() == (workers > 0)
                got.append((g.numpy().tobytes(), v.numpy().tobytes()))  # copied before the next is asked
            want = [ds.read_batch(order[i : i + 3]) for i in range(0, len(order), 3)]
            assert got == [(g.tobytes(), v.tobytes()) for g, v in want]
            procs = procs or list(readers._procs)
            assert readers._procs == procs  # the same processes serve every epoch
    finally:
        readers.close()
    assert len(procs) == workers and all(p.exitcode is not None for p in procs) and not readers._procs


def test_an_epoch_left_early_leaves_no_stale_batch_and_one_epoch_runs_at_a_time(tiny_dataset):
    ds = ShardedDataset(tiny_dataset, split=None)
    readers = BatchReaders(ds, batch_size=2, workers=2, depth=2)
    try:
        first = readers.epoch(range(24))
        next(first)
        with pytest.raises(RuntimeError, match="one epoch at a time"):
            next(readers.epoch(range(4)))
        first.close()  # four batches were still being read
        order = [7, 3, 19, 11]
        got = [g.numpy().tobytes() for g, _ in readers.epoch(order)]
        assert got == [ds.read_batch(order[:2])[0].tobytes(), ds.read_batch(order[2:])[0].tobytes()]
    finally:
        readers.close()


def test_a_damaged_sample_is_raised_at_its_batch_and_the_next_epoch_reads(tiny_dataset, tmp_path):
    root = shutil.copytree(tiny_dataset, tmp_path / "ds")
    _zero_chunk(root / "shards" / "shard-000001.h5", row=1)
    readers = BatchReaders(ShardedDataset(root), batch_size=2, workers=1)
    try:
        it = readers.epoch([0, 1, 8, 9, 16, 17])
        assert len(next(it)[0]) == 2
        with pytest.raises(DataError, match=r"shard-000001\.h5: sample 9 \(row 1\) is damaged"):
            next(it)
        assert [len(g) for g, _ in readers.epoch([0, 1, 16])] == [2, 1]
    finally:
        readers.close()


def test_a_killed_reader_process_is_an_error_not_a_hang(tiny_dataset):
    import os
    import signal
    import time

    readers = BatchReaders(ShardedDataset(tiny_dataset, split=None), batch_size=1, workers=1, depth=1)
    it = readers.epoch(list(range(24)) * 4)
    next(it)
    (proc,) = readers._procs
    os.kill(proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"batch reader process died \(hpcinv-reader-0 exit code -9"):
        list(it)
    assert time.monotonic() - t0 < 30 and not readers._procs


def test_reader_processes_exit_when_their_parent_is_killed(tiny_dataset):
    """A training process killed outright (SIGKILL, OOM) must not leave its readers running."""
    import subprocess
    import sys
    import time

    code = (
        "import os, signal, sys\n"
        "from hpcinv.feed import BatchReaders\nfrom hpcinv.store import ShardedDataset\n"
        f"r = BatchReaders(ShardedDataset({str(tiny_dataset)!r}), batch_size=2, workers=2)\n"
        "next(r.epoch(range(24)))\n"
        "print(' '.join(str(p.pid) for p in r._procs), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2

    def running(pid: int) -> bool:  # an exited orphan may stay a zombie where nothing reaps it
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.1)
    assert not any(running(p) for p in pids), "a reader outlived its parent"


def test_readers_refuse_a_gathers_only_dataset_and_bad_sizes(tiny_dataset):
    ds = ShardedDataset(tiny_dataset)
    with pytest.raises(ValueError, match="batch_size 0 and depth 2 must be >= 1 and workers 1 >= 0"):
        BatchReaders(ds, batch_size=0)
    ds.has_velocity = False
    with pytest.raises(DataError, match="holds gathers only"):
        BatchReaders(ds, batch_size=2)


def test_a_normalised_batch_never_shares_the_readers_buffer(tiny_dataset):
    """A float32 dataset with no normalisation on the CPU: converting is a no-op, so the feed must copy,
    or the next read would overwrite a batch the training step still holds."""
    g = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)
    v = torch.ones(1, 2, 3)
    gn, vn = normalised(g, v, Normaliser(), torch.device("cpu"))
    assert gn.data_ptr() != g.data_ptr() and vn.data_ptr() != v.data_ptr()
    assert torch.equal(gn, g) and torch.equal(vn[:, 0], v)


def test_read_batch_names_a_damaged_sample(tiny_dataset, tmp_path):
    root = shutil.copytree(tiny_dataset, tmp_path / "ds")
    _zero_chunk(root / "shards" / "shard-000001.h5", row=1)
    ds = ShardedDataset(root)
    ds.read_batch([8, 10])  # the rest of the shard reads fine
    with pytest.raises(DataError, match=r"shard-000001\.h5: sample 9 \(row 1\) is damaged"):
        ds.read_batch([8, 9, 10])


def test_the_feed_gives_what_the_per_sample_path_gave(tiny_dataset):
    """Normalised on the device, a batch at a time, equals the old CPU path sample by sample."""
    norm = _norm(tiny_dataset)
    ds = ShardedDataset(tiny_dataset)
    order = [4, 11, 19, 0, 7]
    got = list(DeviceFeed(norm, torch.device("cpu"), depth=2)(RawBatches(ds)[b] for b in batches_of(order, 2)))
    assert [len(g) for g, _ in got] == [2, 2, 1]
    gathers, target = torch.cat([g for g, _ in got]), torch.cat([t for _, t in got])
    assert gathers.dtype == torch.float32 and target.shape == (5, 1, *read_manifest(tiny_dataset)["velocity_shape"])
    for k, p in enumerate(order):
        g, v = Normalised(ds, norm)[p]
        torch.testing.assert_close(gathers[k], g, rtol=0, atol=0)
        torch.testing.assert_close(target[k, 0], v, rtol=0, atol=0)


def test_the_cache_holds_the_stored_bytes_and_refuses_what_does_not_fit(tiny_dataset, monkeypatch):
    ds = ShardedDataset(tiny_dataset)
    sampler = ShardAwareSampler(ds.positions_by_shard(), rank=1, world=2, seed=0)
    mine = np.concatenate(sampler.mine)
    cache = RawCache(ds, mine, torch.device("cpu"))
    assert cache.place == "host" and len(cache.gathers) == len(mine)
    assert cache.nbytes == len(mine) * (ds.read(0)[0].nbytes + ds.read(0)[1].nbytes)
    order = list(sampler)
    for batch, (g, v) in zip(batches_of(order, 3), cache_batches(cache, order, 3), strict=True):
        want_g, want_v = ds.read_batch(batch)
        assert g.numpy().tobytes() == want_g.tobytes() and v.numpy().tobytes() == want_v.tobytes()
    with pytest.raises(IndexError, match="not in this rank's cache"):
        cache.take([int(np.setdiff1d(np.arange(len(ds)), mine)[0])])
    monkeypatch.setattr(batches_module, "available_host_bytes", lambda: 10_000)
    with pytest.raises(
        HpcinvError,
        match=r"data.cache=memory needs 0\.\d+ GiB .* has 0\.00 GiB available.*"
        r"data.cache=none",
    ):
        RawCache(ds, mine, torch.device("cpu"))
    # the ranks of a node check at once: each may take its share of the node's memory, not all of it
    monkeypatch.setattr(batches_module, "available_host_bytes", lambda: int(cache.nbytes / 0.8 * 2.5))
    assert RawCache(ds, mine, torch.device("cpu"), ranks_on_node=2).place == "host"
    with pytest.raises(HpcinvError, match=r"shared by 3 ranks on this node: 0\.\d+ GiB per rank"):
        RawCache(ds, mine, torch.device("cpu"), ranks_on_node=3)


def test_a_damaged_batch_is_raised_where_it_happened_and_the_thread_ends(tiny_dataset, tmp_path):
    root = shutil.copytree(tiny_dataset, tmp_path / "ds")
    _zero_chunk(root / "shards" / "shard-000001.h5", row=1)
    norm = _norm(root)
    reader = RawBatches(ShardedDataset(root))
    feed = DeviceFeed(norm, torch.device("cpu"), depth=2)
    it = feed(reader[b] for b in [[0, 1], [8, 9], [16, 17]])
    assert len(next(it)[0]) == 2
    with pytest.raises(DataError, match=r"sample 9 \(row 1\) is damaged"):
        next(it)
    # a rank that met it keeps stepping with weight 0 until the check that stops every rank
    blank = (torch.zeros(1), torch.zeros(1))
    steps = list(epoch_batches(feed(reader[b] for b in [[0, 1], [8, 9], [16, 17]]), 4, blank))
    assert [w for *_, w, _ in steps] == [1.0, 0.0, 0.0, 0.0]
    assert steps[1][3] and "sample 9 (row 1) is damaged" in steps[1][3] and steps[0][3] is None
    assert steps[3][0] is steps[0][0]  # the last good batch, repeated
    with pytest.raises(HpcinvError, match="ended before the epoch's 5 batches"):
        list(epoch_batches(feed(reader[b] for b in [[0], [1]]), 5, blank))


def test_closing_the_feed_early_stops_its_thread(tiny_dataset):
    import threading

    norm = _norm(tiny_dataset)
    reader = RawBatches(ShardedDataset(tiny_dataset))
    it = DeviceFeed(norm, torch.device("cpu"), depth=1)(reader[[i]] for i in range(24))
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name == "hpcinv-feed"]


def test_a_mixture_of_float16_and_float32_datasets_reads_float32(tiny_dataset, tmp_path):
    """A batch of a mixture is read in the wider of its datasets' dtypes: a float32 dataset mixed into
    a float16 one keeps its precision, whichever dataset the batch comes from."""
    narrow = tmp_path / "narrow"
    shutil.copytree(tiny_dataset, narrow)
    wide_ds, narrow_ds = ShardedDataset(tiny_dataset), ShardedDataset(narrow)
    narrow_ds.manifest["gathers_dtype"] = "float16"  # (as a float16 dataset's manifest says)
    assert wide_ds.gathers_dtype == np.float32
    both = Concatenated([narrow_ds, wide_ds])
    g, _ = both.read_batch([len(narrow_ds) + 1])
    assert g.dtype == np.float32 and g[0].tobytes() == wide_ds.read_batch([1])[0][0].tobytes()
