"""Networks, activation checkpointing and mixed precision, in process (no Ray)."""

import pytest
import torch
import torch.nn.functional as F

from hpcinv.nets import FCNVMB, InversionNet, ModelDomainUNet, count_parameters
from hpcinv.nets.fcnvmb import Up
from hpcinv.train.parallel import apply_checkpointing, autocast, checkpoint_targets, grad_scaler


def test_fcnvmb_paper_shape_and_parameter_count():
    model = FCNVMB()  # 29 shots, 201 x 301, 64..1024 filters
    assert count_parameters(model) == 31_058_497  # the official code's ~31.06 M
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 29, 400, 301)).shape == (1, 1, 201, 301)


def test_inversionnet_openfwi_shape_and_parameter_count():
    model = InversionNet()
    assert count_parameters(model) == 24_409_123  # OpenFWI's ~24.4 M
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 5, 1000, 70)).shape == (2, 1, 70, 70)


@pytest.mark.parametrize(
    ("encoder", "scale", "parameters"),
    [("columns", 1, 28_392_129), ("columns", 2, 13_000_417), ("resample", 1, 7_799_745), ("resample", 2, 7_828_833)],
)
def test_model_domain_unet_at_the_papers_size(encoder, scale, parameters):
    """29 shots x 400 samples x 301 receivers -> 201 x 301, the latent on the grid or every other cell."""
    model = ModelDomainUNet(29, (400, 301), (201, 301), 32, 4, encoder, scale).eval()
    assert count_parameters(model) == parameters
    assert model.latent_shape == ((201, 301) if scale == 1 else (101, 151))
    with torch.no_grad():
        assert model(torch.zeros(1, 29, 400, 301)).shape == (1, 1, 201, 301)


@pytest.mark.parametrize("encoder", ["columns", "resample"])
@pytest.mark.parametrize(
    ("shots", "shape_in", "shape_out"),
    [(5, (150, 77), (51, 77)), (7, (250, 96), (64, 96)), (5, (200, 64), (48, 64)), (3, (128, 70), (75, 101))],
)
def test_model_domain_unet_covers_bench_sized_and_odd_grids(encoder, shots, shape_in, shape_out):
    """bench 2 (5 x 150 x 77 -> 51 x 77), the quickstart, tiny, and receivers != columns."""
    for scale in (1, 2):
        model = ModelDomainUNet(shots, shape_in, shape_out, 4, 3, encoder, scale).eval()
        latent = model.latent(torch.randn(2, shots, *shape_in))
        assert latent.shape == (2, 4, *model.latent_shape)
        with torch.no_grad():
            assert model(torch.randn(2, shots, *shape_in)).shape == (2, 1, *shape_out)
    with pytest.raises(ValueError, match="encoder must be one of"):
        ModelDomainUNet(encoder="global")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latent_scale must be 1"):
        ModelDomainUNet(latent_scale=4)


def test_model_domain_unet_draws_a_cell_from_the_latent_around_it():
    """The U-Net works in one domain: an output cell depends most on the latent cells at its own place
    (within one cell: the weights are random) and not at all on those beyond its receptive field."""
    torch.manual_seed(0)
    model = ModelDomainUNet(3, (64, 45), (33, 45), 4, 2, "resample", 1, batchnorm=False).double().eval()
    latent = model.latent(torch.randn(1, 3, 64, 45, dtype=torch.double))
    z = latent.clone().requires_grad_(True)

    out = model.decode(z)
    (grad,) = torch.autograd.grad(out[0, 0, 20, 30], z)
    influence = grad.abs().sum(dim=1)[0]
    peak = divmod(int(influence.argmax()), influence.shape[1])
    assert abs(peak[0] - 20) <= 1 and abs(peak[1] - 30) <= 1
    assert float(influence[:4, :4].sum()) == 0.0  # beyond the receptive field of depth-2 3x3 convs


def test_pooled_and_standard_skips_differ_but_share_parameters():
    torch.manual_seed(0)
    pooled = FCNVMB(5, (48, 64), 8, 3, skip="pooled").eval()
    standard = FCNVMB(5, (48, 64), 8, 3, skip="standard").eval()
    standard.load_state_dict(pooled.state_dict())
    x = torch.randn(2, 5, 200, 64)
    with torch.no_grad():
        a, b = pooled(x), standard(x)
    assert a.shape == b.shape == (2, 1, 48, 64) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="skip must be"):
        FCNVMB(skip="dense")


@pytest.mark.parametrize(
    "shape_in, shape_out", [((200, 64), (48, 64)), ((128, 70), (201, 101)), ((250, 151), (101, 151))]
)
def test_small_configs_cover_any_output_grid(shape_in, shape_out):
    with torch.no_grad():
        assert FCNVMB(3, shape_out, 4, 2).eval()(torch.randn(1, 3, *shape_in)).shape == (1, 1, *shape_out)
        assert InversionNet(3, shape_in, shape_out, (4, 4, 8, 8, 16)).eval()(torch.randn(1, 3, *shape_in)).shape == (
            1,
            1,
            *shape_out,
        )


@pytest.mark.parametrize(
    ("skip_hw", "x_hw"), [((4, 6), (2, 3)), ((5, 7), (3, 4)), ((3, 4), (3, 4)), ((1, 1), (3, 4)), ((7, 9), (2, 3))]
)
def test_decoder_conv_equals_the_official_pad_and_concatenation(skip_hw, x_hw):
    """conv_concat never builds the padded skip or the concatenation; the result must not change:
    skips smaller than, equal to (no padding) and larger than (cropped) the upsampled features."""
    torch.manual_seed(0)
    up = Up(8, 4).double()
    skip = torch.randn(2, 4, *skip_hw, dtype=torch.double, requires_grad=True)
    x = torch.randn(2, 8, *x_hw, dtype=torch.double, requires_grad=True)
    ours = up(skip, x)
    xu = up.up(x)
    dz, dx = xu.shape[2] - skip.shape[2], xu.shape[3] - skip.shape[3]
    official = up.conv(torch.cat([F.pad(skip, [dx // 2, (dx + 1) // 2, dz // 2, (dz + 1) // 2]), xu], dim=1))
    torch.testing.assert_close(ours, official)
    g = torch.randn_like(ours)
    wrt = [skip, x, *up.parameters()]
    for a, b in zip(torch.autograd.grad(ours, wrt, g), torch.autograd.grad(official, wrt, g), strict=True):
        torch.testing.assert_close(a, b)


def _one_step_state(model, x, y):
    """Everything a checkpoint would hold after one training step: weights, gradients, running
    statistics and num_batches_tracked (names without the checkpoint wrapper's prefix)."""
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    F.mse_loss(model(x), y).backward()
    grads = {f"{k}.grad": p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    state = {**model.state_dict(), **grads}
    return {k.replace("_checkpoint_wrapped_module.", ""): v for k, v in state.items()}


@pytest.mark.parametrize("net", ["fcnvmb", "inversionnet", "model_domain_unet", "model_domain_unet_resample_half"])
@pytest.mark.parametrize("mode", ["blocks", "units", "nested"])
def test_activation_checkpointing_leaves_every_tensor_as_without_it(net, mode):
    """In float64, a checkpointed step ends with bit-identical weights, gradients and BatchNorm state
    (the recompute in backward must not update the running statistics a second time)."""
    torch.manual_seed(0)
    make = {
        "fcnvmb": lambda: FCNVMB(5, (48, 64), 8, 3),
        "inversionnet": lambda: InversionNet(5, (200, 64), (48, 64), (4, 8, 8, 16, 16)),
        "model_domain_unet": lambda: ModelDomainUNet(5, (200, 64), (48, 64), 4, 3, "columns", 1),
        "model_domain_unet_resample_half": lambda: ModelDomainUNet(5, (200, 64), (48, 64), 4, 3, "resample", 2),
    }[net]
    plain = make().double()
    wrapped = make().double()
    wrapped.load_state_dict(plain.state_dict())
    apply_checkpointing(wrapped, mode)
    assert len(checkpoint_targets(make(), mode)) > 0
    assert list(wrapped.state_dict()) == list(plain.state_dict())  # checkpoints stay interchangeable
    x, y = torch.randn(3, 5, 200, 64, dtype=torch.float64), torch.randn(3, 1, 48, 64, dtype=torch.float64)
    ref, got = _one_step_state(plain, x, y), _one_step_state(wrapped, x, y)
    assert set(ref) == set(got)
    assert any(k.endswith("num_batches_tracked") for k in ref) and any(k.endswith(".grad") for k in ref)
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_bf16_autocast_loss_is_close_to_fp32():
    torch.manual_seed(0)
    model = FCNVMB(5, (48, 64), 8, 3).eval()
    x, y = torch.randn(4, 5, 200, 64), torch.randn(4, 1, 48, 64)
    device = torch.device("cpu")
    with torch.no_grad():
        fp32 = F.mse_loss(model(x), y)
        with autocast("bf16", device):
            out = model(x)
        assert out.dtype == torch.bfloat16
        bf16 = F.mse_loss(out.float(), y)
    assert abs(float(bf16) - float(fp32)) / float(fp32) < 0.02


def test_fp16_uses_a_grad_scaler_and_trains():
    device = torch.device("cpu")
    assert grad_scaler("fp16", device).is_enabled() and not grad_scaler("bf16", device).is_enabled()
    torch.manual_seed(0)
    model = FCNVMB(5, (48, 64), 4, 2)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    scaler = grad_scaler("fp16", device)
    x, y = torch.randn(2, 5, 200, 64), torch.randn(2, 1, 48, 64)
    losses = []
    for _ in range(5):
        with autocast("fp16", device):
            out = model(x)
        loss = F.mse_loss(out.float(), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
