"""lwzoo against lightly, the library a user would otherwise train MoCo with: pairs/s end to end on CPU.

Both train MoCo v2 on the same class-balanced subset of CIFAR-10 train (default 10,000 images), with the
same backbone (timm MobileNet-V3-Large), batch, queue size K, loss (asymmetric or symmetric), view size
(32 and 64 px), MoCo v2 augmentation with blur, and torch threads. A pair is one training image's two
views, augmented, through the step. Three contestants:

- lwzoo: ``lwzoo.pretrain("mobilenetv3_large", data=FOLDER, ...)`` with its tuned recipe (channels_last,
  augmentation batched in the training process, images decoded once and held in memory), overridden to the
  shared settings; each step's time is its row in the run's metrics.jsonl (``train.log_every=1``), batch
  fetch included. ``moco.queue_init=random`` skips filling the queue with real keys before step 1, which
  changes no step's cost.
- lightly as shipped, and lightly with channels_last: ``_peer_lightly_child.py`` (its docstring says how
  it follows lightly's MoCo example), in a virtual environment of its own with lightly from the package
  registry, made once under lwzoo's cache folder (lightly is not an lwzoo dependency). Its step time
  includes waiting for the DataLoader workers, which decode and augment on the same cores.

Rounds are interleaved (lwzoo, lightly NCHW, lightly channels_last, then again), so a load that comes and
goes on a shared machine hits all three; each contestant's pairs/s is the median over all its timed steps
(warm-up steps dropped). The ratios are lwzoo's median over each lightly median; the targets are lwzoo >= 3x
lightly as shipped and >= 2x lightly with channels_last, at each size and loss.

    python benchmarks/peer_lightly.py                      # both sizes, asymmetric and symmetric
    python benchmarks/peer_lightly.py --losses asymmetric --rounds 2
    python benchmarks/peer_lightly.py --dry-run            # a few steps on a few images; writes no numbers
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torchvision
from _common import subsets
from _results import write_section

import lwzoo
from lwzoo.archs import get_arch
from lwzoo.builtin_data import render_textures
from lwzoo.config import parse_overrides
from lwzoo.engine import Engine
from lwzoo.env import cache_dir
from lwzoo.metrics import read_metrics
from lwzoo.recipe import default_decode_size, load_recipe
from lwzoo.run_folder import METRICS

CHILD = Path(__file__).with_name("_peer_lightly_child.py")
CONTESTANTS = ("lwzoo", "lightly", "lightly channels_last")
TARGETS = {"lightly": 3.0, "lightly channels_last": 2.0}  # lwzoo's pairs/s over the peer's, at least


def base_version(module) -> str:
    """A package's version without its local build tag (``2.14.1+cu130`` -> ``2.14.1``)."""
    return module.__version__.split("+")[0]


def lightly_python(venv: Path) -> Path:
    """The lightly venv's python, made on first use: torch and torchvision at this process's versions (so both
    sides run the same kernels), then timm and lightly, from the package registry with pip."""
    python, ready = venv / "bin" / "python", venv / "lwzoo-ready.json"  # written last: without it, made again
    if ready.is_file() and python.is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    pins = [f"torch=={base_version(torch)}", f"torchvision=={base_version(torchvision)}", "timm", "lightly"]
    print(f"making lightly's virtual environment at {venv}: pip install {' '.join(pins)} (a few GB)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    ready.write_text(json.dumps({"pins": pins}))
    return python


def lwzoo_overrides(size: int, symmetric: bool, a: argparse.Namespace) -> list[str]:
    """The tuned recipe, overridden to the shared settings."""
    return [
        f"augment.image_size={size}",
        f"moco.queue_size={a.queue}",
        f"moco.symmetric={str(symmetric).lower()}",
        "moco.queue_init=random",
        "optim.warmup_epochs=0",  # the smoothed loss from step 1, as in most of a run
        "train.log_every=1",
    ]


def lwzoo_step_parts(size: int, symmetric: bool, a: argparse.Namespace) -> dict[str, float]:
    """Median seconds of lwzoo's training step (``Engine.train_step``, as ``pretrain`` runs it, batch fetch
    aside) and of its augmentation alone (both views of the batch, the same call the step makes): where a
    step's time goes, and so the most that faster augmentation could buy."""
    recipe = load_recipe("mobilenetv3_large", parse_overrides(lwzoo_overrides(size, symmetric, a)))
    engine = Engine(get_arch("mobilenetv3_large"), recipe, steps_per_epoch=1000, seed=0, device=torch.device("cpu"))
    batch, _ = render_textures(a.batch, recipe.data.decode_size or default_decode_size(size), seed=0)
    step, augment = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        engine.train_step(batch)
        t1 = time.perf_counter()
        engine.augment(batch, torch.Generator().manual_seed(i))
        if i >= a.warmup:
            step.append(t1 - t0)
            augment.append(time.perf_counter() - t1)
    return {"step": statistics.median(step), "augment": statistics.median(augment)}


def lwzoo_step_seconds(folder: Path, size: int, symmetric: bool, a: argparse.Namespace) -> list[float]:
    """Seconds of each timed step of an ``lwzoo.pretrain`` run on ``folder`` (a fresh run folder each time)."""
    overrides = lwzoo_overrides(size, symmetric, a)
    with tempfile.TemporaryDirectory(prefix="lwzoo-peer-") as scratch:
        result = lwzoo.pretrain(
            "mobilenetv3_large",
            data=folder,
            device="cpu",
            batch_size=a.batch,
            until_step=a.warmup + a.steps,
            out=Path(scratch) / "run",
            overrides=overrides,
        )
        rows = [r for r in read_metrics(result.out_dir / METRICS) if r["kind"] == "step"]
    return [a.batch / r["images_per_s"] for r in rows if r["step"] > a.warmup]


def lightly_step_seconds(
    python: Path, folder: Path, size: int, symmetric: bool, channels_last: bool, a: argparse.Namespace
) -> tuple[list[float], dict[str, str]]:
    """Seconds of each timed step of lightly's MoCo (the child script, in lightly's venv), and its versions."""
    args = [str(python), str(CHILD), "--data", str(folder), "--size", str(size), "--batch", str(a.batch)]
    args += ["--queue", str(a.queue), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    args += ["--workers", str(a.workers), "--threads", str(a.threads)]
    args += ["--symmetric"] * symmetric + ["--channels-last"] * channels_last
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"lightly's side failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["step_s"], out["versions"]


def measure(folder: Path, size: int, symmetric: bool, python: Path | None, a: argparse.Namespace) -> dict:
    """Interleaved rounds of the contestants at one size and loss: each one's step times, pooled over rounds."""
    steps: dict[str, list[float]] = {name: [] for name in CONTESTANTS}
    versions: dict[str, str] = {}
    for round_ in range(a.rounds):
        steps["lwzoo"] += lwzoo_step_seconds(folder, size, symmetric, a)
        if python is not None:
            for name, channels_last in (("lightly", False), ("lightly channels_last", True)):
                times, versions = lightly_step_seconds(python, folder, size, symmetric, channels_last, a)
                steps[name] += times
        rates = {name: f"{a.batch / statistics.median(t):.0f}" for name, t in steps.items() if t}
        print(f"{size} px, {'symmetric' if symmetric else 'asymmetric'}, round {round_ + 1}: pairs/s so far {rates}")
    return {"steps": steps, "versions": versions}


def row(size: int, symmetric: bool, steps: dict[str, list[float]], batch: int) -> tuple[str, list[str]]:
    """A table row (median pairs/s of each contestant, the ratios) and the verdicts on the targets."""
    rate = {name: batch / statistics.median(t) if t else None for name, t in steps.items()}
    loss = "symmetric" if symmetric else "asymmetric"
    cells, verdicts = [], []
    for peer, target in TARGETS.items():
        if rate[peer] is None:
            cells.append("-")
            continue
        ratio = rate["lwzoo"] / rate[peer]
        cells.append(f"{ratio:.2f}x")
        met = "met" if ratio >= target else "missed"
        verdicts.append(f"{size} px {loss}: lwzoo / {peer} {ratio:.2f}x, target >= {target:g}x: {met}")
    # a dry run on a busy machine can be well under one pair/s: two significant digits there, never a bare 0
    shown = [(f"{rate[n]:.0f}" if rate[n] >= 10 else f"{rate[n]:.2g}") if rate[n] else "not run" for n in CONTESTANTS]
    shown = [f"{cell} ({len(steps[n])} steps)" if rate[n] else cell for cell, n in zip(shown, CONTESTANTS, strict=True)]
    return f"| {size} | {loss} | {' | '.join(shown)} | {' | '.join(cells)} |", verdicts


def parts_table(parts: dict[tuple[int, str], dict[str, float]], peer: dict[tuple[int, str], float | None], batch):
    """lwzoo's step split into augmentation and the rest, and the pairs/s it would reach with free augmentation
    (a ceiling no augmentation work can pass), against lightly with channels_last."""
    rows = []
    for (size, loss), p in parts.items():
        rest = p["step"] - p["augment"]
        ceiling = batch / rest
        over = f"{ceiling / peer[size, loss]:.2f}x" if peer.get((size, loss)) else "-"
        ms = (p["step"] * 1000, p["augment"] * 1000, rest * 1000)
        rows.append(f"| {size} | {loss} | {ms[0]:.0f} | {ms[1]:.0f} | {ms[2]:.0f} | {ceiling:.0f} | {over} |")
    return (
        "| px | loss | lwzoo step ms | its augmentation ms | the rest (networks, loss, update) ms "
        "| pairs/s with free augmentation | that / lightly channels_last |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


def section(
    a: argparse.Namespace, rows: list[str], verdicts: list[str], versions: dict[str, str], load, parts: str
) -> str:
    versions = versions or {"lightly": "not run"}
    peer = ", ".join(f"{k} {v}" for k, v in versions.items())
    return (
        "## lwzoo against lightly (CPU, pairs/s end to end)\n\n"
        f"MoCo v2 on the same {a.images:,} CIFAR-10 train images (class-balanced), MobileNet-V3-Large, batch "
        f"{a.batch}, K {a.queue}, MoCo v2 augmentation with blur, {a.threads} torch threads; lightly's DataLoader "
        f"has {a.workers} workers. lwzoo {lwzoo.__version__} (timm {timm.__version__}); lightly's venv: {peer}. "
        f"{a.rounds} interleaved rounds of {a.warmup} warm-up + {a.steps} timed steps each; pairs/s = batch / "
        "the median step over all rounds (a pair: one image's two views, augmented, through the step). "
        "How each side is built: the docstrings of benchmarks/peer_lightly.py and _peer_lightly_child.py. "
        f"Load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end.\n\n"
        "| px | loss | lwzoo pairs/s | lightly pairs/s | lightly channels_last pairs/s | lwzoo / lightly "
        "| lwzoo / lightly channels_last |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nTargets (lwzoo >= 3x lightly as shipped, >= 2x lightly with channels_last):\n\n"
        + "\n".join(f"- {v}" for v in verdicts)
        + "\n\nWhere lwzoo's step goes (``Engine.train_step`` with the same settings on a batch held in memory, "
        f"median of {a.steps} steps after {a.warmup} warm-up; the augmentation timed alone, both views, the "
        "call the step makes):\n\n" + parts
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000, help="a class-balanced subset of CIFAR-10 train")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--losses", nargs="+", default=["asymmetric", "symmetric"], choices=["asymmetric", "symmetric"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--queue", type=int, default=4096, help="K, lwzoo's queue and lightly's memory bank")
    p.add_argument("--threads", type=int, default=2, help="torch threads of both training processes")
    p.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2, help="steps per run before timing")
    p.add_argument("--lwzoo-only", action="store_true", help="skip lightly (no venv needed)")
    p.add_argument("--venv", type=Path, default=cache_dir() / "peer-lightly-venv", help="lightly's venv (made once)")
    p.add_argument("--data", type=Path, help="train on this folder of class subfolders instead of CIFAR-10")
    p.add_argument("--dry-run", action="store_true", help="40 images, batch 16, 1 round of 1+1 steps; no verdicts")
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    a = p.parse_args()
    if a.dry_run:
        a.images, a.batch, a.queue, a.rounds, a.steps, a.warmup, a.sizes = 40, 16, 16, 1, 1, 1, a.sizes[:1]
    if a.images % 10:
        raise SystemExit("--images must be a multiple of 10 (CIFAR-10's classes, equally many of each)")
    torch.set_num_threads(a.threads)
    python = None if a.lwzoo_only else lightly_python(a.venv)
    folder = a.data or subsets(a.images // 10, 500)[0]
    load_before = os.getloadavg()[0]
    rows, verdicts, versions, peer = [], [], {}, {}
    for size in a.sizes:
        for loss in a.losses:
            m = measure(folder, size, loss == "symmetric", python, a)
            line, judged = row(size, loss == "symmetric", m["steps"], a.batch)
            rows.append(line)
            verdicts += judged
            versions = m["versions"] or versions
            cl = m["steps"]["lightly channels_last"]
            peer[size, loss] = a.batch / statistics.median(cl) if cl else None
            print(line, flush=True)
    load_after = os.getloadavg()[0]
    parts = {(size, loss): lwzoo_step_parts(size, loss == "symmetric", a) for size in a.sizes for loss in a.losses}
    table = parts_table(parts, peer, a.batch)
    if a.dry_run:
        verdicts = ["not judged (dry run: a few steps on a few images)"]
    print("\n".join(verdicts) + "\n" + table)
    if not a.no_write:
        write_section("peer_lightly", section(a, rows, verdicts, versions, (load_before, load_after), table))


if __name__ == "__main__":
    main()
