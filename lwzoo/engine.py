"""The MoCo training engine: the model, optimizer and schedules of one run, and its training step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from .archs import Arch, create_backbone
from .augment import TwoViewAugment
from .distributed import SINGLE, DistContext
from .errors import LwzooError
from .losses import SmoothedInfoNCE, infonce_logits, positive_fit, smoothed_loss
from .moco import MoCo, QueryEncoder
from .recipe import Recipe
from .schedules import alpha_at, cosine_lr, momentum_at


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
    criterion: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    x1: torch.Tensor,
    x2: torch.Tensor,
    alpha: float | torch.Tensor,
    symmetric: bool,
    shuffles: list[torch.Tensor] | None = None,
    ctx: DistContext = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, fit and the keys to enqueue (from every rank) for one pair of views (N, 3, H, W).

    ``query`` is a :class:`QueryEncoder` (DDP-wrapped under torchrun); ``criterion(q, k, queue, alpha)`` returns
    the loss and :func:`lwzoo.losses.positive_fit` (2,) of its logits: :meth:`SmoothedInfoNCE.loss_and_fit` or,
    compiled, :func:`alpha_as_tensor` of one. With the symmetric loss the fit is the mean of both directions'.
    ``shuffles`` are the key shuffles of x2 and then x1 (:meth:`MoCo.key_shuffle`, drawn alike on every rank;
    None draws them from torch's global generator). They come in as tensors rather than a generator so the step
    has no generator in it, which torch.compile cannot trace.
    """
    if shuffles is None:
        shuffles = [model.key_shuffle(len(x1), None, ctx) for _ in range(2)]
    queue = model.queue.keys  # K x D, this step's negatives; pushed to only after the backward pass
    if not symmetric:
        (q1,) = query(x1)  # N x D
        k2 = model.shuffled_keys(x2, shuffles[0], ctx)  # N x D
        loss, fit = criterion(q1, k2, queue, alpha)
        return loss, fit, ctx.gather(k2)  # keys: W*N x D
    q1, q2 = query(x1, x2)
    k2, k1 = model.shuffled_keys(x2, shuffles[0], ctx), model.shuffled_keys(x1, shuffles[1], ctx)
    (loss12, fit12), (loss21, fit21) = criterion(q1, k2, queue, alpha), criterion(q2, k1, queue, alpha)
    return loss12 + loss21, (fit12 + fit21) / 2, ctx.gather(torch.cat([k1, k2]))  # keys: W*2N x D


def _compiled(fn: Callable[..., Any], mode: str, fullgraph: bool) -> Callable[..., Any]:
    """``torch.compile(fn)``, with a failure to build it (no C++ compiler on the CPU, no Triton on a GPU)
    reported as one line."""
    compiled = torch.compile(fn, mode=mode, fullgraph=fullgraph)

    def call(*args: Any) -> Any:
        try:
            return compiled(*args)
        except torch._dynamo.exc.BackendCompilerFailed as e:  # torch has no public name for it
            reason = str(e).strip().splitlines()[-1][:300]
            raise LwzooError(
                f"torch.compile could not build the training step ({reason}); train eager: --set train.compile=false"
            ) from None

    return call


def alpha_as_tensor(criterion: SmoothedInfoNCE) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``criterion.loss_and_fit`` taking alpha as a 0-d tensor, for the compiled step, where a float alpha that
    moves (``loss.alpha_schedule: cosine``) would be a new constant, and a recompile, at every step.

    Smoothed InfoNCE's target, (1 - alpha) e_0 + alpha s, is linear in alpha for every smoothing kind and the loss
    is linear in the target, so ``L(alpha) = (1 - alpha) L(0) + alpha L(1)`` exactly; both terms and the fit
    share one computation of the logits.
    """

    def loss_and_fit(
        q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        topk, smoothing = criterion.topk, criterion.smoothing
        logits = infonce_logits(q.float(), k.float(), queue.float(), criterion.temperature)  # N x (1+K), fp32
        plain, smoothed = smoothed_loss(logits, 0.0, topk, smoothing), smoothed_loss(logits, 1.0, topk, smoothing)
        return torch.lerp(plain, smoothed, alpha), positive_fit(logits)

    return loss_and_fit


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: every input bit reaches every output bit."""
    x = (x + 0x9E3779B97F4A7C15) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return x ^ (x >> 31)


def step_generator(device: torch.device, seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The generator of ``step``'s augmentation (``stream``: the rank) or key shuffle: a function of
    (seed, step, stream) alone, so a resumed run draws exactly what the uninterrupted run drew.

    The three are hashed together rather than packed into bit fields: the CPU generator keeps only the low
    32 bits of its seed, so a packed run seed in the high bits would give every seed the same draws."""
    return torch.Generator(device=device).manual_seed(_mix64(_mix64(_mix64(seed % 2**64) ^ step) ^ (stream % 2**64)))


class Engine:
    """Model, optimizer and schedules of one pretraining run.

    Args:
        arch: the backbone.
        recipe: the resolved recipe; with ``train.compile`` the step runs as torch.compile'd graphs.
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
        if r.train.compile and ctx.enabled:  # DDP's bucketed all-reduce inside compiled graphs is untested here
            raise LwzooError("train.compile is for one process; with --nproc, train with --set train.compile=false")

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
        # the last step's instance accuracy and positive softmax mass (positive_fit), on the device, unsynced
        self.last_fit = torch.zeros(2, device=device)
        self._forward, self._update = self._loss_and_keys, self._apply_gradients
        self._loss = self.criterion.loss_and_fit
        if r.train.compile:
            # Around the backward pass: EMA + forward + loss in one graph (fullgraph: no part of it may
            # fall back to eager), with its compiled backward; then optimizer step + queue push, which
            # torch.optim splits at the step on purpose. Schedules enter as 0-d device tensors (_scalars).
            self._forward = _compiled(self._loss_and_keys, r.train.compile, fullgraph=True)
            self._update = _compiled(self._apply_gradients, r.train.compile, fullgraph=False)
            self._loss = alpha_as_tensor(self.criterion)
            self._scalar_tensors = {k: torch.zeros((), device=device) for k in ("lr", "alpha", "momentum")}

    def schedules(self) -> dict[str, float]:
        """This step's lr, alpha and key-encoder momentum."""
        r, s, total = self.recipe, self.step, self.total_steps
        return {
            "lr": cosine_lr(s, total, self.warmup_steps, self.base_lr, self.base_lr * r.optim.min_lr_ratio),
            "alpha": alpha_at(s, total, self.warmup_steps, r.loss.alpha, r.loss.alpha_schedule),
            "momentum": momentum_at(s, total, r.moco.momentum, r.moco.momentum_schedule),
        }

    def train_step(self, images: torch.Tensor, aspects: torch.Tensor | None = None) -> torch.Tensor:
        """One MoCo step on a uint8 batch (B, 3, S, S) and the originals' aspect ratios (B,) when the images are
        stored whole (:meth:`ImageSet.batches`); returns the detached loss and leaves the step's
        :func:`lwzoo.losses.positive_fit` in :attr:`last_fit`."""
        sched = self.last_schedule = self.schedules()
        aug, shuffle = self._generators(self.step)
        x1, x2 = self.augment(images.to(self.device, non_blocking=True), aug, aspects)
        # the key shuffles come from the step's generator here, outside what torch.compile captures
        shuffles = [self.model.key_shuffle(len(x1), shuffle, self.ctx) for _ in range(1 + self.recipe.moco.symmetric)]
        lr, alpha, momentum = self._scalars(sched)
        if self.recipe.train.compile:
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs may reuse the last step's outputs' memory

        loss, fit, keys = self._forward(x1, x2, shuffles, alpha, momentum)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self._update(keys, lr)
        self.step += 1
        loss = loss.detach()
        if self.recipe.train.compile:  # CUDA graphs may overwrite the outputs' memory at the next replay
            loss, fit = loss.clone(), fit.clone()
        self.last_fit = fit
        return loss

    def _loss_and_keys(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        shuffles: list[torch.Tensor],
        alpha: float | torch.Tensor,
        momentum: float | torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The key encoder's EMA update, then the loss, the fit and the keys to enqueue."""
        self.model.update_key_encoder(momentum)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            symmetric = self.recipe.moco.symmetric
            return moco_step(self.model, self.query, self._loss, x1, x2, alpha, symmetric, shuffles, self.ctx)

    def _apply_gradients(self, keys: torch.Tensor, lr: float | torch.Tensor) -> None:
        """The optimizer step at ``lr``, then this step's keys into the queue (only now: the backward
        pass needed the queue as it was)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.amp is torch.float16:  # loss scaling (GPUs without bf16), which torch.compile does not trace
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.model.queue.push(keys)

    def _scalars(self, sched: dict[str, float]) -> tuple[float | torch.Tensor, ...]:
        """lr, alpha and key momentum as the step takes them: floats when eager; when compiled, 0-d device
        tensors filled in place, so schedules that move every step are data to the graphs rather than
        constants that recompile them."""
        if not self.recipe.train.compile:
            return sched["lr"], sched["alpha"], sched["momentum"]
        for key, value in self._scalar_tensors.items():
            value.fill_(sched[key])
        return tuple(self._scalar_tensors.values())

    def _generators(self, key: int) -> tuple[torch.Generator, torch.Generator]:
        """(augmentation, key shuffle): one generator in a single process; under DDP each rank augments
        with its own stream and all ranks share the shuffle stream."""
        aug = step_generator(self.device, self.seed, key, stream=self.ctx.rank)
        return aug, (step_generator(self.device, self.seed, key, stream=-1) if self.ctx.enabled else aug)

    @torch.no_grad()
    def fill_queue(self, images: Any) -> None:
        """Fill the queue with keys of augmented training images (an :class:`lwzoo.data.ImageSet`) from the
        initial key encoder, so the first steps contrast against real negatives rather than random vectors."""
        self.model.train()
        ctx, batch_size = self.ctx, self.recipe.train.batch_size
        need, passes = len(self.model.queue.keys), 0
        while need > 0:
            passes += 1
            batches = images.batches(batch_size, -passes, self.seed, rank=ctx.rank, world_size=ctx.world_size)
            for i, (batch, aspects) in enumerate(batches):
                aug, shuffle = self._generators(2**31 + passes * 100_003 + i)  # no training step's seed
                x1, _ = self.augment(batch.to(self.device, non_blocking=True), aug, aspects)
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
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = ckpt["step"]
