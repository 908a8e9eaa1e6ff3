"""The peer side of ``peer_lightly.py``: MoCo v2 built with lightly, as lightly's MoCo example builds it.

It runs in its own virtual environment (``peer_lightly.py`` makes it), never imports lwzoo, and prints one JSON
line: the seconds of each training step and the versions it ran with.

What lightly's docs show for MoCo (docs.lightly.ai, examples/moco): a backbone and a ``MoCoProjectionHead``,
deep copies of both as the momentum encoder (``deactivate_requires_grad``), ``update_momentum`` on both before
each step, ``NTXentLoss(memory_bank_size=...)`` as the queue of negatives, ``MoCoV2Transform`` on a torchvision
dataset read by a ``DataLoader`` with workers, and SGD. Here the backbone is timm's ``mobilenetv3_large_100``
(``num_classes=0``: pooled features) and the head is 1280 -> 2048 -> 128, as lwzoo trains it. The symmetric
loss, which lightly's example does not show, is the mean of both directions' losses, each view once a query.
``--channels-last``: the model's weights and each batch in channels-last memory (the one change a user might
make); without it the step is lightly's as shipped (NCHW).

One step, the thing timed: the next batch from the loader (the workers' decoding and augmentation overlap
the step, on the same cores), the momentum update, the forwards, the loss, the backward and SGD's step.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from importlib.metadata import version

import timm
import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.moco_transform import MoCoV2Transform
from torch import nn
from torch.utils.data import DataLoader


class LightlyMoCo(nn.Module):
    """Query encoder (backbone + projection head) and its momentum copy, as lightly's MoCo example has them."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(feature_dim, hidden_dim, out_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))  # N x out_dim

    @torch.no_grad()
    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()  # N x out_dim

    def momentum_update(self, m: float) -> None:
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)


def loader(a: argparse.Namespace) -> DataLoader:
    """Two MoCo v2 views of each image of the folder, per batch, from ``a.workers`` worker processes."""
    dataset = torchvision.datasets.ImageFolder(a.data, transform=MoCoV2Transform(input_size=a.size))
    return DataLoader(
        dataset, batch_size=a.batch, shuffle=True, drop_last=True, num_workers=a.workers, persistent_workers=True
    )


def batches(data: DataLoader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from data


def step(model: LightlyMoCo, criterion: NTXentLoss, sgd: torch.optim.Optimizer, views, a: argparse.Namespace):
    """One MoCo step on a batch's two views."""
    x0, x1 = views
    if a.channels_last:
        x0, x1 = x0.contiguous(memory_format=torch.channels_last), x1.contiguous(memory_format=torch.channels_last)
    model.momentum_update(a.key_momentum)
    if a.symmetric:
        loss = 0.5 * (
            criterion(model(x0), model.forward_momentum(x1)) + criterion(model(x1), model.forward_momentum(x0))
        )
    else:
        loss = criterion(model(x0), model.forward_momentum(x1))
    loss.backward()
    sgd.step()
    sgd.zero_grad()
    return loss.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="an image folder of class subfolders")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--queue", type=int, required=True, help="memory bank size K")
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, required=True, help="steps timed after the warm-up")
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--key-momentum", type=float, default=0.99)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    backbone = timm.create_model("mobilenetv3_large_100", pretrained=False, num_classes=0)
    with torch.no_grad():  # the pooled features' width (1280: timm's head conv follows the 960-channel trunk)
        feature_dim = backbone.eval()(torch.zeros(1, 3, a.size, a.size)).shape[1]
    model = LightlyMoCo(backbone.train(), feature_dim, 2048, 128)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = NTXentLoss(temperature=0.1, memory_bank_size=(a.queue, 128))
    sgd = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=1e-5)
    model.train()
    data = batches(loader(a))
    times = []
    for _ in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        (views, _labels) = next(data)
        step(model, criterion, sgd, views, a).item()
        times.append(time.perf_counter() - t0)
    versions = {name: version(name) for name in ("torch", "torchvision", "timm", "lightly")}
    print(json.dumps({"step_s": times[a.warmup :], "versions": versions}))


if __name__ == "__main__":
    main()
