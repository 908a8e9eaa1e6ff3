"""Two-view MoCo v2 augmentation on CPU: lwzoo's batched tensor pipeline against the per-image PIL
pipeline of MoCo's reference code (torchvision transforms), at 32, 64 and 224 px.

Both produce two normalised views per image from the same recipe (crop 0.2-1, jitter .4/.4/.4/.1
at p .8, grayscale .2, blur .5, flip). Images/s counts source images (two views each).

The two are timed in interleaved rounds (batched, PIL, batched, PIL, ... at each torch thread count),
so a load that comes and goes on a shared machine hits both; the table gives each one's median round
and the range. Rows at 1 torch thread compare like with like (PIL's pipeline runs on one core, as in a
DataLoader worker, where torch sets one thread); rows at torch's default thread count show what a
training process gets.

    python benchmarks/augment_throughput.py             # about 5 minutes on 2 busy CPU cores
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Callable

import torch
from _common import pil_pipeline
from _results import write_section
from PIL import Image

from lwzoo.augment import TwoViewAugment
from lwzoo.builtin_data import render_textures
from lwzoo.recipe import load_recipe

BATCHED, PIL = "lwzoo batched", "per-image PIL"


def pipelines(size: int, batch: int) -> dict[str, Callable[[], int]]:
    """The two pipelines on the same ``batch`` images decoded at size * 8/7; each call makes two views of
    every image and returns the number of images."""
    images, _ = render_textures(batch, round(size * 8 / 7), seed=0)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    batched = TwoViewAugment(load_recipe("mocov2_resnet50", {"augment.image_size": size}).augment, channels_last=True)
    per_image = pil_pipeline(size)
    seeds = itertools.count()

    def run_batched() -> int:
        batched(images, torch.Generator().manual_seed(next(seeds)))
        return len(images)

    def run_pil() -> int:
        for img in pil:
            per_image(img), per_image(img)
        return len(pil)

    return {BATCHED: run_batched, PIL: run_pil}


def images_per_second(fn: Callable[[], int], seconds: float) -> float:
    """Whole calls of ``fn`` until ``seconds`` have passed."""
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done += fn()
    return done / (time.perf_counter() - t0)


def measure(size: int, batch: int, threads: list[int], rounds: int, seconds: float) -> dict[tuple[int, str], list]:
    """images/s of each (threads, pipeline), one value per round, the pipelines interleaved within a round."""
    fns = pipelines(size, batch)
    for fn in fns.values():
        fn()  # warm-up
    rates: dict[tuple[int, str], list[float]] = {}
    for _ in range(rounds):
        for n in threads:
            torch.set_num_threads(n)
            for name, fn in fns.items():
                rates.setdefault((n, name), []).append(images_per_second(fn, seconds))
    return rates


def row(size: int, n: int, rates: dict[tuple[int, str], list[float]]) -> str:
    def cell(name: str) -> str:
        r = rates[n, name]
        return f"{statistics.median(r):.0f} ({min(r):.0f}-{max(r):.0f})"

    ratio = statistics.median(rates[n, BATCHED]) / statistics.median(rates[n, PIL])
    return f"| {size} | {n} | {cell(BATCHED)} | {cell(PIL)} | {ratio:.2f}x |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 224])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the table gives the median")
    p.add_argument("--seconds", type=float, default=2.0, help="time each pipeline at least this long per round")
    p.add_argument("--threads", type=int, nargs="+", help="torch thread counts (default: 1 and torch's default)")
    a = p.parse_args()
    threads = a.threads or sorted({1, torch.get_num_threads()})
    load_before = os.getloadavg()[0]
    rows = []
    for size in a.sizes:
        rates = measure(size, a.batch, threads, a.rounds, a.seconds)
        for n in threads:
            rows.append(row(size, n, rates))
            print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]
    body = (
        "## Augmentation throughput (CPU)\n\n"
        f"Two MoCo v2 views per image, batches of {a.batch} images decoded at size * 8/7. {a.rounds} rounds; in "
        f"each, at each torch thread count, the batched pipeline then the per-image one, each for >= {a.seconds:g} s "
        "of whole batches, after one warm-up batch each. images/s: median round (slowest-fastest round); the "
        "ratio is of the medians. Single process. PIL's pipeline is single-threaded apart from ToTensor and "
        "Normalize; lwzoo's colour stage runs on one torch thread whatever the setting (its crop uses the "
        f"setting). Load average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end.\n\n"
        "| px | torch threads | lwzoo batched (images/s) | per-image PIL (images/s) | batched / PIL |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("augment_throughput", body)


if __name__ == "__main__":
    main()
