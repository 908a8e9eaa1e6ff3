"""Frozen features of an image set, extracted once and cached on disk.

The cache key covers the encoder's content (checkpoint digest), the data's content (files, sizes,
mtimes) and the preprocessing, so a repeated evaluation never runs the backbone again and a changed
input never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from .checkpoint import atomic_save
from .data import ImageSet, default_workers
from .env import cache_dir
from .preprocess import Preprocess
from .progress import SILENT, Progress

log = logging.getLogger("lwzoo")
FORMAT = "lwzoo-features/1"


@dataclass
class Features:
    """Pooled backbone features (N, D) float32, their labels (N,) and class names."""

    features: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    cached: bool = False
    seconds: float = 0.0


def features_key(identity: str, images: ImageSet, preprocess: Preprocess) -> str:
    return hashlib.sha256(f"{FORMAT}|{identity}|{images.key}|{preprocess.key()}".encode()).hexdigest()[:32]


@torch.no_grad()
def compute_features(
    backbone: nn.Module,
    preprocess: Preprocess,
    images: ImageSet,
    device: torch.device,
    batch_size: int = 256,
    desc: str = "features",
    progress: Progress = SILENT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the backbone in eval mode over every image once: (N, D) float32 features on the CPU and
    the indices of the images they belong to (unreadable streamed images are left out)."""
    was_training = backbone.training
    backbone.eval()
    amp = device.type == "cuda"
    feats: list[torch.Tensor] = []
    index: list[torch.Tensor] = []
    workers = default_workers() if images.images is None else 0
    try:
        with progress.counter(len(images), desc, "img") as bar:
            for batch, idx in images.ordered_batches(batch_size, workers=workers):
                x = preprocess(batch.to(device, non_blocking=True))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    feats.append(backbone(x).float().cpu())
                index.append(idx)
                bar.update(len(batch))
    finally:
        backbone.train(was_training)
    return torch.cat(feats), torch.cat(index)


def extract_features(
    backbone: nn.Module,
    identity: str,
    preprocess: Preprocess,
    images: ImageSet,
    device: torch.device,
    batch_size: int = 256,
    use_cache: bool = True,
    progress: Progress = SILENT,
) -> Features:
    """Features of a labelled image set, from the cache when the same (encoder, data, transform) ran before."""
    if images.labels is None:
        raise ValueError("extract_features needs a labelled image set")
    path = cache_dir() / "features" / f"{features_key(identity, images, preprocess)}.pt"
    if use_cache and path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("format") == FORMAT:
                return Features(cached["features"].float(), cached["labels"], list(cached["classes"]), cached=True)
        except Exception as e:  # a damaged cache file costs a recomputation, nothing more
            log.warning("ignoring unreadable feature cache %s (%s)", path, e)
    t0 = time.perf_counter()
    feats, index = compute_features(
        backbone, preprocess, images, device, batch_size, f"features {images.source}", progress
    )
    feats = feats.half()  # stored in half precision; round now so a cached rerun gives identical results
    labels, seconds = images.labels[index], time.perf_counter() - t0
    if use_cache:
        try:
            atomic_save({"format": FORMAT, "features": feats, "labels": labels, "classes": images.classes}, path)
        except OSError as e:
            log.warning("could not write feature cache %s (%s)", path, e)
    return Features(feats.float(), labels, list(images.classes), cached=False, seconds=seconds)
