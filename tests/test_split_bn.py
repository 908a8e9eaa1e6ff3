"""Split BatchNorm (lwzoo/split_bn.py): G groups of a batch normalised separately in one call."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from lwzoo.archs import create_backbone
from lwzoo.split_bn import SplitBatchNorm2d, split_batchnorm


def perturbed_float64(arch: str) -> nn.Module:
    """A float64 channels_last backbone with every parameter and BN statistic moved off its init, so no
    gamma is 0 and no running statistic is trivially 0 or 1."""
    torch.manual_seed(0)
    net = create_backbone(arch, zero_init_residual=True).double().to(memory_format=torch.channels_last)
    with torch.no_grad():
        for t in [*net.parameters(), *(b for n, b in net.named_buffers() if "running" in n)]:
            t.add_(0.2 * torch.rand_like(t))
    return net


@pytest.mark.parametrize("arch", ["mobilenetv3_large", "effnet_b0", "resnet18"])
def test_split_batchnorm_equals_the_chunked_forward_in_float64(arch):
    """One forward with 4 BN groups = BN run on each of the 4 chunks (the outputs), and its running
    statistics = the mean of 4 chunked forwards' (each from the same start). float64 keeps rounding
    near 1e-13 over ~50 layers, so 1e-9 fails any real difference (a wrong group is off by ~0.1)."""
    reference = perturbed_float64(arch).train()
    split = split_batchnorm(copy.deepcopy(reference), groups=4).train()
    assert sum(isinstance(m, SplitBatchNorm2d) for m in split.modules()) >= 20
    x = torch.randn(16, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    chunk_nets = [copy.deepcopy(reference) for _ in range(4)]
    with torch.no_grad():
        expected = torch.cat([net(c) for net, c in zip(chunk_nets, x.chunk(4), strict=True)])
        out = split(x)
        whole = copy.deepcopy(reference)(x)
    assert torch.allclose(out, expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(out, whole, atol=1e-3)
    stats = split.state_dict()
    for key in stats:
        if "running" in key:
            mean_of_chunks = torch.stack([net.state_dict()[key] for net in chunk_nets]).mean(0)
            assert torch.allclose(stats[key], mean_of_chunks, rtol=1e-9, atol=1e-12), key
        elif "num_batches_tracked" in key:
            assert stats[key] == reference.state_dict()[key] + 1, key
    plain = chunk_nets[0]
    plain.load_state_dict(stats)
    with torch.no_grad():  # eval mode: the layer is exactly the one it replaced
        assert torch.equal(split.eval()(x), plain.eval()(x))


def reference_split_norm(x: np.ndarray, groups: int, weight: np.ndarray, bias: np.ndarray, eps: float):
    """The module docstring's formulas in float64 numpy: the output, and each group's mean and biased variance."""
    n, c, h, w = x.shape
    xg = x.reshape(groups, n // groups, c, h, w)
    mu = xg.mean(axis=(1, 3, 4))  # G x C
    var = ((xg - mu[:, None, :, None, None]) ** 2).mean(axis=(1, 3, 4))  # G x C, biased
    y = (xg - mu[:, None, :, None, None]) / np.sqrt(var + eps)[:, None, :, None, None]
    return (y * weight[None, None, :, None, None] + bias[None, None, :, None, None]).reshape(n, c, h, w), mu, var


def test_split_norm_and_its_running_statistics_follow_the_docstring_formulas_in_float64():
    """Output, and running statistics under BatchNorm's cumulative average (momentum None): after the first
    forward they are the groups' mean statistics (variance unbiased by M/(M-1)), after the second the mean of
    both forwards'."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=None).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1.0, 1.0)
    layer = SplitBatchNorm2d(bn, groups=2).train()
    weight, bias = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    m = 3 * 5 * 5  # values per group and channel: 6 samples / 2 groups, 5 x 5 pixels
    batches = [torch.randn(6, 3, 5, 5, dtype=torch.float64) * 2 + 1 for _ in range(2)]
    means, variances = [], []
    for x in batches:
        with torch.no_grad():
            y = layer(x)
        want, mu, var = reference_split_norm(x.numpy(), 2, weight, bias, bn.eps)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)
        means.append(mu.mean(0))
        variances.append(var.mean(0) * m / (m - 1))
        np.testing.assert_allclose(layer.running_mean.numpy(), np.mean(means, axis=0), rtol=1e-12)
        np.testing.assert_allclose(layer.running_var.numpy(), np.mean(variances, axis=0), rtol=1e-12)
    assert int(layer.num_batches_tracked) == 2


def test_one_group_is_exactly_the_batchnorm_it_replaced():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4).train()
    x = torch.randn(8, 4, 3, 3)
    plain = copy.deepcopy(bn)
    layer = split_batchnorm(nn.Sequential(bn), groups=1)[0]
    assert isinstance(layer, SplitBatchNorm2d)
    with torch.no_grad():
        assert torch.equal(layer(x), plain(x))
    assert torch.equal(layer.running_mean, plain.running_mean) and torch.equal(layer.running_var, plain.running_var)


def test_split_batchnorm_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="BatchNorm1d"):
        split_batchnorm(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), groups=2)
    layer = split_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), groups=4).train()
    with pytest.raises(ValueError, match="does not split into 4"):
        layer(torch.randn(6, 3, 4, 4))
