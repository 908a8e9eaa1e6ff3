"""GPU smoke run and timings for one CUDA device (run by gpu_check.sh, at most ~6 minutes on an H100).

1. lwzoo's GPU path: ``lwzoo.pretrain`` of MobileNet-V3-Large at 224 px with AMP (bf16) and
   channels_last; the built-in data, rendered at 256 px, decoded once and kept on the GPU as uint8,
   augmented there in batched ops. Images/s from its metrics.jsonl, after the first logging window.
2. A plain loop for comparison, in the same run: the same MoCo model, eager fp32 NCHW, fed by a CPU
   DataLoader with MoCo's per-image PIL augmentation (torchvision transforms).
3. Peak GPU memory of each.

    python benchmarks/gpu_check.py --steps 300          # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --steps 3 --image-size 32 --plain-steps 2   # a dry run anywhere
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _results import write_section
from augment_throughput import pil_pipeline
from torch.utils.data import DataLoader, Dataset

from lwzoo.archs import create_backbone, get_arch
from lwzoo.builtin_data import builtin_images
from lwzoo.engine import moco_step
from lwzoo.losses import SmoothedInfoNCE
from lwzoo.metrics import read_metrics
from lwzoo.moco import MoCo, QueryEncoder
from lwzoo.pretrain import pretrain


class PilPairs(Dataset):
    def __init__(self, images: torch.Tensor, size: int) -> None:
        from PIL import Image

        self.pil = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in images]
        self.transform = pil_pipeline(size)

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int):
        return self.transform(self.pil[i]), self.transform(self.pil[i])


def plain_loop(size: int, batch: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Images/s and peak GPU GiB of eager fp32 NCHW training fed by per-image PIL augmentation."""
    images = builtin_images("train", round(size * 8 / 7)).images
    loader = DataLoader(PilPairs(images, size), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=min(16, os.cpu_count() or 1), persistent_workers=True)  # fmt: skip
    torch.manual_seed(0)
    model = MoCo(create_backbone("mobilenetv3_large", True), get_arch("mobilenetv3_large").feature_dim,
                 128, 2048, 4096, 8).to(device)  # fmt: skip
    query = QueryEncoder(model.backbone, model.projector)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    criterion = SmoothedInfoNCE(0.1, 5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done, t0, warm = 0, None, 5
    while done < steps + warm:
        for x1, x2 in loader:
            if done == warm:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
            model.update_key_encoder(0.99)
            loss, keys = moco_step(model, query, criterion, x1, x2, 0.1, True, None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.queue.push(keys)
            done += 1
            if done >= steps + warm:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return steps * batch / (time.perf_counter() - t0), peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--plain-steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    overrides = [
        f"augment.image_size={a.image_size}", f"data.decode_size={round(a.image_size * 8 / 7)}",
        f"train.batch_size={a.batch}", "train.epochs=1000", "train.log_every=20", "moco.queue_size=4096",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = pretrain("mobilenetv3_large", recipe="mobilenetv3_large", overrides=overrides, data="builtin",
                          out=Path(tmp) / "run", until_step=a.steps, device=a.device, verbose=False)  # fmt: skip
        wall = time.perf_counter() - t0
        rows = [r for r in read_metrics(Path(tmp) / "run" / "metrics.jsonl") if r["kind"] == "step"]
    lwzoo_ips = sum(r["images_per_s"] for r in rows[1:]) / max(1, len(rows[1:]))
    lwzoo_peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    plain_ips, plain_peak = plain_loop(a.image_size, a.batch, a.plain_steps, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    body = (
        f"## GPU check ({name})\n\n"
        f"MobileNet-V3-Large MoCo steps, symmetric loss, batch {a.batch}, {a.image_size} px, K 4096; "
        f"lwzoo ran {result.step} steps in {wall:.0f} s (data generation and queue fill included), "
        f"loss {result.loss:.3f}.\n\n"
        "| path | images/s | peak GPU memory GiB |\n|---|---|---|\n"
        f"| lwzoo: AMP bf16, channels_last, data and augmentation on the GPU | {lwzoo_ips:.0f} "
        f"| {lwzoo_peak:.1f} |\n"
        f"| plain: eager fp32 NCHW, CPU DataLoader with per-image PIL augmentation | {plain_ips:.0f} "
        f"| {plain_peak:.1f} |\n"
    )
    print(body)
    write_section("gpu_check", body)


if __name__ == "__main__":
    main()
