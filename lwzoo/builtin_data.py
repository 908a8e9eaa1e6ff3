"""The built-in demo set: ten classes of two-tone textures, generated from a fixed seed, nothing downloaded.

Each class is a texture family (stripes, checks, dots, rings, ...) drawn at a random frequency, phase
and centre, in two tones of one random colour, with pixel noise. The colour says nothing about the
class, so an encoder has to see the texture to score well. A randomly initialised MobileNet-V3 is
swayed by colour and contrast; a few minutes of MoCo on CPU teaches it the textures (measured in
benchmarks/RESULTS.md). It is a demo set for trying lwzoo in minutes, not a benchmark: point
``--data`` at a folder of your own images for real use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CLASSES = ["hstripes", "vstripes", "checks", "dots", "rings", "spokes", "blobs", "speckle", "plaid", "crosshatch"]
SPLITS = {"train": (2048, 0), "val": (1024, 1)}  # images per split, seed offset
SEED = 20221214  # arXiv 2212.07158's submission date


def _hsv(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N,) hue, saturation, value in [0, 1] -> (N, 3) RGB."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def render_textures(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (N, 3, size, size) uint8 and balanced labels (N,), a pure function of the arguments."""
    g = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*(shape or (n,)), generator=g)

    labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    xx, yy = xx[None], yy[None]
    freq = (u(2.5, 5.0) * math.pi)[:, None, None]  # 2.5-5 cycles across the image
    phase = u(0, 2 * math.pi)[:, None, None]
    cx, cy = u(-0.5, 0.5)[:, None, None], u(-0.5, 0.5)[:, None, None]
    radius, angle = torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2), torch.atan2(yy - cy, xx - cx)
    blobs = F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=size, mode="bicubic", align_corners=False)[:, 0]
    speckle = F.interpolate(torch.randn(n, 1, 12, 12, generator=g), size=size, mode="bicubic", align_corners=False)[
        :, 0
    ]
    sx, sy = torch.sin(freq * xx + phase), torch.sin(freq * yy + phase)
    patterns = torch.stack(
        [
            sy,  # hstripes
            sx,  # vstripes
            2 * sx * sy,  # checks
            torch.cos(freq * xx + phase) + torch.cos(freq * yy + phase),  # dots
            torch.sin(1.5 * freq * radius + phase),  # rings
            torch.sin(6 * angle + phase),  # spokes
            blobs,
            speckle,
            sx + sy,  # plaid
            torch.sin(0.7 * freq * (xx + yy) + phase) + torch.sin(0.7 * freq * (xx - yy) + phase),  # crosshatch
        ],
        dim=1,
    )  # N x classes x H x W
    p = patterns.gather(1, labels[:, None, None, None].expand(n, 1, size, size))  # N x 1 x H x W
    p = (p - p.mean(dim=(2, 3), keepdim=True)) / (p.std(dim=(2, 3), keepdim=True) + 1e-6)
    p = torch.sigmoid(2.5 * p)  # soft two-tone mask

    hue, sat = u(0, 1), u(0.3, 0.7)
    dark = _hsv(hue, sat, u(0.05, 0.35))[:, :, None, None]
    light = _hsv((hue + u(-0.1, 0.1)) % 1.0, sat, u(0.65, 1.0))[:, :, None, None]
    img = light * p + dark * (1 - p) + 0.04 * torch.randn(n, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), labels
