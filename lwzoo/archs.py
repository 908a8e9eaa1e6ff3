"""The architectures lwzoo pretrains: one registry mapping lwzoo's short names to timm models."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import timm
import torch.nn as nn

from .errors import LwzooError


@dataclass(frozen=True)
class Arch:
    """A backbone lwzoo knows how to pretrain.

    Attributes:
        name: lwzoo's short name, used on the command line and in zoo entries.
        timm_name: the ``timm.create_model`` name of the backbone.
        recipe: the recipe ``lwzoo pretrain`` uses when given real data and no ``--recipe``.
        feature_dim: width of the pooled pre-logits features (``num_classes=0`` output).
    """

    name: str
    timm_name: str
    recipe: str
    feature_dim: int


ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("mobilenetv3_large", "mobilenetv3_large_100", "mobilenetv3_large", 1280),
        Arch("effnet_b0", "efficientnet_b0", "effnet_b0", 1280),
        # The two ResNets are here to compare against the large-model recipe they were tuned for.
        Arch("resnet18", "resnet18", "mocov2_resnet50", 512),
        Arch("resnet50", "resnet50", "mocov2_resnet50", 2048),
    )
}


def list_archs() -> list[str]:
    """lwzoo's architecture names, in registry order."""
    return list(ARCHS)


def get_arch(name: str) -> Arch:
    """Look up an architecture by lwzoo name or by its timm name."""
    if name in ARCHS:
        return ARCHS[name]
    for arch in ARCHS.values():
        if arch.timm_name == name:
            return arch
    close = difflib.get_close_matches(name, [*ARCHS, *(a.timm_name for a in ARCHS.values())], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LwzooError(f"unknown architecture '{name}'.{hint} Known: {', '.join(ARCHS)}")


def create_backbone(arch: Arch | str, zero_init_residual: bool = False) -> nn.Module:
    """A randomly initialised timm backbone whose forward returns pooled pre-logits features (N, D).

    ``zero_init_residual`` zeroes the last BatchNorm scale of every residual block, so each block
    starts as the identity (Goyal et al. 2017, "Accurate, Large Minibatch SGD"). timm already does
    this for ResNets; MobileNet-V3 and EfficientNet start without it and then learn very slowly
    under MoCo (see recipes/demo.yaml).
    """
    arch = get_arch(arch) if isinstance(arch, str) else arch
    model = timm.create_model(arch.timm_name, pretrained=False, num_classes=0)
    if zero_init_residual:
        zero_init_residual_blocks(model)
    return model


def zero_init_residual_blocks(model: nn.Module) -> int:
    """Zero the last norm scale of each residual block of a timm model; returns how many blocks."""
    count = 0
    for block in model.modules():
        if callable(getattr(block, "zero_init_last", None)):  # timm ResNet blocks
            block.zero_init_last()
            count += 1
        elif getattr(block, "has_skip", False):  # timm EfficientNet / MobileNet blocks
            norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
            if norms:
                nn.init.zeros_(norms[-1].weight)
                count += 1
    return count
