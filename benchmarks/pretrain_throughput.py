"""Images/s of lwzoo's pretraining step on this machine, for both nets at 32 and 64 px, with
channels_last on and off.

One "image" is one training image: its two views, both query forwards and backwards (symmetric
loss) and both key forwards, the augmentation and the queue update included, exactly as
``lwzoo.pretrain`` runs them.

    python benchmarks/pretrain_throughput.py            # writes the section in benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import write_section

from lwzoo.archs import create_backbone, get_arch
from lwzoo.augment import TwoViewAugment
from lwzoo.builtin_data import render_textures
from lwzoo.engine import moco_step, param_groups
from lwzoo.losses import SmoothedInfoNCE
from lwzoo.moco import MoCo, QueryEncoder
from lwzoo.recipe import load_recipe


def images_per_second(arch: str, size: int, channels_last: bool, batch: int, steps: int, warmup: int) -> float:
    r = load_recipe(get_arch(arch).recipe, {"augment.image_size": size, "augment.blur_p": 0.0})
    torch.manual_seed(0)
    model = MoCo(create_backbone(arch, True), get_arch(arch).feature_dim, r.moco.dim, r.moco.mlp_hidden, 4096, 4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(param_groups(model, 1e-5, False), lr=0.01, momentum=0.9)
    criterion = SmoothedInfoNCE(r.moco.temperature, r.loss.topk)
    augment = TwoViewAugment(r.augment, channels_last=channels_last)
    query = QueryEncoder(model.backbone, model.projector)
    images, _ = render_textures(batch * 4, size, seed=0)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(step)
        x1, x2 = augment(images[(step % 4) * batch : (step % 4 + 1) * batch], gen)
        model.update_key_encoder(0.99)
        loss, keys = moco_step(model, query, criterion, x1, x2, 0.1, True, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.queue.push(keys)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    a = p.parse_args()
    rows = []
    for arch in ("mobilenetv3_large", "effnet_b0"):
        for size in (32, 64):
            nchw = images_per_second(arch, size, False, a.batch, a.steps, a.warmup)
            cl = images_per_second(arch, size, True, a.batch, a.steps, a.warmup)
            rows.append(f"| {arch} | {size} | {nchw:.0f} | {cl:.0f} | {cl / nchw:.2f}x |")
            print(rows[-1], flush=True)
    body = (
        f"Symmetric MoCo step (tuned recipe, K 4096, 4 key-BN splits, smoothed InfoNCE), batch {a.batch}, "
        f"{a.steps} timed steps after {a.warmup} warm-up steps, CPU, fp32.\n\n"
        "| arch | px | images/s NCHW | images/s channels_last | speed-up |\n|---|---|---|---|---|\n" + "\n".join(rows)
    )
    if not a.no_write:
        write_section("pretrain_throughput", "## Pretraining step throughput (CPU)\n\n" + body)


if __name__ == "__main__":
    main()
