"""The MoCo training engine: the model, optimizer and schedules of one run, and its training step."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .archs import Arch, create_backbone
from .augment import TwoViewAugment
from .checkpoint import FORMAT, rng_state, set_rng_state
from .data import ImageSet
from .errors import LwzooError
from .losses import SmoothedInfoNCE
from .moco import MoCo
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
    criterion: SmoothedInfoNCE,
    x1: torch.Tensor,
    x2: torch.Tensor,
    alpha: float,
    symmetric: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and the keys to enqueue for one pair of views (N, 3, H, W)."""
    queue = model.queue.keys  # K x D, this step's negatives; pushed to only after the backward pass
    q1, k2 = model.query(x1), model.keys(x2, generator)  # N x D each
    loss = criterion(q1, k2, queue, alpha)
    if not symmetric:
        return loss, k2
    q2, k1 = model.query(x2), model.keys(x1, generator)
    return loss + criterion(q2, k1, queue, alpha), torch.cat([k1, k2])  # keys: 2N x D


def step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    """The generator of ``step``'s augmentation and key shuffle: a function of (seed, step) alone, so a
    resumed run draws exactly what the uninterrupted run would have drawn."""
    return torch.Generator(device=device).manual_seed((seed % 2**31) * 2**32 + step)


class Engine:
    """Model, optimizer and schedules of one pretraining run.

    Args:
        arch: the backbone.
        recipe: the resolved recipe.
        steps_per_epoch: optimizer steps in one pass over the data.
        seed: seeds the initialisation (and, through :func:`step_generator`, every step's randomness).
        device: where to train.
    """

    def __init__(self, arch: Arch, recipe: Recipe, steps_per_epoch: int, seed: int, device: torch.device) -> None:
        r = self.recipe = recipe
        self.arch, self.seed, self.device = arch, seed, device
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
        gen = step_generator(self.device, self.seed, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = sched["lr"]
        x1, x2 = self.augment(images.to(self.device, non_blocking=True), gen)

        self.model.update_key_encoder(sched["momentum"])
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            loss, keys = moco_step(self.model, self.criterion, x1, x2, sched["alpha"], self.recipe.moco.symmetric, gen)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.model.queue.push(keys)
        self.step += 1
        return loss.detach()

    @torch.no_grad()
    def fill_queue(self, images: ImageSet) -> None:
        """Fill the queue with keys of augmented training images from the initial key encoder, so the
        first steps contrast against real negatives rather than random vectors."""
        self.model.train()
        need, passes = len(self.model.queue.keys), 0
        while need > 0:
            passes += 1
            for i, batch in enumerate(images.batches(self.recipe.train.batch_size, epoch=-passes, seed=self.seed)):
                gen = step_generator(self.device, self.seed, 2**31 + passes * 100_003 + i)  # no training step's seed
                x1, _ = self.augment(batch.to(self.device, non_blocking=True), gen)
                self.model.queue.push(self.model.keys(x1, gen))
                need -= len(batch)
                if need <= 0:
                    break

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
