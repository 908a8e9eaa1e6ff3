"""Where a MoCo step's time goes on one GPU: wall ms per step of lwzoo's Engine, with the GPU's own
kernel time and kernel count per step from torch.profiler, for a few variants of the step.

It answers how many small-net units can share one GPU: if kernel time is a small part of the wall
time, the step is bound by the host launching kernels, and concurrency (or fewer launches) pays.

    python benchmarks/gpu_step_profile.py                  # on the GPU machine (~2 minutes)

(benchmarks/gpu_check.sh times the 32-px step before and after issue 16's split BatchNorm and train.compile
against this profile's 233 ms; this script keeps the variants: fp32, one BN group, asymmetric, one thread.)

Each row is also written to RESULTS.md as it comes (section gpu_step_profile), so a run stopped by
its time limit keeps what it measured.
    python benchmarks/gpu_step_profile.py --device cpu --steps 2 --warmup 1 --nets mobilenetv3_large
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import sync
from _results import write_section
from torch.profiler import ProfilerActivity, profile

from lwzoo.archs import get_arch
from lwzoo.engine import Engine
from lwzoo.recipe import load_recipe

HEADNOTE = (
    "One MoCo step of lwzoo's Engine (symmetric loss unless noted, batch 256, K 4096, key BN over 8 groups as "
    "the recipes say: 8 chunked forwards until issue 16, one split-BatchNorm forward since), on random uint8 "
    "images already on the device. Wall: mean of the timed steps after "
    "warm-up; GPU kernel time and kernel count: torch.profiler over one more step."
)
COMMON = {"moco.queue_size": 4096, "train.batch_size": 256, "augment.blur_p": 0.0, "moco.momentum": 0.99}


def measure(net: str, size: int, extra: dict, amp: bool, steps: int, warmup: int, device: torch.device) -> str:
    recipe = load_recipe(get_arch(net).recipe, {**COMMON, "augment.image_size": size, **extra})
    engine = Engine(get_arch(net), recipe, steps_per_epoch=1000, seed=0, device=device)
    if not amp:
        engine.amp = None
    images = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8, device=device)

    for _ in range(warmup):
        engine.train_step(images)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.train_step(images)
    sync(device)
    wall_ms = (time.perf_counter() - t0) / steps * 1000
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof_steps = 1  # the profiler's own bookkeeping of ~20k events per step takes seconds
    with profile(activities=acts) as prof:
        for _ in range(prof_steps):
            engine.train_step(images)
        sync(device)
    try:  # kernel events of the profiled steps (attribute names vary across torch releases)
        events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        total_us = sum(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0) for e in events)
        kernel_ms, kernels = (total_us / 1000 / prof_steps, len(events) / prof_steps) if events else (float("nan"), 0)
    except Exception as e:  # noqa: BLE001 -- the timing above still stands
        print(f"(profiler: {e})")
        kernel_ms, kernels = float("nan"), 0
    label = ", ".join(f"{k}={v}" for k, v in extra.items()) or "tuned recipe"
    return (
        f"| {net} | {size} | {label} | {'bf16' if amp else 'fp32'} | {torch.get_num_threads()} | {wall_ms:.1f} "
        f"| {kernel_ms:.1f} | {kernels:.0f} | {256 / wall_ms * 1000:.0f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--nets", nargs="*", default=["mobilenetv3_large", "effnet_b0"])
    a = p.parse_args()
    device = torch.device(a.device)
    rows = [
        "| net | px | variant | amp | threads | wall ms/step | GPU kernel ms/step | kernels/step | images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def emit(row: str) -> None:
        print(row, flush=True)
        rows.append(row)
        write_section("gpu_step_profile", f"## GPU step profile\n\n{HEADNOTE}\n\n" + "\n".join(rows))

    variants = [
        ({}, True, None),
        ({}, False, None),
        ({"moco.key_bn_splits": 1}, True, None),
        ({"moco.symmetric": False}, True, None),
        ({}, True, 1),
    ]
    for net in a.nets:
        for extra, amp, threads in variants if net == a.nets[0] else variants[:1]:
            default_threads = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                emit(measure(net, 32, extra, amp, a.steps, a.warmup, device))
            except Exception as e:  # noqa: BLE001 -- report and go on to the next variant
                emit(f"| {net} | 32 | {extra} | failed: {e!r} |")
            torch.set_num_threads(default_threads)
    for net in a.nets if device.type == "cuda" else []:
        emit(measure(net, 224, {}, True, max(2, a.steps // 3), 2, device))


if __name__ == "__main__":
    main()
