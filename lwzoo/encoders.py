"""Frozen encoders to evaluate: an lwzoo checkpoint, a random-init baseline or timm's supervised weights.

Every spec resolves to an :class:`Encoder`: a timm backbone in eval mode with frozen weights whose
forward gives pooled pre-logits features, the preprocessing to feed it, and a content identity that
keys feature caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn as nn

from . import env
from .archs import Arch, create_backbone, get_arch
from .checkpoint import load_checkpoint
from .data import default_recipe_name
from .errors import LwzooError
from .hub_folder import WEIGHTS, load_backbone, read_hub_config, sha256_file, verify_checksum
from .preprocess import Preprocess
from .recipe import Recipe, load_recipe, recipe_from_dict
from .run_folder import CHECKPOINT, latest_checkpoint


@dataclass
class Encoder:
    """A frozen backbone ready for feature extraction.

    Attributes:
        backbone: timm model (``num_classes=0``) in eval mode, ``requires_grad`` off.
        arch: its architecture.
        preprocess: the evaluation transform its features are defined with.
        spec: what it was loaded from, as the user wrote it (``random:effnet_b0``, a path, ...).
        identity: a content hash (file digest, or the recipe of a random init) for caches.
        checkpoint: the lwzoo checkpoint file, when it came from one.
        recipe: the checkpoint's recipe, when it came from one.
    """

    backbone: nn.Module
    arch: Arch
    preprocess: Preprocess
    spec: str
    identity: str
    checkpoint: Path | None = None
    recipe: Recipe | None = None
    training: dict | None = None  # a checkpoint's data, seed and steps

    @property
    def feature_dim(self) -> int:
        return self.arch.feature_dim


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def load_encoder(
    spec: str | Path | None = None,
    data: str | Path | None = None,
    image_size: int | None = None,
) -> Encoder:
    """Resolve an encoder spec.

    Args:
        spec: an lwzoo checkpoint (file or run folder); an export folder or its ``model.safetensors``;
            ``random:ARCH[:SEED]``, a random-init
            baseline; ``timm:ARCH``, timm's supervised ImageNet weights from the local Hugging
            Face cache; or None for the newest run under ``runs/``.
        data: the data it will be evaluated on; picks the preprocessing of a random baseline
            (the demo recipe's on the built-in set, else the arch's tuned recipe's).
        image_size: evaluate at this size instead (the crop fraction is kept).
    """
    text = str(spec) if spec is not None else None
    if text is None:
        encoder = _from_checkpoint(latest_checkpoint())
    elif text.startswith("random:"):
        encoder = _random(text, data)
    elif text.startswith("timm:"):
        encoder = _timm(text)
    else:
        path = Path(text)
        if path.suffix == ".safetensors":
            encoder = _from_export(path.parent, path)
        elif path.is_dir() and (path / WEIGHTS).is_file() and not (path / CHECKPOINT).is_file():
            encoder = _from_export(path, path / WEIGHTS)
        else:
            encoder = _from_checkpoint(path / CHECKPOINT if path.is_dir() else path)
    if image_size is not None and image_size != encoder.preprocess.image_size:
        p = encoder.preprocess
        encoder.preprocess = Preprocess(image_size, p.crop_pct, p.mean, p.std, p.interpolation)
    return encoder


def _from_checkpoint(path: Path) -> Encoder:
    ckpt = load_checkpoint(path)
    try:
        arch = get_arch(ckpt["arch"])
    except LwzooError as e:
        raise LwzooError(f"checkpoint '{path}': {e}") from None
    recipe = recipe_from_dict(ckpt["recipe"], source=str(path))
    backbone = create_backbone(arch)
    weights = {k.removeprefix("backbone."): v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    try:
        backbone.load_state_dict(weights)
    except RuntimeError as e:
        raise LwzooError(f"checkpoint '{path}' does not fit {arch.timm_name}: {str(e).splitlines()[0]}") from None
    training = {k: ckpt[k] for k in ("data", "seed", "step", "total_steps", "epoch")}
    preprocess = Preprocess.from_recipe(recipe)
    return Encoder(_freeze(backbone), arch, preprocess, str(path), sha256_file(path), path, recipe, training)


def random_encoder(arch: Arch, preprocess: Preprocess, seed: int = 0) -> Encoder:
    """A random-init baseline: timm's own initialisation, what ``timm.create_model`` gives."""
    torch.manual_seed(seed)
    backbone = create_backbone(arch)
    identity = f"random|{arch.timm_name}|{seed}|timm {timm.__version__}|torch {torch.__version__}"
    spec = f"random:{arch.name}" + (f":{seed}" if seed else "")
    return Encoder(_freeze(backbone), arch, preprocess, spec, identity)


def _from_export(folder: Path, weights: Path) -> Encoder:
    """An export folder (or its model.safetensors): the weights in timm's names plus config.json."""
    if not weights.is_file():
        raise LwzooError(f"'{weights}' does not exist")
    arch, preprocess, config = read_hub_config(folder)
    verify_checksum(weights, config)  # as lwzoo.load does: a damaged or edited file is not evaluated
    backbone = load_backbone(weights, arch)
    return Encoder(_freeze(backbone), arch, preprocess, str(weights), sha256_file(weights))


def _random(spec: str, data: str | Path | None) -> Encoder:
    _, arch_name, *rest = spec.split(":")
    arch = get_arch(arch_name)
    try:
        seed = int(rest[0]) if rest else 0
    except ValueError:
        raise LwzooError(f"'{spec}': the seed after the arch must be an integer, as in random:{arch.name}:1") from None
    preprocess = Preprocess.from_recipe(load_recipe(default_recipe_name(arch, data)))
    return random_encoder(arch, preprocess, seed)


def _timm(spec: str) -> Encoder:
    from huggingface_hub import try_to_load_from_cache

    arch = get_arch(spec.removeprefix("timm:"))
    cfg = timm.models.get_pretrained_cfg(arch.timm_name)
    repo = cfg.hf_hub_id if cfg is not None else None
    cache_dir = env.hub_cache()
    weights = None
    for filename in ("model.safetensors", "pytorch_model.bin"):  # timm's own Hub files for its weights
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir) if repo else None
        if isinstance(found, str):
            weights = found
            break
    if weights is None:
        raise LwzooError(
            f"timm's supervised weights for {arch.timm_name} ({repo}) are not in the local Hugging Face cache "
            f"({cache_dir}); download them where there is network with "
            f"`python -c \"import timm; timm.create_model('{arch.timm_name}', pretrained=True)\"`, "
            "or point HF_HUB_CACHE at a cache that has them"
        )
    model = timm.create_model(arch.timm_name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": weights})
    p = model.pretrained_cfg
    preprocess = Preprocess(p["input_size"][-1], p["crop_pct"], tuple(p["mean"]), tuple(p["std"]), p["interpolation"])
    return Encoder(_freeze(model), arch, preprocess, spec, sha256_file(weights))
