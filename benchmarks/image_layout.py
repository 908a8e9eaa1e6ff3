"""What storing training images whole costs and buys, against the centre squares lwzoo stored before.

For a folder of photo-like JPEGs (4:3, 3:4, 16:9 and 1:1, 640-1600 px on the long side, written to a temp
folder), it decodes the set both ways through ``lwzoo.data.load_images`` at 224-px training's default sizes
(whole images at ``default_decode_size(224)`` = 336 px; centre squares at 224 * 8/7 = 256 px, the old
default), and reports:

- memory: bytes of the decoded uint8 tensor, per 10,000 images;
- decode time per image (the workers of ``data.workers``);
- coverage: the share of MoCo v2 crops (``lwzoo.augment.crop_boxes``) that reach the outer eighth of a 4:3
  photo's width, which a centre square cannot show at all;
- resolution: the share of crops whose narrower side spans at least 224 stored pixels (not upsampled).

    python benchmarks/image_layout.py --images 400           # ~1 minute on 2 cores
    python benchmarks/image_layout.py --images 400 --write   # also update benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_section
from PIL import Image

from lwzoo.augment import crop_boxes
from lwzoo.builtin_data import render_textures
from lwzoo.data import default_workers, load_images
from lwzoo.recipe import default_decode_size, load_recipe

SHAPES = [(4, 3), (3, 4), (16, 9), (1, 1)]


def write_photos(folder: Path, n: int) -> None:
    """``n`` JPEGs of the built-in textures at photo sizes and aspect ratios (quality 90)."""
    textures, _ = render_textures(n, 256, seed=0)
    rng = np.random.default_rng(0)
    for i in range(n):
        w_ratio, h_ratio = SHAPES[i % len(SHAPES)]
        long_side = int(rng.integers(640, 1601))
        size = (
            (long_side, long_side * h_ratio // w_ratio)
            if w_ratio >= h_ratio
            else (long_side * w_ratio // h_ratio, long_side)
        )
        image = Image.fromarray(textures[i].permute(1, 2, 0).numpy()).resize(size, Image.Resampling.BICUBIC)
        image.save(folder / f"{i:05d}.jpg", quality=90)


def crop_shares(image_size: int, stored: int, aspect: float, n: int = 100_000) -> tuple[float, float]:
    """(share of crops reaching an outer eighth of the width, share not upsampled) for whole images stored at
    ``stored`` px with aspect ``aspect`` (width / height), under the tuned recipe's crop scale and ratio."""
    a = load_recipe("mobilenetv3_large").augment
    g = torch.Generator().manual_seed(0)
    cx, _, w, h = crop_boxes(n, a.crop_scale, a.crop_ratio, g, torch.device("cpu"), torch.full((n,), aspect)).unbind(1)
    outer = ((cx - w / 2) < 1 / 8) | ((cx + w / 2) > 7 / 8)
    sharp = torch.minimum(w, h) * stored >= image_size
    return outer.float().mean().item(), sharp.float().mean().item()


def measure(n: int, image_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_photos(folder, n)
        rows = {}
        for name, size, whole in (("centre squares (before)", round(image_size * 8 / 7), False),
                                  ("whole images (now)", default_decode_size(image_size), True)):  # fmt: skip
            t0 = time.perf_counter()
            images = load_images(folder, size, workers=default_workers(), use_cache=False, whole=whole)
            seconds = time.perf_counter() - t0
            per_image = images.images.numel() * images.images.element_size() / len(images)
            outer, sharp = (
                crop_shares(image_size, size, 4 / 3) if whole else (0.0, crop_shares(image_size, size, 1.0)[1])
            )
            rows[name] = {"size": size, "gib_per_10k": per_image * 10_000 / 2**30, "ms_per_image": 1e3 * seconds / n,
                          "outer_eighth": outer, "not_upsampled": sharp}  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = measure(args.images, args.image_size)
    lines = [
        "## Training image layout: whole images against centre squares (CPU)",
        "",
        f"{args.images} photo-like JPEGs (4:3, 3:4, 16:9, 1:1; 640-1600 px long side), {args.image_size}-px training, "
        f"decoded with {default_workers()} workers; crop shares over 100,000 MoCo v2 crops of a 4:3 photo.",
        "",
        "| stored layout | side px | GiB per 10k images | decode ms / image | crops reaching the outer eighths | "
        "crops not upsampled |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['size']} | {r['gib_per_10k']:.2f} | {r['ms_per_image']:.1f} | "
                     f"{100 * r['outer_eighth']:.0f}% | {100 * r['not_upsampled']:.0f}% |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("image_layout", text)


if __name__ == "__main__":
    main()
