"""The one writer (and reader) of Hub-ready model folders.

A folder holds ``model.safetensors`` (the backbone in timm's own key names, so timm loads it
strictly) and ``config.json`` in timm's Hub format (architecture, ``num_classes`` 0, features and a
``pretrained_cfg`` carrying lwzoo's evaluation preprocessing). Export, publish and the local zoo all
write through :func:`write_hub_folder`; reading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import timm
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .archs import Arch, get_arch
from .errors import LwzooError
from .files import public_mode
from .preprocess import Preprocess

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# Facts about the architecture that timm's own pretrained_cfg carries; its tag, licence, hub id
# and source URL belong to timm's ImageNet weights and are not copied.
_ARCH_FIELDS = ("pool_size", "first_conv", "classifier", "fixed_input_size")


def hub_config(arch: Arch, preprocess: Preprocess, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config.json`` as ``timm.create_model('hf-hub:...')`` reads it."""
    timm_cfg = timm.models.get_pretrained_cfg(arch.timm_name)
    arch_facts = {k: getattr(timm_cfg, k) for k in _ARCH_FIELDS if timm_cfg is not None and hasattr(timm_cfg, k)}
    return {
        "architecture": arch.timm_name,
        "num_classes": 0,
        "num_features": arch.feature_dim,
        "pretrained_cfg": {**arch_facts, **preprocess.timm_cfg(), "num_classes": 0},
        "lwzoo": {"arch": arch.name, **(extra or {})},
    }


def write_hub_folder(
    dest: Path,
    backbone: nn.Module,
    arch: Arch,
    preprocess: Preprocess,
    metadata: dict[str, str],
    training: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``model.safetensors`` (with string ``metadata``) and ``config.json`` into ``dest``;
    ``training`` (data, seed, steps, recipe) goes into config.json's ``lwzoo`` section."""
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, str(dest / WEIGHTS), metadata={k: str(v) for k, v in metadata.items()})
    public_mode(dest / WEIGHTS)  # safetensors writes 0600; every other file of the folder is 0644
    extra = {"lwzoo_version": metadata.get("lwzoo_version"), "training": training or {}}
    (dest / CONFIG).write_text(json.dumps(hub_config(arch, preprocess, extra), indent=2) + "\n")
    return [dest / WEIGHTS, dest / CONFIG]


def record_checksums(folder: Path, names: tuple[str, ...] = (WEIGHTS, "model.onnx", "model.int8.onnx")) -> None:
    """Write the sha256 of the model files into ``config.json`` (``lwzoo.files``), so a loader can
    tell a tampered or damaged download from the file that was published."""
    config = json.loads((folder / CONFIG).read_text())
    config["lwzoo"]["files"] = {n: sha256_file(folder / n) for n in names if (folder / n).is_file()}
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def verify_checksum(path: Path, config: dict[str, Any]) -> None:
    """Raise LwzooError unless ``path`` has the sha256 ``config.json`` recorded for its name."""
    expected = config.get("lwzoo", {}).get("files", {}).get(path.name)
    if expected is None:
        raise LwzooError(f"{CONFIG} records no checksum for {path.name}; export and publish it again with lwzoo")
    if sha256_file(path) != expected:
        raise LwzooError(
            f"'{path}' does not match the sha256 in {CONFIG}: the file was changed or damaged. "
            "Delete it (for a Hub download, its entry in the Hugging Face cache) and load again"
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_hub_config(folder: Path) -> tuple[Arch, Preprocess, dict[str, Any]]:
    """The arch and preprocessing a Hub folder's ``config.json`` declares."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text())
        cfg = config["pretrained_cfg"]
        arch = get_arch(config.get("lwzoo", {}).get("arch") or config["architecture"])
        preprocess = Preprocess(
            int(cfg["input_size"][-1]),
            float(cfg["crop_pct"]),
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
            cfg.get("interpolation", "bicubic"),
        )
    except FileNotFoundError:
        raise LwzooError(f"'{folder}' has no {CONFIG}; export the model again with `lwzoo export`") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise LwzooError(f"'{path}' is not a valid timm/lwzoo config ({type(e).__name__}: {e})") from None
    return arch, preprocess, config


def load_backbone(weights: Path, arch: Arch) -> nn.Module:
    """A timm backbone with the weights of a safetensors file, loaded strictly."""
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise LwzooError(f"'{weights}' is not a readable safetensors file ({e}); export it again") from None
    model = timm.create_model(arch.timm_name, pretrained=False, num_classes=0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise LwzooError(f"'{weights}' does not fit {arch.timm_name}: {str(e).splitlines()[0]}") from None
    return model
