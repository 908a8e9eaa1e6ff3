"""Recipes: YAML files validated into frozen dataclasses.

A recipe file sets every field (the shipped ones carry a comment on where each value comes from),
or names a ``base`` recipe and overrides some of its fields. Unknown keys, missing keys and values
of the wrong type are errors that name the key and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .config import apply_overrides, build, field_types, merge, plain, read_yaml, resolve_path, to_yaml
from .errors import LwzooError
from .losses import FIXED_ALPHA, FIXED_TOPK, GRADED_SPLITS
from .resources import resource_dir


@dataclass(frozen=True)
class TrainCfg:
    epochs: int
    batch_size: int  # images per optimizer step, over all devices
    log_every: int  # steps between metrics.jsonl rows
    keep_every: int  # also keep checkpoint-epoch<E>.pt every this many epochs; 0 keeps only the last
    # false: eager; else the torch.compile mode of the step ("reduce-overhead" adds CUDA graphs on a GPU)
    compile: Literal[False, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


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
    alpha: float  # target mass moved from the positive to the smoothing set; fixed by some kinds (FIXED_ALPHA)
    topk: int  # size of the smoothing set (nearest queue keys); fixed by some kinds (FIXED_TOPK), unused by uniform
    # how the mass is spread over the nearest queue keys, formulas in lwzoo/losses.py (SMOOTHING_KINDS)
    smoothing: Literal["topk", "uniform", "graded_topk", "geometric_top10", "nearest_negative", "grouped_top20"]
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
    decode_size: int | None  # training images are stored whole at this square size; null: 2 x image_size
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


# A run's recipe.yaml (and an export's) may end with this section: where the run's backbone weights started
# (``lwzoo pretrain --init``). It records the run, it is not a training value: reading the file as a recipe drops
# it, and only --init loads weights.
INIT = "init"


def recipe_yaml(recipe: Recipe, init: dict[str, Any] | None = None) -> str:
    """The recipe as a run folder and an export record it: its values, then, for a run started from given
    weights, an ``init:`` section saying which (source, kind, file, sha256, arch)."""
    text = recipe.to_yaml()
    return (text + yaml.safe_dump({INIT: init}, sort_keys=False)) if init else text


# Keys added after recipes were first saved with checkpoints and exports, with the value that reproduces
# what a recipe written before them ran; a saved recipe without one of them still loads.
LATER_KEYS: dict[str, Any] = {"train.compile": False}


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a plain mapping (a recipe file's content or a checkpoint's saved recipe)."""
    raw = merge(raw, {})
    raw.pop(INIT, None)  # a run's record of its starting weights (recipe_yaml), not a training value
    for dotted, value in LATER_KEYS.items():
        section, key = dotted.split(".")
        if isinstance(raw.get(section), dict):
            raw[section].setdefault(key, value)
    recipe = build(Recipe, raw, source, "recipe")
    _check_ranges(recipe, source)
    return recipe


Rule = tuple[bool, str, Any, str]  # (holds, key, value, what it must be)


def _train_rules(r: Recipe) -> list[Rule]:
    return [
        (r.train.epochs >= 1, "train.epochs", r.train.epochs, "at least 1"),
        (2 <= r.train.batch_size <= 2**16, "train.batch_size", r.train.batch_size, f"in [2, {2**16:,}]"),
        (r.train.log_every >= 1, "train.log_every", r.train.log_every, "at least 1"),
        (r.train.keep_every >= 0, "train.keep_every", r.train.keep_every, "0 or more"),
        (
            r.train.compile is False or isinstance(r.train.compile, str),  # YAML's 0 would pass as False
            "train.compile",
            r.train.compile,
            "false, or a torch.compile mode",
        ),
    ]


def _optim_rules(r: Recipe) -> list[Rule]:
    return [
        (0 < r.optim.lr <= 10, "optim.lr", r.optim.lr, "in (0, 10] per optim.lr_batch_size images (MoCo uses 0.03)"),
        (r.optim.lr_batch_size >= 1, "optim.lr_batch_size", r.optim.lr_batch_size, "at least 1"),
        (0 <= r.optim.weight_decay <= 0.1, "optim.weight_decay", r.optim.weight_decay, "in [0, 0.1] (MoCo uses 1e-4)"),
        (0 <= r.optim.momentum < 1, "optim.momentum", r.optim.momentum, "in [0, 1)"),
        (
            0 <= r.optim.warmup_epochs < r.train.epochs,
            "optim.warmup_epochs",
            r.optim.warmup_epochs,
            f"in [0, train.epochs={r.train.epochs}); shorten it with --set optim.warmup_epochs=...",
        ),
        (0 <= r.optim.min_lr_ratio <= 1, "optim.min_lr_ratio", r.optim.min_lr_ratio, "in [0, 1]"),
    ]


def _moco_and_loss_rules(r: Recipe) -> list[Rule]:
    return [
        (1 <= r.moco.dim <= 8192, "moco.dim", r.moco.dim, "in [1, 8192]"),
        (1 <= r.moco.mlp_hidden <= 65536, "moco.mlp_hidden", r.moco.mlp_hidden, "in [1, 65536]"),
        (1 <= r.moco.queue_size <= 2**22, "moco.queue_size", r.moco.queue_size, f"in [1, {2**22:,}]"),
        (0 <= r.moco.momentum <= 1, "moco.momentum", r.moco.momentum, "in [0, 1]"),
        (
            0.01 <= r.moco.temperature <= 10,
            "moco.temperature",
            r.moco.temperature,
            "in [0.01, 10]: below 0.01 the logits of unit vectors pass 100 and training diverges (MoCo v2 uses 0.2)",
        ),
        (
            1 <= r.moco.key_bn_splits <= r.train.batch_size // 2,
            "moco.key_bn_splits",
            r.moco.key_bn_splits,
            f"in [1, train.batch_size / 2 = {r.train.batch_size // 2}]",
        ),
        (0 <= r.loss.alpha < 1, "loss.alpha", r.loss.alpha, "in [0, 1)"),
        (1 <= r.loss.topk <= r.moco.queue_size, "loss.topk", r.loss.topk, "in [1, moco.queue_size]"),
        *_smoothing_rules(r.loss),
    ]


def _smoothing_rules(loss: LossCfg) -> list[Rule]:
    """A kind that fixes alpha or k takes only its own value: any other would be silently unused, and the recipe
    saved with a run would misstate what ran. The fix names every value the kind fixes, so one retry does."""
    kind = loss.smoothing
    fixed = {"loss.topk": FIXED_TOPK.get(kind), "loss.alpha": FIXED_ALPHA.get(kind)}
    fix = " ".join(f"--set {key}={value}" for key, value in fixed.items() if value is not None)
    rules: list[Rule] = []
    if kind == "graded_topk":
        ks = ", ".join(map(str, GRADED_SPLITS))
        why = "whose split points are defined for those"
        rules.append(
            (loss.topk in GRADED_SPLITS, "loss.topk", loss.topk, f"one of {ks} with loss.smoothing '{kind}', {why}")
        )
    if (k := fixed["loss.topk"]) is not None:
        keys = "the nearest queue key" if k == 1 else f"the {k} nearest queue keys"
        why = f"which always smooths over {keys} ({fix})"
        rules.append((loss.topk == k, "loss.topk", loss.topk, f"{k} with loss.smoothing '{kind}', {why}"))
    if (alpha := fixed["loss.alpha"]) is not None:
        why = f"which keeps {1 - alpha:g} on the positive ({fix}; loss.alpha_schedule still starts it at 0)"
        rules.append(
            (math.isclose(loss.alpha, alpha), "loss.alpha", loss.alpha, f"{alpha} with loss.smoothing '{kind}', {why}")
        )
    return rules


def _augment_rules(r: Recipe) -> list[Rule]:
    a = r.augment
    rules: list[Rule] = [
        (8 <= a.image_size <= 2048, "augment.image_size", a.image_size, "in [8, 2048]"),
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
    ]
    for name in ("jitter_p", "grayscale_p", "blur_p", "flip_p"):
        rules.append((0 <= getattr(a, name) <= 1, f"augment.{name}", getattr(a, name), "a probability in [0, 1]"))
    return rules


def _data_rules(r: Recipe) -> list[Rule]:
    return [
        (
            r.data.decode_size is None or 8 <= r.data.decode_size <= 4096,
            "data.decode_size",
            r.data.decode_size,
            "null or in [8, 4096]",
        ),
        (r.data.in_memory_gb >= 0, "data.in_memory_gb", r.data.in_memory_gb, "0 or more"),
        (r.data.workers is None or r.data.workers >= 0, "data.workers", r.data.workers, "null or 0 or more"),
    ]


def _check_ranges(r: Recipe, source: str) -> None:
    """Every value within its range. Upper bounds catch typos and absurd values that would only fail steps
    later, as a NaN loss."""
    rules = [*_train_rules(r), *_optim_rules(r), *_moco_and_loss_rules(r), *_augment_rules(r), *_data_rules(r)]
    for ok, key, value, want in rules:
        if not ok:
            raise LwzooError(f"{source}: '{key}' is {value}, but must be {want}")


def default_decode_size(image_size: int) -> int:
    """``data.decode_size: null``: training images are stored whole at twice the view size (448 px for 224).

    A random-resized crop of area fraction s and aspect r from an image of aspect A spans ``sqrt(s r / A)`` of the
    stored width and ``sqrt(s A / r)`` of its height, so it is not upsampled while both are >= 1/2 at 2x. Under
    MoCo's scale (0.2, 1) and ratio (3/4, 4/3) that is 76% of the crops of a 4:3 photo and 87% of a square
    one (benchmarks/RESULTS.md, "Training image layout"; 34% and 53% at 1.5x). 10,000 images take 5.6 GiB of uint8.
    """
    return 2 * image_size


def fit_queue_to_data(recipe: Recipe, num_images: int) -> tuple[Recipe, str | None]:
    """Cap the queue for a small training set: K > N/2 becomes the largest power of two <= N/2 (at least k).

    Each step pushes the keys of the images it saw, so a queue of K keys holds the keys of the last K
    images (K/2 with the symmetric loss's two keys per image). Once K nears the N training images, every
    query meets stale keys of its own image among its negatives: MoCo's K = 65,536 on 10,000 images holds
    each image about six times, and InfoNCE then pushes an image away from itself. At K <= N/2 the queue
    holds at most the most recent half of an epoch. Returns the recipe to train with and a note, or
    ``(recipe, None)`` when K already fits.
    """
    k = recipe.moco.queue_size
    if 2 * k <= num_images:
        return recipe, None
    cap = max(recipe.loss.topk, 1 << max(0, (num_images // 2).bit_length() - 1))
    note = (
        f"moco.queue_size {k:,} capped to {cap:,} for {num_images:,} training images "
        "(a queue over half the images holds stale keys of each query's own image as negatives)"
    )
    moco = dataclasses.replace(recipe.moco, queue_size=cap)
    description = f"{recipe.description}; {note}" if recipe.description else note
    return dataclasses.replace(recipe, moco=moco, description=description), note
