"""GPU tier: runs wherever CUDA is available (``pytest -m gpu``), skips cleanly elsewhere (CI has no GPU)."""

import os
import socket

import numpy as np
import pytest
import torch

from hpcinv.config import DataConfig, ModelSection, load_config
from hpcinv.feed import BatchReaders, Normaliser, RawBatches, RawCache
from hpcinv.feed.device import DeviceFeed, batches_of, cache_batches
from hpcinv.nets import build_model, model_spec
from hpcinv.physics import simulate
from hpcinv.store import ShardedDataset, read_manifest
from hpcinv.train.engine import optimizer_nonfinite_count, train_step
from hpcinv.train.parallel import grad_scaler
from hpcinv.velocity import make_source
from tests.conftest import CONFIGS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible here)"),
]


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_the_preflight_passes_on_this_gpu():
    from hpcinv.doctor import findings

    found = findings(gpu=True, probe=True)
    assert not [f for f in found if f.level == "fail"], "\n".join(map(str, found))


def test_a_training_rank_checks_its_own_gpu_only():
    from hpcinv.doctor import findings, require_gpu_ready

    require_gpu_ready("a test", torch.device("cuda", 0), deepwave=False)
    found = findings(gpu=True, devices=[0], deepwave=False)
    gpu_lines = [f.text for f in found if f.text.startswith("cuda:")]
    assert len(gpu_lines) == 1 and gpu_lines[0].startswith("cuda:0 ") and "deepwave" not in gpu_lines[0]
    assert not any("deepwave kernels" in f.text for f in found)
    beyond = torch.cuda.device_count()
    assert any(f.level == "fail" and f"GPU index {beyond}" in f.text for f in findings(devices=[beyond]))


@pytest.mark.parametrize("models_per_call", [1, 4])
def test_cuda_modelling_agrees_with_cpu(models_per_call):
    cfg = load_config(DataConfig, CONFIGS / "tiny.yaml")
    models = make_source(cfg).models(0, 4)
    modelling = cfg.modelling.model_copy(update={"models_per_call": models_per_call})
    cpu = simulate(models, cfg.survey, cfg.grid, modelling, device="cpu")
    cuda = simulate(models, cfg.survey, cfg.grid, modelling, device="cuda")
    assert cuda.device.type == "cuda"
    assert _rel_l2(cuda.cpu(), cpu) <= 1e-4


def test_a_bf16_training_step_on_cuda():
    device = torch.device("cuda")
    spec = model_spec(ModelSection(name="fcnvmb", base_channels=8, depth=3), [5, 64, 48], [32, 48])
    torch.manual_seed(0)
    model = build_model(spec).to(device)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    gathers, target = torch.randn(4, 5, 64, 48, device=device), torch.rand(4, 1, 32, 48, device=device)
    losses = [
        float(
            train_step(
                model,
                gathers,
                target,
                optimizer,
                grad_scaler("bf16", device),
                torch.nn.functional.mse_loss,
                "bf16",
                device,
            )
        )
        for _ in range(3)
    ]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_optimizer_state_check_on_cuda():
    """Adam keeps its step counters on the CPU beside moments on the GPU: the epoch-end check takes both."""
    device = torch.device("cuda")
    model = torch.nn.Linear(8, 2).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model(torch.randn(4, 8, device=device)).sum().backward()
    optimizer.step()
    assert any(t.device.type == "cpu" for st in optimizer.state.values() for t in st.values())
    assert int(optimizer_nonfinite_count(optimizer, device)) == 0
    next(iter(optimizer.state.values()))["exp_avg"].view(-1)[0] = float("nan")
    assert int(optimizer_nonfinite_count(optimizer, device)) == 1


def test_the_loader_delivers_normalised_batches_to_the_gpu(tiny_dataset):
    device = torch.device("cuda")
    norm = Normaliser.from_manifest(read_manifest(tiny_dataset), "openfwi", "minmax")
    ds = ShardedDataset(tiny_dataset)
    order = [3, 17, 8, 0, 22]
    reader = RawBatches(ds)
    on_cpu = list(DeviceFeed(norm, torch.device("cpu"))(reader[b] for b in batches_of(order, 2)))
    readers = BatchReaders(ds, 2, workers=1, pin=True)
    try:
        on_gpu = list(DeviceFeed(norm, device)(readers.epoch(order)))
        assert readers.pinned  # the reused slots are page-locked in place (after the fork): copies are async
    finally:
        readers.close()
    for (g, t), (gc, tc) in zip(on_gpu, on_cpu, strict=True):
        assert g.device.type == "cuda" and g.dtype == torch.float32
        torch.testing.assert_close(g.cpu(), gc, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(t.cpu(), tc, rtol=1e-5, atol=1e-6)
    cache = RawCache(ds, np.arange(len(ds)), device)
    assert cache.place == "device"  # a tiny dataset takes far less than data.cache_gpu_fraction
    before = torch.cuda.host_memory_stats().get("allocated_bytes.all.current", 0)
    pinned = RawCache(ds, np.arange(len(ds)), device, gpu_fraction=0.0)
    assert pinned.place == "pinned" and pinned.gathers.is_pinned()
    # locked in place, exactly its size: not through torch's pinned allocator, which rounds up to a power of 2
    assert torch.cuda.host_memory_stats().get("allocated_bytes.all.current", 0) == before
    for c in (cache, pinned):
        # the training thread's stream busy for ~0.5 s: the feed's gathers from a cache on the GPU run on its
        # own stream and must neither wait for that work nor be read before they are written
        torch.cuda._sleep(10**9)
        got = list(DeviceFeed(norm, device)(cache_batches(c, order, 2, pinned_ring=2)))
        for (g, t), (gc, tc) in zip(got, on_cpu, strict=True):
            torch.testing.assert_close(g.cpu(), gc, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(t.cpu(), tc, rtol=1e-5, atol=1e-6)
    in_process = BatchReaders(ds, 2, workers=0, pin=True)
    try:
        got = list(DeviceFeed(norm, device)(in_process.epoch(order)))
        assert in_process.pinned  # the one in-process slot is page-locked too
    finally:
        in_process.close()
    for (g, _), (gc, _) in zip(got, on_cpu, strict=True):
        torch.testing.assert_close(g.cpu(), gc, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["memory", "none"])
def test_hpcinv_train_on_one_gpu_end_to_end(tiny_dataset, tmp_path, cache):
    """The real CLI run on Ray Train with NCCL: bf16, the feed from the GPU cache or reader processes,
    the epoch-end checks and checkpoints, and a resume."""
    import json

    from tests.conftest import run_cli

    pytest.importorskip("ray.train", reason="needs Ray Train (a full install)")
    run = tmp_path / "run"
    args = [
        "train",
        str(CONFIGS / "tiny_train.yaml"),
        "--out",
        str(run),
        f"data.train={tiny_dataset}",
        f"data.val={tiny_dataset}",
        f"data.cache={cache}",
        "data.loader_workers=2",  # with data.cache=none: two reader processes, their slots page-locked
        "scaling.use_gpu=true",
        "scaling.num_workers=1",
        "train.precision=bf16",
        "tracking.mode=disabled",
    ]
    proc = run_cli(*args, "train.epochs=2", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(*args, "train.epochs=3", timeout=600)  # resumes from epoch 2's checkpoint
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["epochs_done"] == 3 and summary["checkpoint"], summary
    assert all(np.isfinite(v) for k, v in summary["metrics"].items() if k.startswith(("train/", "val/"))), summary


def test_a_failed_page_lock_is_a_clear_error_and_leaves_cuda_working():
    from hpcinv.errors import HpcinvError
    from hpcinv.feed.pinning import page_lock, unlock

    buffer = torch.empty(1 << 20, dtype=torch.uint8)
    locked = page_lock([buffer], "a test buffer", "advice")
    try:
        with pytest.raises(HpcinvError, match=r"page-locking a test buffer \(0\.00 GiB\) .* failed .*: advice"):
            page_lock([buffer], "a test buffer", "advice")  # registered twice: refused by CUDA
        assert torch.ones(2, device="cuda").add_(1).sum().item() == 4  # no stale error at the next kernel
    finally:
        unlock(locked)


def _ddp_rank(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1).cuda(), device_ids=[rank])
    loss = model(torch.full((4, 8), float(rank + 1), device="cuda")).sum()
    loss.backward()
    grads = model.module.weight.grad.clone()
    gathered = [torch.zeros_like(grads) for _ in range(world)]
    dist.all_gather(gathered, grads)
    assert all(torch.equal(g, gathered[0]) for g in gathered)  # DDP averaged the ranks' gradients
    assert torch.allclose(grads, torch.full_like(grads, 4 * (world + 1) / 2))
    dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_rank_nccl_ddp_smoke():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_rank, args=(2, port), nprocs=2, join=True)
