"""The MoCo training engine: the model, optimizer and schedules of one run, and its training step."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from .archs import Arch, create_backbone
from .augment import TwoViewAugment
from .checkpoint import FORMAT, rng_state, set_rng_state
from .data import ImageSet
from .distributed import SINGLE, DistContext
from .errors import LwzooError
from .losses import SmoothedInfoNCE
from .moco import MoCo, QueryEncoder
from .recipe import Recipe
from .schedules import alpha_at, cosine_lr, momentum_at
from .version import __version__


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LwzooError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LwzooError(f"--device {device} asked for CUDA, but this PyTorch sees no GPU; use --device cpu")
    return dev


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """Trainable parameters, with norm weights and biases (1-d tensors) kept out of weight decay unless asked."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if decay_norm_and_bias or p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def moco_step(
    model: MoCo,
    query: nn.Module,
    criterion: SmoothedInfoNCE,
    x1: torch.Tensor,
    x2: torch.Tensor,
    alpha: float,
    symmetric: bool,
    shuffle: torch.Generator,
    ctx: DistContext = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and the keys to enqueue (from every rank) for one pair of views (N, 3, H, W).

    ``query`` is a :class:`QueryEncoder` (DDP-wrapped under torchrun); ``shuffle`` draws the key
    shuffle and must be seeded alike on every rank.
    """
    queue = model.queue.keys  # K x D, this step's negatives; pushed to only after the backward pass
    if not symmetric:
        (q1,) = query(x1)  # N x D
        k2 = model.keys(x2, shuffle, ctx)  # N x D
        return criterion(q1, k2, queue, alpha), ctx.gather(k2)  # keys: W*N x D
    q1, q2 = query(x1, x2)
    k2, k1 = model.keys(x2, shuffle, ctx), model.keys(x1, shuffle, ctx)
    loss = criterion(q1, k2, queue, alpha) + criterion(q2, k1, queue, alpha)
    return loss, ctx.gather(torch.cat([k1, k2]))  # keys: W*2N x D


def step_generator(device: torch.device, seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The generator of ``step``'s augmentation (``stream``: the rank) or key shuffle: a function of
    (seed, step, stream) alone, so a resumed run draws exactly what the uninterrupted run drew."""
    return torch.Generator(device=device).manual_seed(
        ((seed % 2**31) * 2**32 + step + stream * 0x9E3779B97F4A7C15) % 2**64
    )


class Engine:
    """Model, optimizer and schedules of one pretraining run.

    Args:
        arch: the backbone.
        recipe: the resolved recipe.
        steps_per_epoch: optimizer steps in one pass over the data.
        seed: seeds the initialisation (and, through :func:`step_generator`, every step's randomness).
        device: where to train.
    """

    def __init__(
        self,
        arch: Arch,
        recipe: Recipe,
        steps_per_epoch: int,
        seed: int,
        device: torch.device,
        ctx: DistContext = SINGLE,
    ) -> None:
        r = self.recipe = recipe
        self.arch, self.seed, self.device, self.ctx = arch, seed, device, ctx

        self.steps_per_epoch = steps_per_epoch
        self.total_steps = r.train.epochs * steps_per_epoch
        self.warmup_steps = round(r.optim.warmup_epochs * steps_per_epoch)
        self.base_lr = r.optim.lr * r.train.batch_size / r.optim.lr_batch_size
        # bf16 autocast where the GPU has it, fp16 with loss scaling otherwise; CPU autocast is slower than fp32.
        self.amp = (
            None if device.type != "cuda" else torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        )

        torch.manual_seed(seed)
        backbone = create_backbone(arch, r.moco.zero_init_residual)
        m = r.moco
        self.model = MoCo(backbone, arch.feature_dim, m.dim, m.mlp_hidden, m.queue_size, m.key_bn_splits)
        self.model.to(device, memory_format=torch.channels_last)
        self.query: nn.Module = QueryEncoder(self.model.backbone, self.model.projector)
        if ctx.enabled:  # gradients are averaged over ranks; each rank's BN keeps its own statistics
            self.query = DistributedDataParallel(
                self.query, device_ids=[device.index] if device.type == "cuda" else None
            )
        groups = param_groups(self.model, r.optim.weight_decay, r.optim.decay_norm_and_bias)

        self.optimizer = torch.optim.SGD(groups, lr=self.base_lr, momentum=r.optim.momentum)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp is torch.float16)
        self.criterion = SmoothedInfoNCE(m.temperature, r.loss.topk, r.loss.smoothing)
        self.augment = TwoViewAugment(r.augment, channels_last=True).to(device)
        self.step = 0
        self.last_schedule: dict[str, float] = {}

    def schedules(self) -> dict[str, float]:
        """This step's lr, alpha and key-encoder momentum."""
        r, s, total = self.recipe, self.step, self.total_steps
        return {
            "lr": cosine_lr(s, total, self.warmup_steps, self.base_lr, self.base_lr * r.optim.min_lr_ratio),
            "alpha": alpha_at(s, total, self.warmup_steps, r.loss.alpha, r.loss.alpha_schedule),
            "momentum": momentum_at(s, total, r.moco.momentum, r.moco.momentum_schedule),
        }

    def train_step(self, images: torch.Tensor) -> torch.Tensor:
        """One MoCo step on a uint8 batch (B, 3, S, S); returns the detached loss."""
        sched = self.last_schedule = self.schedules()
        aug, shuffle = self._generators(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = sched["lr"]
        x1, x2 = self.augment(images.to(self.device, non_blocking=True), aug)

        self.model.update_key_encoder(sched["momentum"])
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            loss, keys = moco_step(
                self.model,
                self.query,
                self.criterion,
                x1,
                x2,
                sched["alpha"],
                self.recipe.moco.symmetric,
                shuffle,
                self.ctx,
            )

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.model.queue.push(keys)
        self.step += 1
        return loss.detach()

    def _generators(self, key: int) -> tuple[torch.Generator, torch.Generator]:
        """(augmentation, key shuffle): one generator in a single process; under DDP each rank augments
        with its own stream and all ranks share the shuffle stream."""
        aug = step_generator(self.device, self.seed, key, stream=self.ctx.rank)
        return aug, (step_generator(self.device, self.seed, key, stream=-1) if self.ctx.enabled else aug)

    @torch.no_grad()
    def fill_queue(self, images: ImageSet) -> None:
        """Fill the queue with keys of augmented training images from the initial key encoder, so the
        first steps contrast against real negatives rather than random vectors."""
        self.model.train()
        ctx, batch_size = self.ctx, self.recipe.train.batch_size
        need, passes = len(self.model.queue.keys), 0
        while need > 0:
            passes += 1
            batches = images.batches(batch_size, -passes, self.seed, rank=ctx.rank, world_size=ctx.world_size)
            for i, batch in enumerate(batches):
                aug, shuffle = self._generators(2**31 + passes * 100_003 + i)  # no training step's seed
                x1, _ = self.augment(batch.to(self.device, non_blocking=True), aug)
                self.model.queue.push(ctx.gather(self.model.keys(x1, shuffle, ctx)))
                need -= len(batch) * ctx.world_size
                if need <= 0:
                    break

    def release(self) -> None:
        """Drop the DDP wrapper and the optimizer (and with them the process group's work objects)."""
        self.query = None  # type: ignore[assignment]
        self.optimizer = None  # type: ignore[assignment]

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint needs from the engine."""
        return {
            "format": FORMAT,
            "lwzoo_version": __version__,
            "arch": self.arch.name,
            "timm_name": self.arch.timm_name,
            "feature_dim": self.arch.feature_dim,
            "recipe": self.recipe.to_dict(),
            "recipe_digest": self.recipe.digest(),
            "seed": self.seed,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "total_steps": self.total_steps,
            "scheduler": {"kind": "cosine", "base_lr": self.base_lr, "warmup_steps": self.warmup_steps},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng_state(),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.step = ckpt["step"]
