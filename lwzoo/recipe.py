"""Recipes: YAML files validated into frozen dataclasses.

A recipe file sets every field (the shipped ones carry a comment on where each value comes from),
or names a ``base`` recipe and overrides some of its fields. Unknown keys, missing keys and values
of the wrong type are errors that name the key and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import apply_overrides, build, field_types, plain, read_yaml, resolve_path, to_yaml
from .errors import LwzooError
from .resources import resource_dir


@dataclass(frozen=True)
class TrainCfg:
    epochs: int
    batch_size: int  # images per optimizer step, over all devices
    log_every: int  # steps between metrics.jsonl rows
    keep_every: int  # also keep checkpoint-epoch<E>.pt every this many epochs; 0 keeps only the last


@dataclass(frozen=True)
class OptimCfg:
    lr: float  # at lr_batch_size images per step; scaled linearly with the real batch size
    lr_batch_size: int
    weight_decay: float
    momentum: float
    warmup_epochs: float
    min_lr_ratio: float  # cosine decays to lr * min_lr_ratio
    decay_norm_and_bias: bool  # apply weight decay to norm weights and biases too


@dataclass(frozen=True)
class MocoCfg:
    dim: int  # embedding width after the projector
    mlp_hidden: int  # projector hidden width
    queue_size: int  # K, keys kept as negatives
    momentum: float  # key encoder EMA momentum m at the start of training
    momentum_schedule: Literal["constant", "cosine"]  # cosine raises m towards 1 by the end
    temperature: float
    symmetric: bool  # L(q1,k2) + L(q2,k1) instead of L(q1,k2)
    key_bn_splits: int  # shuffled sub-batches for the key encoder's BatchNorm (single-device shuffle-BN)
    zero_init_residual: bool  # start every residual block as identity (zero last-BN gamma)
    queue_init: Literal["random", "keys"]  # start the queue with random unit vectors (MoCo) or real keys


@dataclass(frozen=True)
class LossCfg:
    alpha: float  # target mass moved from the positive to the smoothing set
    topk: int  # size of the smoothing set (nearest queue keys); ignored for uniform smoothing
    smoothing: Literal["topk", "uniform"]
    alpha_schedule: Literal["after_warmup", "cosine"]  # 0 through warmup then alpha, or a 0->alpha cosine


@dataclass(frozen=True)
class AugmentCfg:
    image_size: int
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    jitter: tuple[float, float, float, float]  # brightness, contrast, saturation, hue
    jitter_p: float
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple[float, float]  # in pixels of the output view
    flip_p: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    eval_crop_pct: float  # evaluation: resize to image_size / crop_pct, centre-crop image_size


@dataclass(frozen=True)
class DataCfg:
    decode_size: int | None  # images are decoded to this square size once; null: image_size * 8/7
    in_memory_gb: float  # decoded sets up to this size stay in memory; larger ones stream from disk
    workers: int | None  # decoding processes for streamed data; null: min(8, CPU count)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    train: TrainCfg
    optim: OptimCfg
    moco: MocoCfg
    loss: LossCfg
    augment: AugmentCfg
    data: DataCfg

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return to_yaml(self)

    def digest(self) -> str:
        """A short hash of the resolved values, to tell recipes apart in exports and caches."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def recipes_dir() -> Path:
    return resource_dir("recipes")


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``recipes/``."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def recipe_keys() -> list[str]:
    """Every dotted key a recipe has, e.g. ``optim.lr``."""
    return list(field_types(Recipe))


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A recipe name (``mobilenetv3_large``) or a path to a YAML file, as a path."""
    return resolve_path(name_or_path, recipes_dir(), "recipe")


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read, merge (``base``), override (dotted keys) and validate a recipe."""
    raw = read_yaml(name_or_path, recipes_dir(), "recipe")
    keys = recipe_keys()
    try:
        raw = apply_overrides(raw, overrides or {}, keys, "recipe")
    except LwzooError as e:
        raise LwzooError(f"{e}; `lwzoo recipes --keys` lists them all") from None
    return recipe_from_dict(raw, source=str(name_or_path))


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a plain mapping (a recipe file's content or a checkpoint's saved recipe)."""
    recipe = build(Recipe, raw, source, "recipe")
    _check_ranges(recipe, source)
    return recipe


def _check_ranges(r: Recipe, source: str) -> None:
    a = r.augment
    rules: list[tuple[bool, str, Any, str]] = [
        (r.train.epochs >= 1, "train.epochs", r.train.epochs, "at least 1"),
        (r.train.batch_size >= 2, "train.batch_size", r.train.batch_size, "at least 2"),
        (r.train.log_every >= 1, "train.log_every", r.train.log_every, "at least 1"),
        (r.train.keep_every >= 0, "train.keep_every", r.train.keep_every, "0 or more"),
        (r.optim.lr > 0, "optim.lr", r.optim.lr, "positive"),
        (r.optim.lr_batch_size >= 1, "optim.lr_batch_size", r.optim.lr_batch_size, "at least 1"),
        (r.optim.weight_decay >= 0, "optim.weight_decay", r.optim.weight_decay, "0 or more"),
        (0 <= r.optim.momentum < 1, "optim.momentum", r.optim.momentum, "in [0, 1)"),
        (
            0 <= r.optim.warmup_epochs < r.train.epochs,
            "optim.warmup_epochs",
            r.optim.warmup_epochs,
            f"in [0, train.epochs={r.train.epochs}); shorten it with --set optim.warmup_epochs=...",
        ),
        (0 <= r.optim.min_lr_ratio <= 1, "optim.min_lr_ratio", r.optim.min_lr_ratio, "in [0, 1]"),
        (r.moco.dim >= 1, "moco.dim", r.moco.dim, "at least 1"),
        (r.moco.mlp_hidden >= 1, "moco.mlp_hidden", r.moco.mlp_hidden, "at least 1"),
        (r.moco.queue_size >= 1, "moco.queue_size", r.moco.queue_size, "at least 1"),
        (0 <= r.moco.momentum <= 1, "moco.momentum", r.moco.momentum, "in [0, 1]"),
        (r.moco.temperature > 0, "moco.temperature", r.moco.temperature, "positive"),
        (
            1 <= r.moco.key_bn_splits <= r.train.batch_size // 2,
            "moco.key_bn_splits",
            r.moco.key_bn_splits,
            f"in [1, train.batch_size / 2 = {r.train.batch_size // 2}]",
        ),
        (0 <= r.loss.alpha < 1, "loss.alpha", r.loss.alpha, "in [0, 1)"),
        (1 <= r.loss.topk <= r.moco.queue_size, "loss.topk", r.loss.topk, "in [1, moco.queue_size]"),
        (a.image_size >= 8, "augment.image_size", a.image_size, "at least 8"),
        (0 < a.crop_scale[0] <= a.crop_scale[1] <= 1, "augment.crop_scale", list(a.crop_scale), "0 < min <= max <= 1"),
        (0 < a.crop_ratio[0] <= a.crop_ratio[1], "augment.crop_ratio", list(a.crop_ratio), "0 < min <= max"),
        (
            all(j >= 0 for j in a.jitter) and a.jitter[3] <= 0.5,
            "augment.jitter",
            list(a.jitter),
            "non-negative, with hue at most 0.5",
        ),
        (0 <= a.blur_sigma[0] <= a.blur_sigma[1], "augment.blur_sigma", list(a.blur_sigma), "0 <= min <= max"),
        (all(s > 0 for s in a.std), "augment.std", list(a.std), "positive"),
        (0 < a.eval_crop_pct <= 1, "augment.eval_crop_pct", a.eval_crop_pct, "in (0, 1]"),
        (r.data.decode_size is None or r.data.decode_size >= 8, "data.decode_size", r.data.decode_size, "null or >= 8"),
        (r.data.in_memory_gb >= 0, "data.in_memory_gb", r.data.in_memory_gb, "0 or more"),
        (r.data.workers is None or r.data.workers >= 0, "data.workers", r.data.workers, "null or 0 or more"),
    ]
    for name in ("jitter_p", "grayscale_p", "blur_p", "flip_p"):
        rules.append((0 <= getattr(a, name) <= 1, f"augment.{name}", getattr(a, name), "a probability in [0, 1]"))
    for ok, key, value, want in rules:
        if not ok:
            raise LwzooError(f"{source}: '{key}' is {value}, but must be {want}")
