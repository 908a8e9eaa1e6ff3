"""The architecture registry (lwzoo/archs.py), parametrised over ``ARCHS``."""

import pytest
import torch

from lwzoo.archs import ARCHS, create_backbone, get_arch, list_archs
from lwzoo.errors import LwzooError


@pytest.mark.parametrize("name", list(ARCHS))
def test_registered_arch_feature_dim_matches_timm(name):
    backbone = create_backbone(name).eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 32, 32)).shape == (1, ARCHS[name].feature_dim)


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_arch_resolves_by_its_name_and_its_timm_name(name):
    arch = ARCHS[name]
    assert arch.name == name and get_arch(name) is arch and get_arch(arch.timm_name) is arch


def test_list_archs_is_the_registry_in_order():
    assert list_archs() == list(ARCHS) and {"mobilenetv3_large", "effnet_b0"} <= set(list_archs())


def test_an_unknown_arch_is_an_error_that_suggests_close_names():
    with pytest.raises(LwzooError, match=r"unknown architecture 'effnet_b1'.*'effnet_b0'.*Known: mobilenetv3_large"):
        get_arch("effnet_b1")


def residual_blocks(net: torch.nn.Module) -> list[torch.nn.Module]:
    """Blocks whose output is their input plus a branch: timm's EfficientNet/MobileNet blocks with a skip, and
    ResNet blocks without a downsampling shortcut."""
    return [
        b
        for b in net.modules()
        if getattr(b, "has_skip", False) or (callable(getattr(b, "zero_init_last", None)) and b.downsample is None)
    ]


@pytest.mark.parametrize("name", list(ARCHS))
def test_zero_init_residual_starts_every_residual_block_as_the_identity(name):
    """With the branch's last BatchNorm scale at 0 (and its bias at timm's 0), each residual block returns its
    input in eval mode: exactly what the zero-init is for. (A ResNet block's final ReLU keeps its input, which
    a previous ReLU made non-negative.)"""
    torch.manual_seed(0)
    net = create_backbone(name, zero_init_residual=True).eval()
    blocks = residual_blocks(net)
    seen = []
    handles = [b.register_forward_hook(lambda block, args, out: seen.append((args[0], out))) for b in blocks]
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert len(seen) == len(blocks) >= 5
    for x, y in seen:
        assert torch.equal(y, x)


def test_without_zero_init_mobilenet_blocks_are_not_the_identity():
    """timm starts MobileNet-V3's residual blocks with a live branch (lwzoo's zero-init is what changes that)."""
    torch.manual_seed(0)
    net = create_backbone("mobilenetv3_large").eval()
    seen = []
    for b in residual_blocks(net):
        b.register_forward_hook(lambda block, args, out: seen.append(torch.equal(out, args[0])))
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    assert seen and not any(seen)
