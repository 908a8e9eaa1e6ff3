"""Evaluation preprocessing: the one transform that features are extracted with, everywhere.

An image is decoded to a square of side ``round(image_size / crop_pct)`` (shorter side resized,
centre-cropped, bicubic), centre-cropped to ``image_size`` and normalised. This is timm's
``crop_pct`` convention, so the same numbers go into an export's ``pretrained_cfg``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import torch

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
