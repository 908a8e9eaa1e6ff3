"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (gloo): a short `lwzoo.pretrain` with every
collective recorded on its way to torch.distributed, for the test to check what each one was handed.

NCCL takes only tensors on the rank's GPU ("No backend type associated with device type cpu"), so every tensor
lwzoo hands to a collective must live on the context's device; and the stop check must not add a collective per step.
"""

import functools
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from lwzoo.distributed import from_environment
from lwzoo.pretrain import pretrain

out = Path(sys.argv[1])
records = []


def recorded(name, collective):
    @functools.wraps(collective)
    def call(*args, **kwargs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [t for a in args if isinstance(a, list) for t in a if isinstance(t, torch.Tensor)]
        records.append({"op": name, "devices": sorted({str(t.device) for t in tensors}), "kwargs": sorted(kwargs)})
        return collective(*args, **kwargs)

    return call


for name in ("all_reduce", "all_gather", "broadcast", "broadcast_object_list", "all_gather_object", "reduce"):
    setattr(dist, name, recorded(name, getattr(dist, name)))

context_device = str(from_environment(torch.device("cpu")).device)
sets = ["augment.image_size=16", "data.decode_size=16", "moco.queue_size=256", "moco.mlp_hidden=256"]
result = pretrain(
    "mobilenetv3_large",
    data="builtin:val",
    out=out / "run",
    device="cpu",
    batch_size=64,
    until_step=8,
    overrides=[*sets, "train.epochs=1", "optim.warmup_epochs=0.5", "train.log_every=4"],
)
rank = dist.get_rank() if dist.is_initialized() else int(__import__("os").environ["RANK"])
(out / f"collectives{rank}.json").write_text(
    json.dumps({"context_device": context_device, "steps": result.step, "records": records})
)
