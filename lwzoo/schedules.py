"""Per-step schedules for the learning rate, the smoothing weight alpha and the key-encoder momentum.

Each is a plain function of the global step, so resuming at step s needs nothing but s.
"""

from __future__ import annotations

import math


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps``, then a cosine
    from ``base_lr`` down to ``min_lr`` at ``total_steps``.

        lr(s) = base_lr * (s + 1) / W                                      s < W
        lr(s) = min_lr + (base_lr - min_lr) * (1 + cos(pi * (s - W) / (S - W))) / 2     s >= W
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def alpha_at(step: int, total_steps: int, warmup_steps: int, alpha: float, schedule: str) -> float:
    """The smoothing weight at ``step``.

    ``after_warmup``: 0 for s < W, then ``alpha``.
    ``cosine``: ``alpha * (1 - cos(pi * s / S)) / 2``, rising from 0 at the start to ``alpha`` at the end.
    """
    if schedule == "after_warmup":
        return 0.0 if step < warmup_steps else alpha
    if schedule == "cosine":
        return alpha * 0.5 * (1.0 - math.cos(math.pi * min(1.0, step / max(1, total_steps))))
    raise ValueError(f"unknown alpha schedule {schedule!r}; use 'after_warmup' or 'cosine'")


def momentum_at(step: int, total_steps: int, base_m: float, schedule: str) -> float:
    """The key-encoder EMA momentum at ``step``.

    ``constant``: ``base_m``.
    ``cosine``: ``1 - (1 - base_m) * (1 + cos(pi * s / S)) / 2``, rising from ``base_m`` to 1 (BYOL's schedule).
    """
    if schedule == "constant":
        return base_m
    if schedule == "cosine":
        return 1.0 - (1.0 - base_m) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))
    raise ValueError(f"unknown momentum schedule {schedule!r}; use 'constant' or 'cosine'")
