"""Learning-rate schedule (a pure function of the optimizer step), warm-up, and gradient accumulation."""

import math

import pytest
import torch
import torch.nn.functional as F

from hpcinv.config import TrainConfig
from hpcinv.train.engine import forward_backward, lr_factor, make_optimizer, optimizer_step, resume_schedule
from hpcinv.train.parallel import grad_scaler


def _cfg(**train) -> TrainConfig:
    return TrainConfig.model_validate({"data": {"train": "runs/x"}, "train": {"epochs": 10, "lr": 0.01, **train}})


def test_cosine_and_step_follow_torch_per_epoch():
    cfg = _cfg(schedule="cosine")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for epoch in range(10):
        assert 0.01 * lr_factor(cfg.train, epoch * 7 + 3, 7) == pytest.approx(reference.get_last_lr()[0], rel=1e-12)
        opt.step()
        reference.step()
    step = _cfg(schedule="step", step_epochs=3, gamma=0.5).train
    assert [lr_factor(step, e * 4, 4) for e in (0, 2, 3, 6, 9)] == [1.0, 1.0, 0.5, 0.25, 0.125]


def test_warmup_ramps_linearly_over_its_steps_then_follows_the_schedule():
    train = _cfg(warmup_epochs=2).train
    factors = [lr_factor(train, s, 5) for s in range(12)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)]) and factors[10:] == [1.0, 1.0]
    cosine = _cfg(warmup_epochs=0.5, schedule="cosine").train
    assert lr_factor(cosine, 0, 4) == pytest.approx(0.5) and lr_factor(cosine, 8, 4) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 2 / 10))
    )


def test_a_resumed_schedule_continues_where_it_stopped():
    cfg = _cfg(schedule="cosine", warmup_epochs=1)
    params = [torch.zeros(1, requires_grad=True)]
    opt, sched = make_optimizer(cfg, params, world=1, steps_per_epoch=6)
    for _ in range(17):
        opt.step()
        sched.step()
    again, sched2 = make_optimizer(cfg, [torch.zeros(1, requires_grad=True)], world=1, steps_per_epoch=6)
    again.load_state_dict(opt.state_dict())
    resume_schedule(sched2, again, 17)
    assert again.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)


def test_accumulated_halves_equal_one_full_batch_step():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 5, 5, dtype=torch.float64), torch.randn(8, 2, 5, 5, dtype=torch.float64)
    models = [torch.nn.Conv2d(3, 2, 3, padding=1).double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    device, scaler = torch.device("cpu"), grad_scaler("fp32", torch.device("cpu"))
    whole, halves = (torch.optim.Adam(m.parameters(), 1e-2) for m in models)
    forward_backward(models[0], x, y, scaler, F.mse_loss, "fp32", device)
    optimizer_step(models[0], whole, scaler)
    for part in (slice(0, 4), slice(4, 8)):
        forward_backward(models[1], x[part], y[part], scaler, F.mse_loss, "fp32", device, weight=0.5)
    optimizer_step(models[1], halves, scaler)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert all(p.grad is None for p in models[1].parameters())  # cleared for the next group


def test_an_epoch_line_for_logs():
    from hpcinv.train.loop import epoch_line

    metrics = {
        "epoch": 2,
        "train/epoch_time_s": 40.0,
        "train/epoch_samples": 2400,
        "train/epoch_loss": 0.01234,
        "val/mae": 140.26,
        "val/ssim": 0.7812,
    }
    line = epoch_line(metrics, epochs=10, elapsed_s=120.0, epochs_run=3)
    assert line == (
        "epoch 3/10: 2400 samples in 40.0 s (60.0 samples/s), loss 0.01234, val MAE 140.3 m/s, "
        "SSIM 0.781; ETA 4 min 40 s"
    )
