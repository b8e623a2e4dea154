"""Networks (pure torch, no distributed code): the FCNVMB U-Net, InversionNet and the model-domain U-Net."""

from __future__ import annotations

from typing import TypeAlias

from hpcinv.config import ModelSection
from hpcinv.nets.fcnvmb import FCNVMB
from hpcinv.nets.inversionnet import InversionNet, count_parameters
from hpcinv.nets.model_domain_unet import ModelDomainUNet

__all__ = ["FCNVMB", "InversionNet", "ModelDomainUNet", "Net", "build_model", "count_parameters", "model_spec"]

Net: TypeAlias = FCNVMB | InversionNet | ModelDomainUNet  # each defines encoder_modules, checkpoint_blocks


def model_spec(cfg: ModelSection, gathers_shape: list[int] | tuple[int, ...], velocity_shape) -> dict:
    """Everything needed to rebuild a network (stored in checkpoints)."""
    return {
        "config": cfg.model_dump(mode="json"),
        "gathers_shape": list(gathers_shape),
        "velocity_shape": list(velocity_shape),
    }


def build_model(spec: dict) -> Net:
    cfg = ModelSection.model_validate(spec["config"])
    shots, nt, nrec = spec["gathers_shape"]
    out = tuple(spec["velocity_shape"])
    if cfg.name == "fcnvmb":
        return FCNVMB(shots, out, cfg.base_channels, cfg.depth, cfg.skip, cfg.batchnorm)
    if cfg.name == "model_domain_unet":
        return ModelDomainUNet(
            shots, (nt, nrec), out, cfg.base_channels, cfg.depth, cfg.encoder, cfg.latent_scale, cfg.batchnorm
        )
    return InversionNet(shots, (nt, nrec), out, tuple(cfg.dims))
