"""Speed of lwzoo's pretraining step, ``Engine.train_step``, on this machine.

Default: images/s for both nets at 32 and 64 px, with channels_last on and off. One "image" is one
training image: its two views, both query forwards and backwards (symmetric loss), both key forwards,
the augmentation and the queue update, as ``lwzoo.pretrain`` runs them.

    python benchmarks/pretrain_throughput.py            # writes the section in benchmarks/RESULTS.md

``--compile``: the eager step against ``train.compile`` for what ``lwzoo pretrain mobilenetv3_large``
runs on the built-in data (the demo recipe) and for the tuned recipe at 32 px there. Each run is a fresh
process with an empty inductor cache (a user's first compiled run; ``--warm`` adds a run on the cache
the cold run left), timing every step from the first, so compiling is counted: the step compiles at
step 0 and its optimizer part once more at step 1 (when SGD's momentum buffers appear); the schedules
are tensors to the graphs, so nothing recompiles later. Runs are interleaved (eager, compiled, eager,
compiled, ...) so a load that comes and goes on a shared machine hits both.

    python benchmarks/pretrain_throughput.py --compile --repeats 3     # about an hour on 2 busy CPU cores
    python benchmarks/pretrain_throughput.py --compile --device cuda --modes false default reduce-overhead
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from _results import write_section

from lwzoo.archs import get_arch
from lwzoo.augment import TwoViewAugment
from lwzoo.builtin_data import render_textures
from lwzoo.config import parse_overrides
from lwzoo.data import builtin_images
from lwzoo.engine import Engine
from lwzoo.recipe import load_recipe

# (arch, recipe, overrides): the runs --compile compares, all on the built-in data (2,048 images at 32 px)
RUNS = {
    "demo": ("mobilenetv3_large", "demo", {}),
    # the tuned recipe at 32 px; lwzoo pretrain caps its queue to 1,024 keys for 2,048 images
    "tuned-32px": (
        "mobilenetv3_large",
        "mobilenetv3_large",
        {"augment.image_size": 32, "data.decode_size": 32, "moco.queue_size": 1024},
    ),
}
DEMO_STEPS = 576  # the demo recipe's run: 36 epochs x 16 steps


def images_per_second(arch: str, size: int, channels_last: bool, batch: int, steps: int, warmup: int) -> float:
    overrides = {
        "augment.image_size": size,
        "augment.blur_p": 0.0,
        "train.batch_size": batch,
        "moco.queue_size": 4096,
        "moco.key_bn_splits": 4,
        "optim.warmup_epochs": 0,  # smoothed InfoNCE (alpha > 0) from the first step
    }
    r = load_recipe(get_arch(arch).recipe, overrides)
    engine = Engine(get_arch(arch), r, steps_per_epoch=1000, seed=0, device=torch.device("cpu"))
    if not channels_last:  # the engine trains channels_last; this table says what that buys
        engine.model.to(memory_format=torch.contiguous_format)
        engine.augment = TwoViewAugment(r.augment, channels_last=False)
    images, _ = render_textures(batch * 4, size, seed=0)
    t0 = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        engine.train_step(images[(step % 4) * batch : (step % 4 + 1) * batch])
    return steps * batch / (time.perf_counter() - t0)


def throughput_table(a: argparse.Namespace) -> None:
    rows = []
    for arch in ("mobilenetv3_large", "effnet_b0"):
        for size in (32, 64):
            nchw = images_per_second(arch, size, False, a.batch, a.steps, a.warmup)
            cl = images_per_second(arch, size, True, a.batch, a.steps, a.warmup)
            rows.append(f"| {arch} | {size} | {nchw:.0f} | {cl:.0f} | {cl / nchw:.2f}x |")
            print(rows[-1], flush=True)
    body = (
        f"`Engine.train_step` of the tuned recipe (symmetric, K 4096, 4 key-BN groups, smoothed InfoNCE), batch "
        f"{a.batch}, {a.steps} timed steps after {a.warmup} warm-up steps, CPU, fp32, eager.\n\n"
        "| arch | px | images/s NCHW | images/s channels_last | speed-up |\n|---|---|---|---|---|\n" + "\n".join(rows)
    )
    if not a.no_write:
        write_section("pretrain_throughput", "## Pretraining step throughput (CPU)\n\n" + body)


def step_times(run: str, mode: str, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of a fresh Engine's first ``steps`` steps on the built-in data, compiling included."""
    arch, recipe, overrides = RUNS[run]
    r = load_recipe(recipe, {**overrides, **parse_overrides([f"train.compile={mode}"])})
    images = builtin_images("train", r.data.decode_size or round(r.augment.image_size * 8 / 7))
    engine = Engine(get_arch(arch), r, len(images) // r.train.batch_size, seed=0, device=device)
    batches = (b for epoch in itertools.count() for b in images.batches(r.train.batch_size, epoch, seed=0))
    times = []
    for batch, aspects in itertools.islice(batches, steps):
        t0 = time.perf_counter()
        loss = engine.train_step(batch, aspects)
        loss.item()  # the step is done, on a GPU too
        times.append(time.perf_counter() - t0)
    return times


def one_run(run: str, mode: str, steps: int, device: str, cache: str) -> dict:
    """``step_times`` in a child process whose inductor cache is the folder ``cache``."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
    args = [sys.executable, __file__, "--one", run, mode, "--device", device, "--steps", str(steps)]
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{run} {mode}: {proc.stderr[-2000:]}")
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    steady = statistics.median(times[-10:])
    return {"first_s": times[0], "steady_ms": steady * 1000, "run_s": sum(times) + (DEMO_STEPS - len(times)) * steady}


def compile_table(a: argparse.Namespace) -> None:
    """Interleaved repeats of every mode per run; medians over repeats."""
    kinds = [(m, "cold") for m in a.modes] + ([(m, "warm") for m in a.modes if m != "false"] if a.warm else [])
    rows = []
    for run in a.runs:
        results: dict[tuple[str, str], list[dict]] = {k: [] for k in kinds}
        for repeat in range(a.repeats):
            caches = {m: tempfile.mkdtemp(prefix=f"lwzoo-inductor-{m}-") for m in a.modes}  # empty: cold
            for mode, kind in kinds:
                result = one_run(run, mode, a.steps, a.device, caches[mode])
                results[(mode, kind)].append(result)
                print(run, repeat, mode, kind, {k: round(v, 2) for k, v in result.items()}, flush=True)
        eager_s = statistics.median(r["run_s"] for r in results[("false", "cold")]) if "false" in a.modes else None
        for mode, kind in kinds:
            rs = results[(mode, kind)]
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            label = "eager" if mode == "false" else f"{mode} ({kind} cache)"
            ratio = f"{eager_s / med['run_s']:.2f}x" if eager_s else "-"
            spread = ", ".join(f"{r['run_s']:.0f}" for r in rs)
            rows.append(
                f"| {run} | {label} | {med['first_s']:.1f} | {med['steady_ms']:.0f} | {med['run_s']:.0f} ({spread}) "
                f"| {ratio} |"
            )
            print(rows[-1], flush=True)
    body = (
        f"`Engine.train_step` on the built-in data, {a.device}, {torch.get_num_threads()} torch threads; "
        f"medians of {a.repeats} interleaved repeats, each a fresh process (cold: an empty inductor cache). "
        f"Steady: median of the last 10 of {a.steps} steps timed from the first. Run: the timed "
        f"steps plus the rest of a {DEMO_STEPS}-step demo run at the steady time, compiling included.\n\n"
        "| run | step | first step s | steady ms/step | run s (each repeat) | vs eager |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    if not a.no_write:
        write_section("pretrain_compile", "## Compiled training step (train.compile)\n\n" + body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=12, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="eager against train.compile (see the docstring)")
    p.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--modes", nargs="*", default=["false", "default"], help="train.compile values to compare")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warm", action="store_true", help="also time compiled runs on the cache a cold run left")
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", nargs=2, metavar=("RUN", "MODE"), help=argparse.SUPPRESS)  # a child of --compile
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    a = p.parse_args()
    if a.one:
        print(json.dumps(step_times(*a.one, a.steps, torch.device(a.device))))
    elif a.compile:
        compile_table(a)
    else:
        throughput_table(a)


if __name__ == "__main__":
    main()
