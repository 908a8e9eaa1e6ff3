"""Evaluation preprocessing: the one transform that features are extracted with, everywhere.

An image is decoded to a square of side ``round(image_size / crop_pct)`` (shorter side resized,
centre-cropped, bicubic: :func:`eval_square`), centre-cropped to ``image_size`` and normalised. This
is timm's ``crop_pct`` convention, so the same numbers go into an export's ``pretrained_cfg``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .recipe import Recipe


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> Preprocess:
        a = recipe.augment
        return cls(a.image_size, a.eval_crop_pct, tuple(a.mean), tuple(a.std))

    @property
    def decode_size(self) -> int:
        return round(self.image_size / self.crop_pct)

    def key(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:12]

    def timm_cfg(self) -> dict[str, Any]:
        """The ``pretrained_cfg`` fields timm reads for data configuration."""
        return {
            "input_size": (3, self.image_size, self.image_size),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
            "mean": tuple(self.mean),
            "std": tuple(self.std),
        }

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, D, D) at ``decode_size`` -> normalised float (N, 3, S, S), channels-last."""
        off = (images.shape[-1] - self.image_size) // 2
        x = images[..., off : off + self.image_size, off : off + self.image_size].float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def eval_square(img: Image.Image, size: int) -> torch.Tensor:
    """The evaluation decode: an image as RGB (greyscale, palette and alpha images converted; alpha
    composited on white), its centred square (side = the shorter side) resized to ``size`` (bicubic),
    which is resizing the shorter side to ``size`` and centre-cropping: (3, size, size) uint8.

    Features are extracted through this one function (``FeatureExtractor.preprocess``, ``lwzoo embed``),
    so it must not follow changes to how training images are stored.
    """
    img = to_rgb(img)
    if img.size != (size, size):
        img = ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC)
    return chw_uint8(img)


def chw_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB image as a (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_rgb(img: Image.Image) -> Image.Image:
    """An image as 8-bit RGB, as it looks: EXIF orientation applied, greyscale and palette images
    converted, alpha composited on white, and high-bit-depth greyscale scaled to 8 bits.

    PIL's own ``convert("RGB")`` clips 16- and 32-bit greyscale (a 16-bit PNG, a scientific TIFF) at 255,
    so a mid-grey 32896 comes out white, and it truncates float images in [0, 1] to black.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = Image.fromarray(_to_uint8(np.asarray(img), img.mode))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


def _to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Greyscale pixels of a 16-bit, 32-bit integer or float image scaled to uint8 by their format's range:
    16 bits (and 32-bit integers holding them, as PIL reads some 16-bit files) by 65535 / 255, floats in
    [0, 1] by 255; other integer or float data by its own maximum."""
    x = pixels.astype(np.float64)
    top = float(x.max()) if x.size else 0.0
    if mode == "F":
        scale = 255.0 if top <= 1.0 else 255.0 / max(top, 1e-12)
    elif mode.startswith("I;16") or top <= 65535:
        scale = 1.0 if mode == "I" and top <= 255 else 255.0 / 65535.0
    else:
        scale = 255.0 / top
    return np.clip(np.rint(x * scale), 0, 255).astype(np.uint8)
