"""GPU check (issue 16, item 6): lwzoo's training throughput on one GPU against a plain MoCo loop, on JPEGs on disk.

Run by ``gpu_check.sh`` (its environment variables are this script's options); everything fits a global deadline
(``--deadline`` seconds, 6 minutes with the wrapper's start-up on one H200) and the RESULTS.md section and
gpu_check.json are rewritten after every phase, so a run stopped by its time limit keeps what it measured.

0. A folder of ``--images`` JPEGs written to disk by every CPU core: lwzoo's texture renderer, upsampled to photo
   sizes (long side 300-1000 px, aspect 4:3, 3:4, 16:9, 1:1, 3:2 or 2:3) with pixel noise, quality 90, in 10
   class folders (so torchvision's ImageFolder reads it too). Nothing comes from the repository or the network.
1. lwzoo, through ``lwzoo.pretrain(arch, data=FOLDER, ...)`` with the arch's tuned recipe (symmetric loss, 8 key
   BatchNorm groups): MobileNet-V3-L and EfficientNet-B0 at 224 px, eager; MobileNet-V3-L also with the folder
   streamed from disk (``data.in_memory_gb=0``, as a set too large for memory would be) and compiled
   (``train.compile``). pairs/s: the run's own metrics.jsonl, over its log windows after the first two (warm-up,
   compilation), leaving out windows that hold profiled steps or follow an epoch's checkpoint. GPU busy: the union
   of the GPU's kernel and copy intervals over two steps of the same run, recorded by torch.profiler from a
   subclass of lwzoo's Engine (it only starts and stops the profiler around ``Engine.train_step``), divided by the
   unprofiled ms/step. Peak memory: ``torch.cuda.max_memory_allocated`` over the phase (the decoded set held on
   the GPU included).
2. The plain loop, in the authors' style (facebookresearch/moco's main_moco.py with the light-moco symmetric
   loss): torchvision ImageFolder over the same folder, per-image PIL MoCo v2 augmentation in DataLoader workers
   (one per CPU core), fp32, NCHW, cudnn.benchmark, a MoCo model with a momentum encoder and a queue, shuffle-BN
   emulated by running each shuffled key batch in 8 chunked forwards. Warm-up: one batch per worker (the workers'
   first round), then one more round timed.
3. The 32-px step (MobileNet-V3-L, batch 256, K 4096, tuned recipe, symmetric, 8 key BN groups; random uint8
   images on the device, blur off, as the 233-ms profile in RESULTS.md): ``Engine.train_step`` eager and compiled.
   lwzoo has no switch back to the 8 chunked key forwards it ran before split BatchNorm, so "before" is measured
   twice without one: the plain loop's chunked step (bf16 channels_last like lwzoo's step, and fp32 NCHW), and
   ``Engine.train_step`` at batch 255, which 8 groups do not divide, where lwzoo itself falls back to 8 chunked
   forwards.

    benchmarks/gpu_check.sh                   # on the GPU machine
    DEVICE=cpu benchmarks/gpu_check.sh        # a dry run anywhere: toy sizes, ~8 minutes on 2 busy CPU cores
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from _common import pil_pipeline, sync
from _results import command, machine, write_section
from PIL import Image
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

import lwzoo
from lwzoo.archs import create_backbone, get_arch
from lwzoo.builtin_data import render_textures
from lwzoo.engine import Engine
from lwzoo.metrics import read_metrics
from lwzoo.recipe import Recipe, fit_queue_to_data, load_recipe
from lwzoo.run_folder import METRICS

SECTION = "gpu_check"
MNV3, EFFNET = "mobilenetv3_large", "effnet_b0"
BASELINE_32PX_MS = 232.6  # RESULTS.md "GPU step profile": Engine, 8 chunked key forwards, bf16, H200, commit b764cdb
# the 233-ms profile's settings (gpu_step_profile.py COMMON), so the 32-px rows compare with it
STEP32 = {"moco.queue_size": 4096, "augment.blur_p": 0.0, "moco.momentum": 0.99, "augment.image_size": 32}
TARGETS = {"pairs_per_s": 3000.0, "vs_plain": 3.0, "busy": 0.80, "step32_speedup": 4.0}

# ---------------------------------------------------------------------------------------------- the JPEG folder

PHOTO_ASPECTS = ((4, 3), (3, 4), (16, 9), (1, 1), (3, 2), (2, 3))  # width : height
RENDER_PX = 192  # the texture's own resolution; upsampled to the photo size, then noise adds fine detail
CHUNK = 64  # images per worker job


def photo_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): long side uniform in [300, 1000] px, one of PHOTO_ASPECTS."""
    w, h = PHOTO_ASPECTS[rng.integers(len(PHOTO_ASPECTS))]
    long_side = int(rng.integers(300, 1001))
    return (long_side, round(long_side * h / w)) if w >= h else (round(long_side * w / h), long_side)


def _write_chunk(job: tuple[str, int, int, int]) -> int:
    """Render and save images [start, start + count) of the folder; returns the bytes written."""
    root, start, count, seed = job
    torch.set_num_threads(1)  # one process per core already
    rng = np.random.default_rng(seed + start)
    images, labels = render_textures(count, RENDER_PX, seed=seed + start)
    noise = rng.normal(0, 6, (1024, 1024, 3)).astype(np.int16)  # one tile, cropped at random per image
    written = 0
    for i in range(count):
        w, h = photo_size(rng)
        img = Image.fromarray(images[i].permute(1, 2, 0).numpy()).resize((w, h), Image.Resampling.BICUBIC)
        y, x = rng.integers(0, 1025 - h), rng.integers(0, 1025 - w)
        pixels = (np.asarray(img, dtype=np.int16) + noise[y : y + h, x : x + w]).clip(0, 255).astype(np.uint8)
        path = Path(root) / f"c{int(labels[i]):02d}" / f"img{start + i:06d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        written += path.stat().st_size
    return written


def write_jpeg_folder(root: Path, n: int, workers: int, seed: int = 0) -> dict[str, float]:
    """n JPEGs under root/c00 .. root/c09, written by ``workers`` processes; returns what it took."""
    for c in range(10):
        (root / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), start, min(CHUNK, n - start), seed) for start in range(0, n, CHUNK)]
    t0 = time.perf_counter()
    # fork: the children need no CUDA, and nothing has touched CUDA yet
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        written = sum(pool.imap_unordered(_write_chunk, jobs))
    return {"images": n, "seconds": time.perf_counter() - t0, "mean_kb": written / n / 1024, "workers": workers}


# ------------------------------------------------------------------------------------------------- measuring


@dataclass
class Row:
    """One measured configuration (a table row); None: not measured (on a CPU, or the phase stopped early)."""

    phase: str
    label: str
    arch: str
    px: int
    status: str = "ok"  # ok, or why it has no numbers ("skipped: ...", "failed: ...")
    pairs_per_s: float | None = None  # source images per second, two views each
    ms_per_step: float | None = None
    kernel_ms: float | None = None  # GPU busy per step: union of kernel/copy intervals, torch.profiler
    kernels: float | None = None  # GPU activities (kernels, copies, memsets) per step
    busy: float | None = None  # kernel_ms / ms_per_step
    nvml_util: float | None = None  # NVML's utilisation %, mean over the timed steps (a cross-check of busy)
    peak_gib: float | None = None
    steps: int = 0  # steps in the timed windows
    seconds: float | None = None  # the phase's wall time, set-up (decode, compile, worker start) included
    notes: list[str] = field(default_factory=list)


def fresh_memory(device: torch.device) -> None:
    """Free what earlier phases left, and restart the peak-memory count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def device_busy_us(prof: profile) -> tuple[float, int]:
    """Microseconds the GPU was busy in ``prof`` (the union of its kernels', copies' and memsets' intervals, so
    overlapping streams count once) and how many such activities ran."""
    spans = sorted(
        (e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
    )
    busy, covered_to = 0.0, float("-inf")
    for start, end in spans:
        if end > covered_to:
            busy += end - max(start, covered_to)
            covered_to = end
    return busy, len(spans)


def new_profiler(device: torch.device) -> profile:
    return profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else []))


def kernel_time(prof: profile, steps: int, device: torch.device) -> tuple[float | None, float | None]:
    """(GPU-busy ms per step, GPU activities per step) of ``steps`` profiled steps; (None, None) on a CPU."""
    if device.type != "cuda" or steps < 1:
        return None, None
    busy_us, count = device_busy_us(prof)
    return busy_us / 1000 / steps, count / steps


def profile_calls(step: Callable[[], object], steps: int, device: torch.device) -> tuple[float | None, float | None]:
    """:func:`kernel_time` of ``steps`` calls of ``step``."""
    with new_profiler(device) as prof:
        for _ in range(steps):
            step()
        sync(device)
    return kernel_time(prof, steps, device)


@dataclass
class Timing:
    """Wall ms per step over ``steps`` timed steps, and the GPU's busy ms and activities per step (None on a CPU)."""

    ms_per_step: float
    steps: int
    kernel_ms: float | None
    kernels: float | None


def timed_calls(step: Callable[[], object], warmup: int, steps: int, device: torch.device, until: float) -> Timing:
    """ms/step of ``steps`` calls of ``step`` after ``warmup`` (fewer when perf_counter passes ``until``), then
    the GPU's busy time over one more call."""
    for _ in range(warmup):
        step()
    sync(device)
    t0, done = time.perf_counter(), 0
    while done < steps and (done == 0 or time.perf_counter() < until):
        step()
        done += 1
    sync(device)
    ms = (time.perf_counter() - t0) / done * 1000
    return Timing(ms, done, *profile_calls(step, 1, device))


def timed_row(t: Timing, phase: str, label: str, arch: str, px: int, batch: int, device: torch.device) -> Row:
    """A row from a :class:`Timing` of steps of ``batch`` images; peak memory read now."""
    busy = t.kernel_ms / t.ms_per_step if t.kernel_ms else None
    row = Row(
        phase, label, arch, px, pairs_per_s=batch / t.ms_per_step * 1000, ms_per_step=t.ms_per_step,
        kernel_ms=t.kernel_ms, kernels=t.kernels, busy=busy, peak_gib=peak_gib(device), steps=t.steps,
    )  # fmt: skip
    if t.kernels:
        row.notes.append(f"{t.kernels:,.0f} GPU ops/step")
    return row


class UtilSampler:
    """NVML's GPU utilisation (% of time a kernel ran, over its own sample period), read every 0.1 s in a thread;
    nothing on a CPU or without the nvidia-ml-py package."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples = device, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append((time.perf_counter(), torch.cuda.utilization(self.device)))
            except Exception:  # noqa: BLE001 -- no NVML: the cross-check is left out
                return

    def __enter__(self) -> UtilSampler:
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self, start: float, end: float, skip: tuple[float, float] | None = None) -> float | None:
        """Mean utilisation % of the samples in [start, end], those in ``skip`` left out."""
        got = [u for t, u in self.samples if start <= t <= end and not (skip and skip[0] <= t <= skip[1])]
        return sum(got) / len(got) if got else None


# ------------------------------------------------------------------------------------ lwzoo through pretrain()


@dataclass
class Probe:
    """What :func:`measured_engine` records inside a pretrain() run (perf_counter times)."""

    profile_from: int  # profile the steps after this many
    profile_steps: int
    warm_steps: int  # NVML's mean starts after this many steps
    box: float  # seconds from the first step after which pretrain() is asked to stop
    deadline: float  # ... and the time by which it must have stopped in any case
    device: torch.device
    first_step: float | None = None
    batch_device: str = ""  # where pretrain()'s batches arrive: cuda (held on the GPU) or cpu
    amp: str = ""  # the Engine's autocast dtype, or fp32
    steady: tuple[float, float] | None = None  # from the end of warm-up to the last step
    profiled: tuple[float, float] | None = None
    kernel_ms: float | None = None
    kernels: float | None = None
    stopped_at: int | None = None
    profile_error: str = ""
    _prof: profile | None = None


def probe_profiler(probe: Probe, start: bool) -> None:
    """Start, or stop and read, the probe's profiler; a failure of the profiler is noted, and the run goes on."""
    sync(probe.device)
    try:
        if start:
            probe._prof, probe.profiled = new_profiler(probe.device), (time.perf_counter(), 0.0)
            probe._prof.start()
            return
        probe._prof.stop()
        probe.profiled = (probe.profiled[0], time.perf_counter())
        probe.kernel_ms, probe.kernels = kernel_time(probe._prof, probe.profile_steps, probe.device)
    except Exception as e:  # noqa: BLE001 -- the throughput still stands without the busy fraction
        probe.profile_error = f"{type(e).__name__}: {e}"[:200]
    if not start:
        probe._prof = None


def measured_engine(probe: Probe) -> type[Engine]:
    """lwzoo's Engine with the benchmark's hooks around ``train_step``: torch.profiler over the probe's steps, and a
    time box (past the probe's box or deadline, a SIGTERM to this process, which pretrain() turns into a clean stop
    after that step, a checkpoint included). The step itself is the library's."""

    class MeasuredEngine(Engine):
        def train_step(self, images: torch.Tensor, aspects: torch.Tensor | None = None) -> torch.Tensor:
            now = time.perf_counter()
            if probe.first_step is None:
                probe.first_step, probe.batch_device = now, images.device.type
                probe.amp = str(self.amp).removeprefix("torch.").replace("bfloat16", "bf16") if self.amp else "fp32"
            if self.step == probe.warm_steps:
                probe.steady = (now, now)
            if self.step == probe.profile_from and probe.profile_steps:
                probe_profiler(probe, start=True)
            loss = super().train_step(images, aspects)
            if probe._prof is not None and self.step == probe.profile_from + probe.profile_steps:
                probe_profiler(probe, start=False)
            if probe.steady is not None:
                probe.steady = (probe.steady[0], time.perf_counter())
            stop_at = min(probe.deadline, probe.first_step + probe.box)
            if time.perf_counter() > stop_at and probe.stopped_at is None:
                probe.stopped_at = self.step
                os.kill(os.getpid(), signal.SIGTERM)  # pretrain()'s handler: stop after this step
            return loss

    return MeasuredEngine


def lwzoo_label(probe: Probe, extra: list[str]) -> str:
    """What the lwzoo row ran, from what the run did (autocast, where its batches came from) and its overrides."""
    if "data.in_memory_gb=0" in extra:
        data = "streamed from disk (decoded by DataLoader workers every step)"
    else:
        data = "decoded once, held on the GPU" if probe.batch_device == "cuda" else "decoded once, held in memory"
    compiled = [o.split("=", 1)[1] for o in extra if o.startswith("train.compile=")]
    how = f"train.compile={compiled[0]}" if compiled else "eager"
    return f"lwzoo: {probe.amp or '?'}, channels_last, {data}, augmented on the {probe.device.type}, {how}"


@contextlib.contextmanager
def engine_swapped(engine_cls: type[Engine]) -> Iterator[None]:
    """pretrain() builds ``engine_cls`` instead of Engine for the duration."""
    module = importlib.import_module("lwzoo.pretrain")  # the module: lwzoo.pretrain is also the function's name
    if getattr(module, "Engine", None) is not Engine:
        raise RuntimeError("lwzoo.pretrain no longer builds its Engine by that name; update measured_engine's hook")
    module.Engine = engine_cls
    try:
        yield
    finally:
        module.Engine = Engine


def steady_windows(rows: list[dict], batch: int, steps_per_epoch: int, profiled: range) -> list[tuple]:
    """(first step, last step, seconds) of the metrics.jsonl step rows' log windows worth timing: after the first
    two (warm-up, compilation), without profiled steps, and not the first of an epoch after the first (it holds the
    checkpoint save that ended the previous one). Short runs keep what they have."""
    windows, prev = [], 0
    for r in rows:
        n = r["step"] - prev
        windows.append((prev + 1, r["step"], n * batch / r["images_per_s"]))
        prev = r["step"]
    warm = 2 if len(windows) >= 4 else 1 if len(windows) >= 2 else 0
    after_save = [w for w in windows if w[0] > 1 and (w[0] - 1) % steps_per_epoch == 0]
    kept = [w for w in windows[warm:] if w not in after_save and not any(s in profiled for s in range(w[0], w[1] + 1))]
    return kept or windows[warm:] or windows


def lwzoo_run(ctx: Context, phase: str, arch: str, extra: list[str], box: float = 45) -> Row:
    """One ``lwzoo.pretrain`` run on the JPEG folder, measured; ``box``: seconds of training it may take, the
    first step (and so any compilation) included."""
    a, device = ctx.args, ctx.device
    log_every = max(1, min(10, a.steps // 8))
    profile_from = min(2 * log_every, a.steps - 1)
    probe = Probe(
        profile_from, min(2, a.steps - profile_from), warm_steps=profile_from, box=box, deadline=ctx.deadline - 20,
        device=device,
    )  # fmt: skip
    overrides = [
        f"augment.image_size={a.image_size}",
        "moco.symmetric=true",
        f"train.log_every={log_every}",
        f"data.workers={ctx.workers}",  # the cores the plain loop's workers get
        *extra,
    ]
    fresh_memory(device)
    t0 = time.perf_counter()
    with engine_swapped(measured_engine(probe)), UtilSampler(device) as nvml:
        result = lwzoo.pretrain(
            arch,
            data=ctx.folder,
            device=a.device,
            batch_size=a.batch,
            until_step=a.steps,
            out=ctx.scratch / "runs" / phase,
            overrides=overrides,
        )
    seconds = time.perf_counter() - t0
    rows = [r for r in read_metrics(result.out_dir / METRICS) if r["kind"] == "step"]
    spe = ctx.n_images // a.batch
    profiled = range(profile_from + 1, profile_from + 1 + probe.profile_steps)
    windows = steady_windows(rows, a.batch, spe, profiled)
    steps, secs = sum(w[1] - w[0] + 1 for w in windows), sum(w[2] for w in windows)
    row = Row(phase, lwzoo_label(probe, extra), arch, a.image_size, steps=steps, seconds=seconds)
    row.peak_gib = peak_gib(device)
    row.pairs_per_s = steps * a.batch / secs if secs else None
    row.ms_per_step = 1000 * secs / steps if steps else None
    row.kernel_ms, row.kernels = probe.kernel_ms, probe.kernels
    if probe.kernels:
        row.notes.append(f"{probe.kernels:,.0f} GPU ops/step")
    row.busy = row.kernel_ms / row.ms_per_step if row.kernel_ms and row.ms_per_step else None
    if probe.steady:
        row.nvml_util = nvml.mean(*probe.steady, skip=probe.profiled)
    row.notes.append(f"{result.step} steps, timed {steps} in windows {', '.join(f'{w[0]}-{w[1]}' for w in windows)}")
    if probe.stopped_at is not None:
        row.notes.append(f"time box stopped it after step {probe.stopped_at}")
    if probe.profile_error:
        row.notes.append(f"profiler failed: {probe.profile_error}")
    if probe.first_step is not None:
        row.notes.append(f"{probe.first_step - t0:.0f} s before the first step (data, queue fill)")
        row.notes.append(f"batches arrived on the {probe.batch_device}")
    return row


# ------------------------------------------------------------------------------------------------ the plain loop


class TwoCrops:
    """Two independent augmentations of one image (MoCo's TwoCropsTransform)."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        return [self.transform(img), self.transform(img)]


class PlainMoCo(nn.Module):
    """MoCo v2 as facebookresearch/moco writes it, on one device: query encoder (backbone + MLP), momentum key
    encoder, queue (dim x K); shuffle-BN emulated by encoding each shuffled key batch in ``chunks`` forwards; the
    authors' symmetric loss L(q1, k2) + L(q2, k1) (light-moco), as plain InfoNCE (smoothing's top-k over the
    N x K logits would add little time). Only the backbone constructor is lwzoo's."""

    def __init__(self, arch: str, recipe: Recipe, queue_size: int) -> None:
        super().__init__()
        m = recipe.moco
        self.m, self.t, self.chunks = m.momentum, m.temperature, m.key_bn_splits
        feature_dim = get_arch(arch).feature_dim
        self.encoder_q = nn.Sequential(
            create_backbone(arch, m.zero_init_residual),
            nn.Linear(feature_dim, m.mlp_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(m.mlp_hidden, m.dim),
        )
        self.encoder_k = copy.deepcopy(self.encoder_q).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(m.dim, queue_size), dim=0))  # dim x K
        self.ptr = 0

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            k.mul_(self.m).add_(q.detach(), alpha=1 - self.m)

    @torch.no_grad()
    def _keys(self, im: torch.Tensor) -> torch.Tensor:
        shuffle = torch.randperm(len(im), device=im.device)
        k = torch.cat([self.encoder_k(c) for c in im[shuffle].chunk(self.chunks)])  # N x dim, shuffled
        return F.normalize(k.float(), dim=1)[torch.argsort(shuffle)]

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        idx = (self.ptr + torch.arange(len(keys), device=keys.device)) % self.queue.shape[1]
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.ptr = (self.ptr + len(keys)) % self.queue.shape[1]

    def _logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        l_pos = (q * k).sum(1, keepdim=True)  # N x 1
        l_neg = q @ self.queue.clone().detach()  # N x K
        return torch.cat([l_pos, l_neg], dim=1) / self.t  # N x (1+K)

    def forward(self, im1: torch.Tensor, im2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q1 = F.normalize(self.encoder_q(im1).float(), dim=1)  # N x dim
        q2 = F.normalize(self.encoder_q(im2).float(), dim=1)
        with torch.no_grad():
            self._momentum_update()
            k1, k2 = self._keys(im1), self._keys(im2)
        logits = self._logits(q1, k2), self._logits(q2, k1)
        self._enqueue(torch.cat([k1, k2]))
        return logits


def plain_model(arch: str, px: int, n_images: int, device: torch.device) -> tuple[PlainMoCo, torch.optim.SGD]:
    """The plain loop's model and SGD, with the arch's tuned recipe values (queue capped for the set as lwzoo
    caps it, so both sides contrast against the same K)."""
    recipe = load_recipe(get_arch(arch).recipe, {"augment.image_size": px})
    queue_size = fit_queue_to_data(recipe, n_images)[0].moco.queue_size
    torch.manual_seed(0)
    model = PlainMoCo(arch, recipe, queue_size).to(device)
    o = recipe.optim
    sgd = torch.optim.SGD(
        model.encoder_q.parameters(), lr=o.lr * recipe.train.batch_size / o.lr_batch_size, momentum=o.momentum,
        weight_decay=o.weight_decay,
    )  # fmt: skip
    return model, sgd


def plain_step(model: PlainMoCo, sgd: torch.optim.SGD, x1: torch.Tensor, x2: torch.Tensor, amp: bool) -> None:
    """One step: MoCo's forward, cross-entropy with the positive at index 0, backward, SGD."""
    with torch.autocast(x1.device.type, dtype=torch.bfloat16, enabled=amp):
        logits1, logits2 = model(x1, x2)
    labels = torch.zeros(len(x1), dtype=torch.long, device=x1.device)
    loss = F.cross_entropy(logits1.float(), labels) + F.cross_entropy(logits2.float(), labels)
    sgd.zero_grad()
    loss.backward()
    sgd.step()


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cudnn.benchmark on, as main_moco.py sets it (lwzoo does not), restored after."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def plain_run(ctx: Context, phase: str, arch: str) -> Row:
    """The plain loop on the JPEG folder, measured: one batch per worker to warm up, then as many timed."""
    from torchvision.datasets import ImageFolder

    a, device = ctx.args, ctx.device
    fresh_memory(device)
    t0 = time.perf_counter()
    model, sgd = plain_model(arch, a.image_size, ctx.n_images, device)
    dataset = ImageFolder(str(ctx.folder), TwoCrops(pil_pipeline(a.image_size)))
    loader = DataLoader(
        dataset, batch_size=a.batch, shuffle=True, num_workers=ctx.workers, pin_memory=device.type == "cuda",
        drop_last=True, persistent_workers=True,
    )  # fmt: skip
    batches = forever(loader)

    def step() -> None:
        (x1, x2), _ = next(batches)
        plain_step(model, sgd, x1.to(device, non_blocking=True), x2.to(device, non_blocking=True), amp=False)

    warm = a.plain_steps // 2 if a.plain_steps else ctx.workers
    timed = a.plain_steps - warm if a.plain_steps else ctx.workers
    with cudnn_benchmark():
        t = timed_calls(step, warm, timed, device, until=min(ctx.deadline - 20, time.perf_counter() + 60))
    label = "plain loop: fp32, NCHW, per-image PIL in DataLoader workers, 8 chunked key forwards"
    row = timed_row(t, phase, label, arch, a.image_size, a.batch, device)
    row.seconds = time.perf_counter() - t0
    row.notes.append(f"{ctx.workers} workers; {warm} warm-up steps, {t.steps} timed")
    return row


# ------------------------------------------------------------------------------------------------ the 32-px step


def step32_engine(ctx: Context, phase: str, label: str, batch: int, extra: dict) -> Row:
    """``Engine.train_step`` at 32 px on random uint8 images on the device (the 233-ms profile's setting)."""
    a, device = ctx.args, ctx.device
    fresh_memory(device)
    t0 = time.perf_counter()
    recipe = load_recipe(get_arch(MNV3).recipe, {**STEP32, "train.batch_size": batch, **extra})
    engine = Engine(get_arch(MNV3), recipe, steps_per_epoch=1000, seed=0, device=device)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    # compiled: the compile, then CUDA graph recording; a dry run's few steps get as few warm-ups
    warmup = min(5 if recipe.train.compile else 3, a.small_steps)
    t = timed_calls(lambda: engine.train_step(images), warmup, a.small_steps, device, until=ctx.deadline - 15)
    return step32_row(t, phase, label, batch, device, t0)


def step32_plain(ctx: Context, phase: str, label: str, amp: bool, channels_last: bool) -> Row:
    """The plain loop's step (8 chunked key forwards) at 32 px on fixed normalised views on the device: the step
    alone, without augmentation."""
    a, device = ctx.args, ctx.device
    fresh_memory(device)
    t0 = time.perf_counter()
    model, sgd = plain_model(MNV3, 32, 2 * STEP32["moco.queue_size"], device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x1, x2 = (torch.randn(a.batch, 3, 32, 32, device=device).contiguous(memory_format=fmt) for _ in range(2))
    with cudnn_benchmark():
        warmup = min(3, a.small_steps)
        t = timed_calls(lambda: plain_step(model, sgd, x1, x2, amp), warmup, a.small_steps, device, ctx.deadline - 15)
    return step32_row(t, phase, label, a.batch, device, t0)


def step32_row(t: Timing, phase: str, label: str, batch: int, device: torch.device, t0: float) -> Row:
    row = timed_row(t, phase, label, MNV3, 32, batch, device)
    row.seconds = time.perf_counter() - t0
    row.notes.append(f"batch {batch}, {t.steps} timed steps")
    return row


# ------------------------------------------------------------------------------------------------------ phases


@dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    scratch: Path
    folder: Path
    deadline: float  # perf_counter time by which every phase must have ended
    workers: int
    n_images: int = 0
    folder_info: dict = field(default_factory=dict)


def phases(ctx: Context) -> list[tuple[str, int, Callable[[], list[Row]]]]:
    """(name, seconds it needs on an H200 at the defaults, what it runs), in priority order: a phase is skipped
    when less time than it needs is left."""
    mode = ctx.args.compile
    compiled_label = f"after items 1+2: Engine, split BN in one key forward, train.compile={mode}"
    return [
        ("lwzoo_mnv3", 40, lambda: [lwzoo_run(ctx, "lwzoo_mnv3", MNV3, [])]),
        ("plain_mnv3", 35, lambda: [plain_run(ctx, "plain_mnv3", MNV3)]),
        ("step32", 25, lambda: step32_rows(ctx)),
        ("step32_plain", 20, lambda: step32_plain_rows(ctx)),
        ("lwzoo_effnet", 40, lambda: [lwzoo_run(ctx, "lwzoo_effnet", EFFNET, [])]),
        (
            "step32_compiled",
            150,
            lambda: [step32_engine(ctx, "step32_compiled", compiled_label, ctx.args.batch, {"train.compile": mode})],
        ),
        ("lwzoo_mnv3_streamed", 45, lambda: [lwzoo_run(ctx, "lwzoo_mnv3_streamed", MNV3, ["data.in_memory_gb=0"])]),
        (
            "lwzoo_mnv3_compiled",
            150,
            lambda: [lwzoo_run(ctx, "lwzoo_mnv3_compiled", MNV3, [f"train.compile={mode}"], box=150)],
        ),
        ("plain_effnet", 35, lambda: [plain_run(ctx, "plain_effnet", EFFNET)]),
    ]


def step32_rows(ctx: Context) -> list[Row]:
    """lwzoo's eager 32-px step after item 1, and the Engine's own "before" stand-in."""
    b = ctx.args.batch
    after = step32_engine(ctx, "step32", "after item 1: Engine, split BN in one key forward, eager", b, {})
    label = f"before (stand-in): Engine at batch {b - 1}, which 8 groups do not divide: lwzoo falls back to 8 chunked "
    before = step32_engine(ctx, "step32_before_engine", label + "key forwards, eager", b - 1, {})
    if after.kernels and before.kernels and before.kernels < 1.5 * after.kernels:
        # the chunked forwards launch about 8x the key encoder's kernels; without them this is no "before"
        before.notes.append("NOT a chunked step: hardly more GPU ops than the split one, so lwzoo changed its fallback")
    return [after, before]


def step32_plain_rows(ctx: Context) -> list[Row]:
    """The plain loop's chunked step at 32 px: as lwzoo ran before item 1 (bf16, channels_last), and as the authors
    run it."""
    plain = "8 chunked key forwards, no augmentation"
    return [
        step32_plain(
            ctx, "step32_before_plain", f"before (stand-in): plain step, bf16, channels_last, {plain}", True, True
        ),
        step32_plain(ctx, "step32_plain_fp32", f"plain step as the authors run it: fp32, NCHW, {plain}", False, False),
    ]


# ------------------------------------------------------------------------------------------------------ report


def fmt(value: float | None, spec: str = ".0f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


TABLE_HEAD = (
    "| {what} | arch | px | pairs/s | wall ms/step | GPU ms/step | GPU busy | NVML util | peak GiB "
    "| phase wall; notes |\n|---|---|---|---|---|---|---|---|---|---|"
)


def row_line(r: Row) -> str:
    if r.status != "ok":
        return f"| {r.label} | {r.arch} | {r.px} | {r.status} | | | | | | |"
    return (
        f"| {r.label} | {r.arch} | {r.px} | {fmt(r.pairs_per_s)} | {fmt(r.ms_per_step, '.1f')} "
        f"| {fmt(r.kernel_ms, '.1f')} | {pct(r.busy)} | {fmt(r.nvml_util, '.0f', '%')} | {fmt(r.peak_gib, '.1f')} "
        f"| {fmt(r.seconds)} s; {'; '.join(r.notes)} |"
    )


def verdict(value: float | None, target: float, dry: bool) -> str:
    if dry:
        return "not judged (CPU dry run)"
    return "not measured" if value is None else "met" if value >= target else "missed"


def target_lines(rows: dict[str, Row], px: int, dry: bool) -> list[str]:
    """One table line per target of the issue: what it asks, the number it is judged on, met or missed."""

    def rate(key: str) -> float | None:
        r = rows.get(key)
        return r.pairs_per_s if r is not None and r.status == "ok" else None

    best = max(("lwzoo_mnv3", "lwzoo_mnv3_compiled"), key=lambda k: rate(k) or 0)
    plain, want, lines = rate("plain_mnv3"), TARGETS["pairs_per_s"], []
    for key, how in (
        (best, "decoded once and held, lwzoo's default for a set this size"),
        ("lwzoo_mnv3_streamed", "streamed"),
    ):
        ratio = rate(key) / plain if rate(key) and plain else None
        lines += [
            f"| MobileNet-V3-L, {px} px, {how}: >= {want:,.0f} pairs/s | {fmt(rate(key))} ({key}) "
            f"| {verdict(rate(key), want, dry)} |",
            f"| ... and >= {TARGETS['vs_plain']:g}x the plain loop | {fmt(ratio, '.2f', 'x')} "
            f"| {verdict(ratio, TARGETS['vs_plain'], dry)} |",
        ]
    busy = rows[best].busy if best in rows else None
    lines.append(f"| GPU busy >= {pct(TARGETS['busy'])} of the step | {pct(busy)} ({best}) "
                 f"| {verdict(busy, TARGETS['busy'], dry)} |")  # fmt: skip
    after = [r.ms_per_step for k in ("step32", "step32_compiled") if (r := rows.get(k)) and r.ms_per_step]
    ms = min(after) if after else None
    speedup = BASELINE_32PX_MS / ms if ms else None
    lines.append(
        f"| 32-px step >= {TARGETS['step32_speedup']:g}x faster than {BASELINE_32PX_MS} ms "
        f"(<= {BASELINE_32PX_MS / TARGETS['step32_speedup']:.1f} ms) | {fmt(ms, '.1f')} ms, "
        f"{fmt(speedup, '.2f', 'x')} (the faster of step32, step32_compiled) "
        f"| {verdict(speedup, TARGETS['step32_speedup'], dry)} |"
    )
    return lines


@lru_cache(maxsize=1)
def gpu_line(device: torch.device) -> str:
    """The GPU's name, driver and memory (nvidia-smi), and the torch, CUDA and timm versions."""
    versions = (
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, timm {timm.__version__}, lwzoo {lwzoo.__version__}"
    )
    if device.type != "cuda":
        return f"none (CPU dry run); {versions}"
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip().splitlines()[0]  # fmt: skip
        name, driver, memory = (x.strip() for x in smi.split(","))
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        name, driver, memory = torch.cuda.get_device_name(device), "unknown", "?"
    return f"{name}, driver {driver}, {memory}; {versions}"


def section(ctx: Context, rows: list[Row], pending: list[str]) -> str:
    """The RESULTS.md section: what ran and how, the tables, the targets."""
    a, dry, fi = ctx.args, ctx.device.type != "cuda", ctx.folder_info
    lines = [f"## GPU check ({gpu_line(ctx.device).split(',')[0]})", ""]
    if dry:
        lines = ["## GPU check: CPU DRY RUN, no GPU numbers", ""]
        lines += [
            "**A dry run on the CPU with toy sizes: it checks that the script runs. None of its numbers says "
            "anything about a GPU, and the targets are not judged.**",
            "",
        ]
    lines += [
        f"GPU: {gpu_line(ctx.device)}.",
        "",
        f"Data: {fi.get('images', 0):,} JPEGs written to local disk in {fmt(fi.get('seconds'), '.1f')} s by "
        f"{fi.get('workers', '-')} processes (lwzoo's texture renderer upsampled to photo sizes, long side 300-1000 "
        f"px, aspect 4:3 / 3:4 / 16:9 / 1:1 / 3:2 / 2:3, pixel noise, quality 90, {fmt(fi.get('mean_kb'))} KB "
        f"each on average). Batch {a.batch}, {a.image_size} px, symmetric loss, the arch's tuned recipe (8 key "
        "BatchNorm groups); the queue is capped to half the images as lwzoo caps it, and the plain loop uses the "
        f"same K. lwzoo rows: `lwzoo.pretrain(arch, data=FOLDER, device='{a.device}', batch_size={a.batch}, "
        f"until_step={a.steps}, overrides=['augment.image_size={a.image_size}', 'moco.symmetric=true', "
        f"'data.workers={ctx.workers}', ...])`, the row's own overrides after.",
        "",
        "pairs/s: source images per second (two views each); lwzoo's from the run's metrics.jsonl over its log "
        "windows after the first two, leaving out windows with profiled steps or an epoch's checkpoint; the plain "
        "loop's after one warm-up batch per DataLoader worker. GPU ms/step: the union of the GPU's kernel and copy "
        "intervals (torch.profiler: two steps inside lwzoo's pretrain() run, one step elsewhere); GPU busy: that / "
        "wall ms/step. NVML util: the driver's utilisation over the timed steps, a cross-check. Peak: "
        "torch.cuda.max_memory_allocated over the phase (for lwzoo the decoded set held on the GPU included).",
        "",
        TABLE_HEAD.format(what="path"),
        *(row_line(r) for r in rows if not r.phase.startswith("step32")),
        "",
        f"The 32-px step (MobileNet-V3-L, K {STEP32['moco.queue_size']}, blur off, random uint8 images already on "
        f'the device, as the {BASELINE_32PX_MS}-ms profile in "GPU step profile" was measured). lwzoo has no '
        'switch back to the chunked key forward, so "before" is measured by stand-ins: the Engine at a batch '
        "that 8 groups do not divide (where lwzoo itself still runs 8 chunked forwards), and the plain loop's "
        "chunked step.",
        "",
        TABLE_HEAD.format(what="step"),
        f"| before, recorded: Engine, 8 chunked key forwards, bf16, eager (2026-11-28, H200, commit b764cdb) "
        f'| {MNV3} | 32 | 1101 | {BASELINE_32PX_MS} | 69.6 | 30% | - | - | RESULTS.md "GPU step profile" |',
        *(row_line(r) for r in rows if r.phase.startswith("step32")),
        "",
        "| target (issue 16) | measured | verdict |",
        "|---|---|---|",
        *target_lines({r.phase: r for r in rows}, a.image_size, dry),
    ]
    if pending:
        lines += ["", f"Not run (the deadline or a stop came first): {', '.join(pending)}."]
    return "\n".join(lines)


def report(ctx: Context, rows: list[Row], pending: list[str]) -> None:
    """Rewrite the RESULTS.md section (and --json) with everything measured so far."""
    body = section(ctx, rows, pending)
    write_section(SECTION, body, ran=(ctx.args.command or command(), machine(), time.strftime("%Y-%m-%d %H:%M %Z")))
    if ctx.args.json:
        state = {"folder": ctx.folder_info, "rows": [asdict(r) for r in rows], "pending": pending}
        ctx.args.json.write_text(json.dumps(state, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--images", type=int, default=10240, help="JPEGs to write (10,240: 40 steps of 256 per epoch)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=80, help="steps of each lwzoo.pretrain run")
    p.add_argument("--small-steps", type=int, default=30, help="timed steps of each 32-px step")
    p.add_argument("--plain-steps", type=int, default=0, help="plain loop steps, half warm-up (0: 2 x workers)")
    p.add_argument("--compile", default="reduce-overhead", help="train.compile mode of the compiled rows; 0: none")
    p.add_argument("--deadline", type=float, default=330, help="seconds from --started by which all phases end")
    p.add_argument("--started", type=float, default=None, help="the wrapper's start, Unix time (default: now)")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/lwzoo-gpu-check"))
    p.add_argument("--only", nargs="*", help="run only these phases (default: all, in priority order)")
    p.add_argument("--command", default="", help="the command to record in RESULTS.md")
    p.add_argument("--json", type=Path, help="also write every row here, as JSON")
    a = p.parse_args()
    a.compile = False if a.compile in ("0", "false", "") else a.compile
    elapsed = time.time() - a.started if a.started else 0.0
    ctx = Context(
        a, torch.device(a.device), a.scratch, a.scratch / "jpegs", time.perf_counter() - elapsed + a.deadline,
        workers=os.cpu_count() or 1,
    )  # fmt: skip
    for name in ("jpegs", "cache", "runs"):  # what an earlier run left (pretrain() refuses a used run folder)
        shutil.rmtree(a.scratch / name, ignore_errors=True)
    os.environ["LWZOO_CACHE"] = str(a.scratch / "cache")  # the decode cache stays in the scratch folder
    plan = [ph for ph in phases(ctx) if (a.only is None or ph[0] in a.only) and (a.compile or "compiled" not in ph[0])]
    rows: list[Row] = []
    ctx.folder_info = write_jpeg_folder(ctx.folder, a.images, ctx.workers)
    ctx.n_images = a.images
    print(f"folder: {json.dumps(ctx.folder_info)}", flush=True)
    report(ctx, rows, [name for name, _, _ in plan])
    for i, (name, needs, run) in enumerate(plan):
        before = len(rows)
        rows.extend(run_phase(ctx, name, needs if ctx.device.type == "cuda" else 0, run))
        for r in rows[before:]:
            print(json.dumps(asdict(r)), flush=True)
        if "compiled" in name:
            torch.compiler.reset()  # frees the CUDA graphs' memory pool before the next phase
        report(ctx, rows, [n for n, _, _ in plan[i + 1 :]])


def run_phase(ctx: Context, name: str, needs: float, run: Callable[[], list[Row]]) -> list[Row]:
    """The phase's rows; one row saying why when it was skipped (too little time left) or failed."""
    px = 32 if name.startswith("step32") else ctx.args.image_size
    left = ctx.deadline - time.perf_counter()
    if left < max(needs, 1):
        return [Row(name, name, "-", px, status=f"skipped: {left:.0f} s left, needs ~{needs:.0f} s")]
    try:
        return run()
    except Exception as e:  # noqa: BLE001 -- report it and go on to the next phase
        reason = re.sub(r"\s+", " ", f"{type(e).__name__}: {e}")[:300].replace("|", "/")
        print(f"{name} failed: {reason}", flush=True)
        return [Row(name, name, "-", px, status=f"failed: {reason}")]


if __name__ == "__main__":
    main()
