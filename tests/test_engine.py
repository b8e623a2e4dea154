"""The Trainer without Ray: a gloo process group of one rank, DDP-wrapped, trained, saved and restored.

A rank restored from ``state_dict()`` must continue exactly as the rank that saved it: same weights,
optimiser moments, learning rate and counters after the same batches.
"""

import io
import os
import socket

import pytest
import torch
import torch.distributed as dist

from hpcinv.config import TrainConfig
from hpcinv.errors import HpcinvError
from hpcinv.nets import model_spec
from hpcinv.train.engine import Trainer

GATHERS, VELOCITY = (3, 40, 24), (16, 24)


@pytest.fixture
def gloo_world_of_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _cfg(**train) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"name": "fcnvmb", "base_channels": 4, "depth": 2},
            "data": {"train": "runs/x"},
            "train": {"epochs": 4, "lr": 0.01, "schedule": "cosine", "accumulate_steps": 2, **train},
        }
    )


def _batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn((2, *GATHERS), generator=g), torch.rand((2, 1, *VELOCITY), generator=g)) for _ in range(n)]


def _epoch(trainer: Trainer, batches) -> list[float]:
    trainer.model.train()
    losses = [float(trainer.train_batch(g, v, 1.0, b)) for b, (g, v) in enumerate(batches)]
    trainer.epoch += 1
    return losses


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_restored_trainer_continues_exactly(gloo_world_of_one):
    cfg, spec = _cfg(), model_spec(_cfg().model, GATHERS, VELOCITY)
    first = Trainer(cfg, spec, torch.device("cpu"), world=1, batches_per_epoch=3)
    first.distribute()
    assert isinstance(first.model, torch.nn.parallel.DistributedDataParallel)
    before = {k: v.clone() for k, v in first.net.state_dict().items()}
    _epoch(first, _batches(3, seed=0))
    assert first.step == 3 and first.epoch == 1 and not _same(before, first.net.state_dict())
    buffer = io.BytesIO()  # through bytes, as a checkpoint on disk: no tensor shared with the live rank
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    assert saved["epoch"] == 0 and saved["step"] == 3

    second = Trainer(cfg, spec, torch.device("cpu"), world=1, batches_per_epoch=3)
    second.load_state_dict(saved)
    second.distribute()
    assert (second.epoch, second.step) == (1, 3)
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(first.optimizer.param_groups[0]["lr"])

    more = _batches(3, seed=1)
    torch.manual_seed(7)
    losses_first = _epoch(first, more)
    torch.manual_seed(7)
    losses_second = _epoch(second, more)
    assert losses_first == losses_second
    assert _same(first.net.state_dict(), second.net.state_dict())
    assert first.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]
    # 3 batches, accumulated by 2: two optimizer steps per epoch, so the cosine schedule sits at epoch 2
    assert first.scheduler.last_epoch == 4
    assert int(first.nonfinite) == 0


def test_weights_only_for_fine_tuning_and_a_mismatch_is_one_error(gloo_world_of_one):
    cfg, spec = _cfg(), model_spec(_cfg().model, GATHERS, VELOCITY)
    source = Trainer(cfg, spec, torch.device("cpu"), world=1, batches_per_epoch=2)
    _epoch(source, _batches(2, seed=0))
    tuned = Trainer(cfg, spec, torch.device("cpu"), world=1, batches_per_epoch=2)
    tuned.load_weights(source.state_dict(), "the source run")
    assert _same(tuned.net.state_dict(), source.net.state_dict()) and (tuned.epoch, tuned.step) == (0, 0)
    other = model_spec(
        TrainConfig.model_validate({"model": {"base_channels": 8, "depth": 2}, "data": {"train": "x"}}).model,
        GATHERS,
        VELOCITY,
    )
    wider = Trainer(_cfg(), other, torch.device("cpu"), world=1, batches_per_epoch=2)
    with pytest.raises(HpcinvError, match="checkpoint the source run does not fit this network"):
        wider.load_weights(source.state_dict(), "the source run")
