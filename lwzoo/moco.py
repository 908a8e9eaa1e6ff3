"""MoCo v2 (He et al. 2020, arXiv 1911.05722; Chen et al. 2020, arXiv 2003.04297) for any timm backbone:
a query encoder (backbone + MLP projector), its momentum copy as the key encoder, and a queue of keys.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributed import SINGLE, DistContext
from .split_bn import split_batchnorm


class Projector(nn.Sequential):
    """MoCo v2's projection head, ``Linear(in, hidden) -> ReLU -> Linear(hidden, out)``, no BatchNorm."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class KeyQueue(nn.Module):
    """A FIFO of K L2-normalised keys, the negatives of InfoNCE.

    ``push`` overwrites the oldest entries and wraps around, so K need not be a multiple of the
    batch size. It starts filled with random unit vectors, as in MoCo.
    """

    keys: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # K x D
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, new_keys: torch.Tensor) -> None:
        """Enqueue (B, D) keys in order, dropping the B oldest."""
        size = len(self.keys)
        new_keys = new_keys[-size:]  # a batch larger than the queue keeps only its newest keys
        idx = (self.ptr + torch.arange(len(new_keys), device=self.keys.device)) % size
        self.keys[idx] = new_keys.to(self.keys.dtype)
        self.ptr.copy_((self.ptr + len(new_keys)) % size)


class QueryEncoder(nn.Module):
    """``backbone -> projector -> L2-normalise`` for one or more views in a single forward, so that
    DistributedDataParallel sees exactly one forward per step even with the symmetric loss.

    It holds MoCo's own backbone and projector (it is not part of MoCo's state dict).
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, *views: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(F.normalize(self.projector(self.backbone(v)).float(), dim=1) for v in views)  # each N x dim


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float | torch.Tensor) -> None:
    """EMA of parameters, ``target = m * target + (1 - m) * online``. Buffers (BN statistics) are
    not averaged: the key encoder keeps its own, as in MoCo. ``m`` may be a 0-d tensor (the compiled step)."""
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_lerp_(t_params, o_params, 1.0 - m)


class MoCo(nn.Module):
    """Query encoder ``backbone -> projector``, momentum key encoder, and the key queue.

    The key encoder is a copy of the query encoder whose BatchNorm layers are
    :class:`~lwzoo.split_bn.SplitBatchNorm2d` (same parameter and buffer names, so the state dict
    and :func:`update_momentum` see the plain layout).

    Args:
        backbone: a timm model built with ``num_classes=0`` (forward gives pooled features).
        feature_dim: the backbone's feature width.
        dim: embedding width.
        mlp_hidden: projector hidden width.
        queue_size: K.
        key_bn_splits: groups the key encoder's BatchNorm normalises separately (see :meth:`keys`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        dim: int = 128,
        mlp_hidden: int = 2048,
        queue_size: int = 65536,
        key_bn_splits: int = 1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = Projector(feature_dim, mlp_hidden, dim)
        self.key_encoder = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(self.projector))
        self.key_encoder.requires_grad_(False)
        self.queue = KeyQueue(queue_size, dim)
        self.key_bn_splits = key_bn_splits
        self._key_bn_groups = key_bn_splits
        split_batchnorm(self.key_encoder, key_bn_splits)

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Start from given backbone weights (timm key names, strictly): the query backbone and its copy in the
        key encoder alike, as if the key encoder had been copied from a query backbone built with them. The
        projectors and the queue keep their fresh initialisation."""
        self.backbone.load_state_dict(state)
        self.key_encoder[0].load_state_dict(state)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised query embeddings, (N, 3, H, W) -> (N, dim)."""
        return F.normalize(self.projector(self.backbone(x)).float(), dim=1)

    @torch.no_grad()
    def keys(
        self, x: torch.Tensor, generator: torch.Generator | None = None, ctx: DistContext = SINGLE
    ) -> torch.Tensor:
        """L2-normalised key embeddings, (N, 3, H, W) -> (N, dim), without gradient.

        Single-device stand-in for MoCo's shuffle-BN. With one BatchNorm batch for both encoders,
        a query and its key are normalised with the same batch statistics, which leaks a signature
        the model can match instead of learning content (MoCo section 3.3). MoCo shuffles keys
        across GPUs so each GPU's BN sees a different subset. Here the key batch is shuffled and
        its BatchNorm statistics are taken over ``key_bn_splits`` groups of consecutive shuffled
        keys, so each key's statistics come from a random subset unlike the query's full batch. The
        split BatchNorm layers do it in one forward; a batch that does not split into equal groups (a
        batch size ``key_bn_splits`` does not divide, or a short batch after unreadable images) runs as
        ``x.chunk(key_bn_splits)``, one forward per chunk, as before split BatchNorm.

        Under DDP it is MoCo's real shuffle-BN: the keys' inputs are gathered from every rank,
        permuted with a permutation every rank draws alike (``generator`` must be seeded the same on
        all ranks), sharded back, encoded (``key_bn_splits / world_size`` groups per rank) and
        gathered again to undo the permutation.
        """
        return self.shuffled_keys(x, self.key_shuffle(len(x), generator, ctx), ctx)

    def key_shuffle(self, n: int, generator: torch.Generator | None = None, ctx: DistContext = SINGLE) -> torch.Tensor:
        """The permutation :meth:`keys` draws for n keys per rank: (world_size * n,), the same on every
        rank when ``generator`` is seeded alike. Drawn apart from :meth:`shuffled_keys` so a compiled
        step can take it as an input."""
        return torch.randperm(n * ctx.world_size, device=self.queue.keys.device, generator=generator)

    @torch.no_grad()
    def shuffled_keys(self, x: torch.Tensor, perm: torch.Tensor, ctx: DistContext = SINGLE) -> torch.Tensor:
        """:meth:`keys` with its permutation ``perm`` (from :meth:`key_shuffle`) given."""
        if ctx.enabled:
            return self._keys_shuffled_across_ranks(x, perm, ctx)
        k = self._encode_keys(x[perm], self.key_bn_splits)  # N x dim, shuffled
        k = k[torch.argsort(perm)]
        return F.normalize(k.float(), dim=1)

    def _keys_shuffled_across_ranks(self, x: torch.Tensor, perm: torch.Tensor, ctx: DistContext) -> torch.Tensor:
        n = len(x)
        x_all = ctx.gather(x)  # W*N x 3 x H x W, rank order
        mine = x_all[perm.view(ctx.world_size, n)[ctx.rank]]  # this rank's shuffled shard, N x 3 x H x W
        groups = max(1, self.key_bn_splits // ctx.world_size)
        k_all = ctx.gather(self._encode_keys(mine, groups))  # W*N x dim, perm order
        k = k_all[torch.argsort(perm)].view(ctx.world_size, n, -1)[ctx.rank]  # unshuffled, this rank's N
        return F.normalize(k.float(), dim=1)

    def _encode_keys(self, x: torch.Tensor, groups: int) -> torch.Tensor:
        """The key encoder on x (N, 3, H, W) with BatchNorm statistics per group of N/groups consecutive
        samples; (N, dim)."""
        if len(x) % groups:  # uneven groups: as many forwards, as before split BatchNorm
            self._set_key_bn_groups(1)
            return torch.cat([self.key_encoder(c) for c in x.chunk(groups)])
        self._set_key_bn_groups(groups)
        return self.key_encoder(x)

    def _set_key_bn_groups(self, groups: int) -> None:
        if groups != self._key_bn_groups:
            split_batchnorm(self.key_encoder, groups)
            self._key_bn_groups = groups

    def update_key_encoder(self, m: float | torch.Tensor) -> None:

        update_momentum(nn.Sequential(self.backbone, self.projector), self.key_encoder, m)
