"""The distributed context, passed in explicitly: rank, world size, and a gather.

``lwzoo pretrain`` under ``torchrun`` (or ``--nproc N``) reads torchrun's environment variables and
runs DistributedDataParallel; in a single process the same code runs with :data:`SINGLE` and every
collective is the identity. No module calls ``torch.distributed`` or ``.cuda()`` on its own.
"""

from __future__ import annotations

import datetime
import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from . import env


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes.
        local_rank: rank on this node (picks the GPU).
        device: where this rank computes; every tensor handed to a collective lives there (NCCL
            refuses CPU tensors with "No backend type associated with device type cpu").
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @torch.no_grad()
    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate ``t`` (B, ...) from every rank in rank order: (world_size * B, ...). Same B everywhere."""
        if not self.enabled:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar tensor over ranks (for logging)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (a stop request, say)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]


SINGLE = DistContext()


def from_environment(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE > 1), or a single process on ``device``.

    On CUDA each rank takes GPU ``LOCAL_RANK`` and the group is NCCL for CUDA tensors with gloo beside it for
    CPU ones, so a CPU tensor that slips into a collective still has a backend; on the CPU it is gloo. The
    timeout keeps a dead peer from hanging the job forever.
    """
    launched = env.torchrun()
    if launched is None or launched[0] <= 1:
        return DistContext(device=device)
    local_rank = launched[2]
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        # long enough for rank 0's kNN monitor or checkpoint while the others wait in a collective
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def teardown(ctx: DistContext, release: Callable[[], None] | None = None) -> None:
    """Leave the process group cleanly.

    gloo can deadlock in ProcessGroupGloo's destructor when the DDP model or the optimizer still hold
    its work objects; a barrier, then ``release`` (dropping them), then a garbage collection avoid it.
    """
    if not ctx.enabled or not dist.is_initialized():
        return
    dist.barrier()
    if release is not None:
        release()
    gc.collect()
    dist.destroy_process_group()
