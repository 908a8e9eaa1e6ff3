"""Split BatchNorm: BatchNorm over G equal groups of a batch, each with its own statistics, in one call.

MoCo's shuffle-BN (He et al. 2020, arXiv 1911.05722, section 3.3) gives each GPU's keys the BatchNorm
statistics of that GPU's random shard. On one device lwzoo emulates it by normalising G groups of the
shuffled key batch separately. Running the key encoder once per group costs G times the kernel launches;
a :class:`SplitBatchNorm2d` normalises all G groups in one call instead. For x (N, C, H, W) whose
group g holds samples g*N/G .. (g+1)*N/G - 1, with M = N/G * H * W values per group and channel:

    mu_gc  = 1/M sum x[group g, channel c]                      (G, C)
    var_gc = 1/M sum (x[group g, channel c] - mu_gc)^2          (G, C), biased, as BatchNorm normalises
    y      = (x - mu_gc) / sqrt(var_gc + eps) * weight_c + bias_c

which is BatchNorm applied to each group on its own (the chunked forward). The running statistics take
one BatchNorm update per forward from the groups' average, as in MoCo's CIFAR-10 demo (which updates G
copies and averages them, the same thing):

    running_mean <- (1 - m) running_mean + m * 1/G sum_g mu_gc
    running_var  <- (1 - m) running_var  + m * 1/G sum_g var_gc * M/(M-1)

with m the layer's momentum (BatchNorm's cumulative average when it is None); ``num_batches_tracked``
grows by one. So they equal the mean of G chunked forwards' running statistics, each started from the
same values; G chunked forwards in a row would instead apply G updates in group order.

MoCo's demo gets the per-group statistics by viewing the batch as (N/G, G*C, H, W); for channels_last
memory that view does not exist without copying the activations twice per layer, so the batch is
viewed as (G, N/G, C, H, W) instead, free in both layouts, and reduced directly. In eval mode, or with
G = 1, the layer is exactly the BatchNorm it replaced.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d


class SplitBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d (or timm ``BatchNormAct2d``, its drop and activation kept) that normalises
    ``groups`` equal groups of the batch separately in train mode (formulas in the module docstring).

    It adopts the replaced layer's parameters, buffers and activation under the same names, so a state
    dict written with the plain layers loads into it and back. Built by :func:`split_batchnorm`. (Not
    timm's ``SplitBatchNorm2d``, which keeps a separate BatchNorm per split for AugMix.)
    """

    def __init__(self, bn: nn.BatchNorm2d, groups: int) -> None:
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta")
        self.weight, self.bias = bn.weight, bn.bias
        self.running_mean, self.running_var = bn.running_mean, bn.running_var
        self.num_batches_tracked = bn.num_batches_tracked
        # BatchNormAct2d applies drop then act after the norm; a plain BatchNorm2d applies neither
        self.drop: nn.Module = getattr(bn, "drop", nn.Identity())
        self.act: nn.Module = getattr(bn, "act", nn.Identity())
        self.groups = groups
        self.train(bn.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.groups == 1:
            return self.act(self.drop(super().forward(x)))
        return self.act(self.drop(self._split_norm(x)))

    def _split_norm(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        if n % g:
            raise ValueError(f"a batch of {n} does not split into {g} equal BatchNorm groups")
        count = n // g * h * w  # M, values per group and channel
        if count == 1:
            raise ValueError(f"expected more than 1 value per channel and BatchNorm group, got input {tuple(x.shape)}")
        xg = x.view(g, n // g, c, h, w)  # a view for NCHW and channels_last alike
        # Two passes in fp32 at least: autocast's bf16 would round the mean before it is subtracted, and
        # torch.var_mean is ~10x slower than this on the CPU.
        mean = xg.mean((1, 3, 4), keepdim=True, dtype=torch.promote_types(x.dtype, torch.float32))  # G x 1 x C x 1 x 1
        var = (xg - mean).square_().mean((1, 3, 4), keepdim=True)  # G x 1 x C x 1 x 1, biased
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight[:, None, None]
        shift = -mean * scale if self.bias is None else torch.addcmul(self.bias[:, None, None], mean, scale, value=-1)
        if self.track_running_stats:
            self._track(mean.mean(0).view(c), var.mean(0).view(c) * (count / (count - 1)))
        return torch.addcmul(shift, xg, scale).to(x.dtype).view(n, c, h, w)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """One running-statistics update from the groups' average (C,) mean and unbiased variance."""
        self.num_batches_tracked.add_(1)
        rate = self.momentum
        if rate is None:  # BatchNorm's cumulative mean over every batch seen
            rate = 1 / self.num_batches_tracked.to(self.running_mean.dtype)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), rate)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), rate)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}"


def split_batchnorm(module: nn.Module, groups: int) -> nn.Module:
    """Swap every BatchNorm2d in ``module`` (in place) for a :class:`SplitBatchNorm2d` of ``groups``
    groups holding the same tensors, or set the group count of layers already swapped; returns ``module``.

    ``nn.BatchNorm2d`` and timm's ``BatchNormAct2d`` are supported; any other BatchNorm kind raises
    ValueError rather than silently losing what its forward adds.
    """
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    for name, child in module.named_children():
        if isinstance(child, SplitBatchNorm2d):
            child.groups = groups
        elif type(child) in (nn.BatchNorm2d, BatchNormAct2d):
            setattr(module, name, SplitBatchNorm2d(child, groups))
        elif isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)):
            raise ValueError(f"split BatchNorm takes BatchNorm2d and timm BatchNormAct2d, not {type(child).__name__}")
        else:
            split_batchnorm(child, groups)
    return module
