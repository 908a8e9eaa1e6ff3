"""``lwzoo pretrain``: MoCo v2 with smoothed InfoNCE on a timm backbone, with progress, metrics,
atomic checkpoints, exact resume and clean stops on Ctrl-C or SIGTERM."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .archs import Arch, default_recipe_name, get_arch
from .checkpoint import LAST, atomic_copy, atomic_save, atomic_write_text, load_checkpoint
from .config import parse_overrides
from .data import BUILTIN, ImageSet, default_workers, is_builtin, load_images
from .distributed import DistContext, from_environment, teardown
from .engine import Engine, resolve_device
from .errors import LwzooError
from .features import compute_features
from .metrics import MetricsLog
from .preprocess import Preprocess
from .recipe import Recipe, load_recipe, recipe_from_dict
from .runs import latest_checkpoint, new_run_dir
from .version import __version__


@dataclass(frozen=True)
class PretrainResult:
    """What a pretraining call left behind.

    Attributes:
        out_dir: the run folder.
        checkpoint: ``out_dir/checkpoint-last.pt``.
        step: optimizer steps done so far (of ``total_steps``).
        total_steps: steps the recipe's schedule spans.
        loss: mean loss of the last epoch finished (or of the last steps, when stopped mid-epoch).
        interrupted: ``"SIGINT"`` or ``"SIGTERM"`` when a signal stopped the run early, else None.
    """

    out_dir: Path
    checkpoint: Path
    step: int
    total_steps: int
    loss: float
    interrupted: str | None = None

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


@dataclass(frozen=True)
class _Plan:
    arch: Arch
    recipe: Recipe
    seed: int
    data: str | Path | None
    out_dir: Path
    ckpt: dict[str, Any] | None


def _plan(
    arch: str,
    recipe: str | Path | None,
    overrides: dict[str, Any] | list[str] | None,
    data: str | Path | None,
    epochs: int | None,
    batch_size: int | None,
    out: str | Path | None,
    resume: str | Path | bool | None,
    seed: int,
) -> _Plan:
    """Resolve what to run: a fresh run from a recipe, or the run a checkpoint continues."""
    spec = get_arch(arch)
    if not resume:
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        overrides = dict(overrides or {})
        if epochs is not None:
            overrides["train.epochs"] = epochs
        if batch_size is not None:
            overrides["train.batch_size"] = batch_size
        resolved = load_recipe(recipe if recipe is not None else default_recipe_name(spec, data), overrides)
        out_dir = Path(out) if out is not None else new_run_dir(spec.name, resolved.name)
        if (out_dir / LAST).exists():
            raise LwzooError(f"'{out_dir}' already holds a run; add --resume to continue it, or choose another --out")
        return _Plan(spec, resolved, seed, data, out_dir, None)

    if recipe is not None or overrides or epochs is not None or batch_size is not None:
        raise LwzooError(
            "--resume continues a run with the recipe saved in its checkpoint; "
            "drop --recipe/--set/--epochs/--batch-size, or start a new run without --resume"
        )
    if resume is True or str(resume) in ("last", "auto"):
        path = Path(out) / LAST if out is not None else latest_checkpoint(spec.name)
    else:
        path = Path(resume) / LAST if Path(resume).is_dir() else Path(resume)
    ckpt = load_checkpoint(path)
    if ckpt["arch"] != spec.name:
        raise LwzooError(
            f"'{path}' is a {ckpt['arch']} run, not {spec.name}; run `lwzoo pretrain {ckpt['arch']} --resume {path}`"
        )
    return _Plan(
        spec,
        recipe_from_dict(ckpt["recipe"], source=str(path)),
        ckpt["seed"],
        data if data is not None else ckpt["data"]["spec"],  # --data may point at data that moved
        Path(out) if out is not None else path.parent,
        ckpt,
    )


class _Stop:
    """Turns SIGINT/SIGTERM into a request to stop after the current step; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        tqdm.write(f"\n{self.signal}: saving a checkpoint after this step (Ctrl-C again to abort without saving)")


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _KnnMonitor:
    """kNN top-1 of the backbone during pretraining: the labelled training data votes, held-out data is scored."""

    def __init__(self, data: str | Path | None, eval_data: str | Path | None, preprocess: Preprocess, device) -> None:
        from .evaluate import eval_data as labelled_sets

        try:
            self.train, self.val, self.val_map = labelled_sets(data, eval_data, preprocess.decode_size)
        except LwzooError as e:
            raise LwzooError(f"--eval-every: {e}") from None
        self.preprocess, self.device = preprocess, device

    def __call__(self, backbone: torch.nn.Module) -> float:
        from .evaluate import accuracies, knn_predict

        train, _ = compute_features(backbone, self.preprocess, self.train, self.device, verbose=False)
        val, index = compute_features(backbone, self.preprocess, self.val, self.device, verbose=False)
        scores = knn_predict(train, self.train.labels, val, len(self.train.classes))
        return accuracies(scores, self.val_map[self.val.labels[index]], self.train.classes)[0]


class _LossMeter:
    """Sums losses on the device (no sync per step) and reports window and epoch means."""

    def __init__(self, device: torch.device, ctx: DistContext, epoch_sum: float = 0.0, epoch_count: int = 0) -> None:
        self.device, self.ctx, self.epoch_sum, self.epoch_count = device, ctx, epoch_sum, epoch_count

        self._reset_window()

    def _reset_window(self) -> None:
        self.window_sum, self.window_count, self.window_start = (
            torch.zeros((), device=self.device),
            0,
            time.perf_counter(),
        )

    def add(self, loss: torch.Tensor) -> None:
        self.window_sum += loss
        self.window_count += 1

    def flush(self) -> tuple[float, int, float]:
        """Mean loss, steps and seconds of the window since the last flush; folds it into the epoch."""
        n, seconds = self.window_count, time.perf_counter() - self.window_start
        mean = self.ctx.mean(self.window_sum / n).item() if n else float("nan")  # over ranks

        if n:
            self.epoch_sum, self.epoch_count = self.epoch_sum + mean * n, self.epoch_count + n
        self._reset_window()
        return mean, n, seconds

    def end_epoch(self) -> float:
        mean = self.epoch_sum / max(1, self.epoch_count)
        self.epoch_sum, self.epoch_count = 0.0, 0
        return mean


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _header(plan: _Plan, engine: Engine, images: ImageSet) -> str:
    r, a = plan.recipe, plan.arch
    amp = f"AMP {str(engine.amp).removeprefix('torch.')}" if engine.amp else "fp32"
    lines = [
        f"lwzoo {__version__} pretrain: {a.name} (timm {a.timm_name}), recipe '{r.name}' [{r.digest()}]",
        f"data:   {images.describe()}",
    ]
    if images.skipped:
        path, reason = images.skipped[0]
        lines.append(f"        skipped {len(images.skipped)} unreadable image(s), first: {path} ({reason})")
    if is_builtin(plan.data):
        lines += [
            "        This is lwzoo's built-in demo set (two-tone textures, generated offline) "
            "for trying lwzoo in minutes.",
            "        For real use pass --data DIR, a folder of your images (class sub-folders are kept as labels).",
        ]
    lines += [
        f"device: {engine.device} ({amp}, channels_last)",
        f"output: {plan.out_dir}",
        f"steps:  {r.train.epochs} epochs x {engine.steps_per_epoch} = {engine.total_steps} steps of "
        f"{r.train.batch_size} images; lr {engine.base_lr:.4g} ({r.optim.lr:g} per {r.optim.lr_batch_size}), "
        f"warmup {engine.warmup_steps} steps",
    ]
    if plan.ckpt is not None:
        lines.append(f"resume: from step {engine.step} ({engine.step // engine.steps_per_epoch} epochs done)")
    lines.append("recipe:\n  " + r.to_yaml().rstrip().replace("\n", "\n  "))
    return "\n".join(lines)


def pretrain(
    arch: str,
    recipe: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    data: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    resume: str | Path | bool | None = None,
    seed: int = 0,
    until_step: int | None = None,
    eval_every: int | None = None,
    eval_data: str | Path | None = None,
    verbose: bool = True,
) -> PretrainResult:
    """Pretrain ``arch`` with MoCo v2 and smoothed InfoNCE, writing checkpoints to a run folder.

    Args:
        arch: an lwzoo architecture name (``lwzoo.list_archs()``) or its timm name.
        recipe: a shipped recipe name or a YAML path. Default: the arch's tuned recipe, or the
            ``demo`` recipe when training on the built-in data.
        overrides: dotted recipe keys to override, as a dict or ``["optim.lr=0.06", ...]``.
        data: a folder of images (searched recursively), or None / ``"builtin"`` for the demo set.
        epochs, batch_size: shortcuts for ``train.epochs`` and ``train.batch_size``.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        out: the run folder. Default: ``runs/<arch>/<recipe>-<time>``.
        resume: continue a run: True for the newest run of ``arch`` (or ``out``'s), or a checkpoint
            path or run folder. The recipe, seed and data come from the checkpoint.
        seed: seeds initialisation, data order and augmentation.
        until_step: stop (with a checkpoint) once this global step is reached; the schedule still
            spans the whole recipe, and a later ``resume`` carries on.
        eval_every: every this many epochs, score the backbone by kNN (k 20, T 0.07): the labelled
            training data votes, ``eval_data`` (default: the built-in held-out split) is scored.
            The result goes to metrics.jsonl (``kind: eval``), TensorBoard and the progress line.
        eval_data: a labelled held-out folder for ``eval_every``.
        verbose: print the recipe, a progress bar and a summary.
    """
    dev = resolve_device(device)
    ctx = from_environment(dev)  # torchrun's process group, or a single process
    if ctx.enabled and dev.type == "cuda":
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
    verbose = verbose and ctx.is_main
    say = print if verbose else (lambda *_: None)
    plan = _plan(arch, recipe, overrides, data, epochs, batch_size, out, resume, seed)
    plan = ctx.broadcast(plan) if plan.ckpt is None else plan  # one run folder name for every rank

    if eval_every is not None and eval_every < 1:
        raise LwzooError(f"--eval-every must be at least 1 epoch, got {eval_every}")
    if eval_every is not None and eval_data is None and not is_builtin(plan.data):
        raise LwzooError("--eval-every needs --eval-data DIR, a labelled held-out folder (DIR/<class>/<image>)")
    r, out_dir = plan.recipe, plan.out_dir
    if r.train.batch_size % ctx.world_size:
        raise LwzooError(
            f"train.batch_size {r.train.batch_size} must divide evenly over {ctx.world_size} processes "
            "(it is the global batch; each process takes batch_size / world_size)"
        )
    images = load_images(
        plan.data,
        r.data.decode_size or round(r.augment.image_size * 8 / 7),
        in_memory_gb=r.data.in_memory_gb,
        workers=r.data.workers,
    )
    if dev.type == "cuda" and images.images is not None:
        free, _ = torch.cuda.mem_get_info(dev)
        if images.images.numel() < free // 4:  # decoded once, kept on the GPU as uint8, augmented there
            images.images = images.images.to(dev)
    steps_per_epoch = len(images) // r.train.batch_size

    if steps_per_epoch == 0:
        raise LwzooError(
            f"batch size {r.train.batch_size} is larger than the {len(images)} images in {images.source}; "
            "lower --batch-size or add images"
        )
    monitor = _KnnMonitor(plan.data, eval_data, Preprocess.from_recipe(r), dev) if eval_every and ctx.is_main else None
    engine = Engine(plan.arch, r, steps_per_epoch, plan.seed, dev, ctx)
    meter, elapsed_before = _LossMeter(dev, ctx), 0.0
    if plan.ckpt is not None:
        engine.load_state_dict(plan.ckpt)
        meter, elapsed_before = _LossMeter(dev, ctx, *plan.ckpt["epoch_loss"]), plan.ckpt["elapsed_s"]

    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "recipe.yaml", r.to_yaml())

    say(_header(plan, engine, images))
    if plan.ckpt is None and r.moco.queue_init == "keys":
        engine.fill_queue(images)

    data_info = {
        "spec": str(plan.data) if plan.data is not None else BUILTIN,
        "source": images.source,
        "size": images.size,
        "num_images": len(images),
        "classes": images.classes,
        "skipped": len(images.skipped),
    }
    t_start = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    def save() -> None:
        if not ctx.is_main:  # every rank holds the same weights and queue; one writes them
            return
        extra = {"data": data_info, "epoch_loss": [meter.epoch_sum, meter.epoch_count], "elapsed_s": elapsed()}
        extra["world_size"] = ctx.world_size
        atomic_save({**engine.state_dict(), **extra}, out_dir / LAST)

    stop_at = min(engine.total_steps, until_step) if until_step is not None else engine.total_steps
    workers = default_workers() if r.data.workers is None else r.data.workers
    log = MetricsLog(out_dir, resume_step=engine.step if plan.ckpt is not None else None, enabled=ctx.is_main)
    last_loss, interrupted, stopping = float("nan"), None, False

    try:
        with (
            _stop_on_signals() as stop,
            tqdm(
                total=engine.total_steps, initial=engine.step, unit="step", disable=not verbose, file=sys.stdout
            ) as bar,
        ):
            while engine.step < stop_at and not stopping:
                epoch = engine.step // steps_per_epoch
                engine.model.train()
                bar.set_description(f"epoch {epoch + 1}/{r.train.epochs}")
                start = engine.step % steps_per_epoch
                shard = {"rank": ctx.rank, "world_size": ctx.world_size}
                for batch in images.batches(r.train.batch_size, epoch, plan.seed, start, workers, **shard):
                    meter.add(engine.train_step(batch))
                    bar.update(1)
                    if engine.step % r.train.log_every == 0 or engine.step == stop_at:
                        last_loss, n, seconds = meter.flush()
                        if not math.isfinite(last_loss):
                            raise LwzooError(
                                f"the loss became {last_loss} at step {engine.step}; lower optim.lr or raise "
                                f"moco.temperature (the last good checkpoint is {out_dir / LAST})"
                            )
                        ips = n * r.train.batch_size / seconds
                        sched = engine.last_schedule
                        log.log(
                            "step",
                            engine.step,
                            epoch=epoch,
                            loss=last_loss,
                            images_per_s=ips,
                            elapsed_s=elapsed(),
                            **sched,
                        )
                        bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{sched['lr']:.3g}", img_s=f"{ips:.0f}")
                    stopping = ctx.any(stop.signal is not None)  # every rank stops at the same step
                    if engine.step >= stop_at or stopping:
                        break

                meter.flush()
                if engine.step % steps_per_epoch == 0:
                    done, last_loss = engine.step // steps_per_epoch, meter.end_epoch()
                    log.log("epoch", engine.step, epoch=done, loss=last_loss, elapsed_s=elapsed())
                    if verbose:
                        tqdm.write(f"epoch {done}/{r.train.epochs}: loss {last_loss:.4f}")
                    if monitor is not None and done % eval_every == 0:
                        top1 = monitor(engine.model.backbone)
                        log.log("eval", engine.step, epoch=done, knn_top1=top1)
                        bar.set_postfix(loss=f"{last_loss:.3f}", knn=f"{top1:.1f}")
                        if verbose:
                            tqdm.write(f"epoch {done}/{r.train.epochs}: kNN top-1 {top1:.2f}% on {monitor.val.source}")
                    save()
                    if r.train.keep_every and done % r.train.keep_every == 0:
                        atomic_copy(out_dir / LAST, out_dir / f"checkpoint-epoch{done:04d}.pt")
            interrupted = (stop.signal or "SIGTERM") if stopping else None
        if engine.step % steps_per_epoch != 0:  # stopped mid-epoch, by a signal or --until-step
            save()
    finally:
        log.close()
    teardown(ctx, engine.release)

    resume_hint = f"continue with: lwzoo pretrain {plan.arch.name} --resume {out_dir}"
    if interrupted:
        say(f"stopped by {interrupted} at step {engine.step}/{engine.total_steps}; checkpoint {out_dir / LAST}")
        say(resume_hint)
    elif engine.step < engine.total_steps:
        say(f"paused at step {engine.step}/{engine.total_steps}; {resume_hint}")
    else:
        say(f"done: {engine.total_steps} steps in {_fmt_time(elapsed())}, final epoch loss {last_loss:.4f}")
        say(f"checkpoint: {out_dir / LAST}")
    return PretrainResult(out_dir, out_dir / LAST, engine.step, engine.total_steps, last_loss, interrupted)
