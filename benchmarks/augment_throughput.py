"""Two-view MoCo v2 augmentation on CPU: lwzoo's batched tensor pipeline against the per-image PIL
pipeline of MoCo's reference code (torchvision transforms), at 32, 64 and 224 px.

Both produce two normalised views per image from the same recipe (crop 0.2-1, jitter .4/.4/.4/.1
at p .8, grayscale .2, blur .5, flip). Images/s counts source images (two views each).

    python benchmarks/augment_throughput.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision.transforms as T
from _results import write_section
from PIL import Image, ImageFilter

from lwzoo.augment import TwoViewAugment
from lwzoo.builtin_data import render_textures
from lwzoo.recipe import load_recipe


class PilBlur:
    """MoCo v2's GaussianBlur: PIL's filter with sigma drawn from [0.1, 2.0]."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=float(torch.empty(1).uniform_(0.1, 2.0))))


def pil_pipeline(size: int) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([PilBlur()], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=8.0, help="time each measurement at least this long")
    a = p.parse_args()
    rows = []
    for size in (32, 64, 224):
        decode = round(size * 8 / 7)
        images, _ = render_textures(a.batch, decode, seed=0)
        pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
        batched = TwoViewAugment(
            load_recipe("mocov2_resnet50", {"augment.image_size": size}).augment, channels_last=True
        )
        per_image = pil_pipeline(size)

        def run_batched(batched=batched, images=images) -> int:
            batched(images, torch.Generator().manual_seed(0))
            return len(images)

        def run_pil(pil=pil, per_image=per_image) -> int:
            for img in pil:
                per_image(img), per_image(img)
            return len(pil)

        results = {}
        for name, fn in (("lwzoo batched (torch, CPU)", run_batched), ("per-image PIL (torchvision)", run_pil)):
            fn()  # warm-up
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < a.seconds:
                done += fn()
            results[name] = done / (time.perf_counter() - t0)
        ratio = results["lwzoo batched (torch, CPU)"] / results["per-image PIL (torchvision)"]
        for name, ips in results.items():
            rows.append(
                f"| {size} | {name} | {ips:.0f} |" + (f" {ratio:.2f}x |" if name.startswith("lwzoo") else " 1.00x |")
            )
            print(rows[-1], flush=True)
    body = (
        "## Augmentation throughput (CPU)\n\n"
        f"Two MoCo v2 views per image, batches of {a.batch} images decoded at size * 8/7; each measurement runs "
        f">= {a.seconds:g} s after a warm-up. Single process, torch's default threads.\n\n"
        "| px | pipeline | images/s | batched vs PIL |\n|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("augment_throughput", body)


if __name__ == "__main__":
    main()
