"""MoCo v2's two-view augmentation as batched tensor ops.

Each view is random-resized-crop + flip, colour jitter (p), grayscale (p), Gaussian blur (p) and
normalisation, drawn independently per image but computed for the whole batch at once, so the
training step does no per-sample Python work and the same code runs on CPU or GPU tensors.
All randomness comes from the ``generator`` passed in, which makes a step's views a function of
the step's seed (exact resume, reproducible runs).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .recipe import AugmentCfg

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, with the rounding of torchvision's rgb_to_grayscale


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def crop_boxes(
    n: int, scale: tuple[float, float], ratio: tuple[float, float], g: torch.Generator, device: torch.device
) -> torch.Tensor:
    """RandomResizedCrop boxes for square images, as (N, 4) ``(cx, cy, w, h)`` fractions of the side.

    Like torchvision: area ~ U(scale), log aspect ~ U(log ratio), 10 tries for a box that fits,
    else the whole image.
    """
    tries = 10
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=g, device=device)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(
        n, tries, generator=g, device=device
    )
    aspect = torch.exp(log_r)
    w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)  # N x tries
    fits = (w <= 1) & (h <= 1)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(n, dtype=torch.long, device=device))
    w = torch.where(fits.any(1), w.gather(1, first[:, None]).squeeze(1), torch.ones(n, device=device))
    h = torch.where(fits.any(1), h.gather(1, first[:, None]).squeeze(1), torch.ones(n, device=device))
    cx = w / 2 + (1 - w) * torch.rand(n, generator=g, device=device)
    cy = h / 2 + (1 - h) * torch.rand(n, generator=g, device=device)
    return torch.stack([cx, cy, w, h], dim=1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box, mirror where ``flip``, and resize to ``size`` (bilinear), in one
    ``grid_sample``. x: (N, C, H, W) float, boxes: (N, 4) as from :func:`crop_boxes`, flip: (N,) bool."""
    cx, cy, w, h = boxes.unbind(1)
    sign = 1.0 - 2.0 * flip.to(x.dtype)
    zero = torch.zeros_like(cx)
    theta = torch.stack(
        [torch.stack([w * sign, zero, 2 * cx - 1], 1), torch.stack([zero, h, 2 * cy - 1], 1)], 1
    )  # N x 2 x 3, output [-1, 1] -> input [-1, 1]
    grid = F.affine_grid(theta.to(x.dtype), [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV with every channel in [0, 1]."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(1)
    h6 = (h % 1.0) * 6

    def channel(n: float) -> torch.Tensor:  # branch-free: c = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
        k = (h6 + n) % 6
        return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)

    return torch.stack([channel(5), channel(3), channel(1)], 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor[:, None, None, None]).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (mean + factor[:, None, None, None] * (x - mean)).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    gray = grayscale(x)
    return (gray + factor[:, None, None, None] * (x - gray)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + shift[:, None, None]) % 1.0
    return hsv_to_rgb(hsv)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own sigma (pixels), separably, with reflect padding.
    The kernel spans 3 sigma of the largest sigma, capped below the image side."""
    n, c, hgt, wid = x.shape
    radius = int(min(math.ceil(3 * float(sigma.max())), min(hgt, wid) - 1))
    if radius < 1:
        return x
    pos = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (pos[None, :] / sigma[:, None].clamp_min(1e-3)) ** 2)  # N x (2r+1)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # N*C x (2r+1)
    y = F.pad(x.reshape(1, n * c, hgt, wid), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, hgt, wid)


class TwoViewAugment(nn.Module):
    """Two independent MoCo v2 views of a uint8 batch (N, 3, S, S) -> two float (N, 3, s, s) batches,
    normalised with the recipe's mean and std."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: AugmentCfg, channels_last: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().div_(255)
        return self.view(x, generator), self.view(x, generator)

    @torch.no_grad()
    def view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One augmented view of a float batch in [0, 1]."""
        cfg, n, dev = self.cfg, len(x), x.device

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, generator=g, device=dev) < p

        boxes = crop_boxes(n, cfg.crop_scale, cfg.crop_ratio, g, dev)
        v = resized_crop(x, boxes, coin(cfg.flip_p), cfg.image_size)

        if cfg.jitter_p > 0 and any(cfg.jitter):
            v = torch.where(coin(cfg.jitter_p)[:, None, None, None], self._jitter(v, g), v)
        if cfg.grayscale_p > 0:
            v = torch.where(coin(cfg.grayscale_p)[:, None, None, None], grayscale(v).expand_as(v), v)
        if cfg.blur_p > 0 and cfg.blur_sigma[1] > 0:
            blur = coin(cfg.blur_p)
            if blur.any():
                sigma = _uniform(int(blur.sum()), *cfg.blur_sigma, g, dev)
                v = v.clone()
                v[blur] = gaussian_blur(v[blur], sigma)
        v = (v - self.mean) / self.std
        return v.contiguous(memory_format=torch.channels_last) if self.channels_last else v

    def _jitter(self, v: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """torchvision's ColorJitter with per-image factors; the order of the four ops is drawn once per batch."""
        b, c, s, h = self.cfg.jitter
        n, dev = len(v), v.device
        ops = [
            (b, lambda t: adjust_brightness(t, _uniform(n, max(0.0, 1 - b), 1 + b, g, dev))),
            (c, lambda t: adjust_contrast(t, _uniform(n, max(0.0, 1 - c), 1 + c, g, dev))),
            (s, lambda t: adjust_saturation(t, _uniform(n, max(0.0, 1 - s), 1 + s, g, dev))),
            (h, lambda t: adjust_hue(t, _uniform(n, -h, h, g, dev))),
        ]
        for i in torch.randperm(4, generator=g, device=dev).tolist():
            strength, op = ops[i]
            if strength > 0:
                v = op(v)
        return v
