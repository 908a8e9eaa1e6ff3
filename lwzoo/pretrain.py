"""``lwzoo pretrain``: MoCo v2 with smoothed InfoNCE on a timm backbone, with progress, metrics,
atomic checkpoints, exact resume and clean stops on Ctrl-C or SIGTERM."""

from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .archs import Arch, get_arch
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .config import parse_overrides
from .data import (
    BUILTIN,
    ImageSet,
    default_recipe_name,
    default_workers,
    is_builtin,
    labelled_sets,
    load_images,
)
from .devices import resolve_device
from .distributed import DistContext, from_environment, teardown
from .engine import Engine
from .errors import LwzooError
from .features import compute_features
from .files import RunLock, atomic_copy, atomic_write_text, check_writable_dir, remove_stale_temps
from .init_weights import InitWeights, load_init, record_line
from .metrics import MetricsLog
from .preprocess import Preprocess
from .progress import SILENT, LineProgress, Progress, fmt_time
from .recipe import Recipe, default_decode_size, fit_queue_to_data, load_recipe, recipe_from_dict, recipe_yaml
from .run_folder import CHECKPOINT, RECIPE, kept_checkpoint, latest_checkpoint, new_run_dir
from .scoring import accuracies, knn_predict
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
    notes: tuple[str, ...] = ()  # what lwzoo changed in the recipe for this run, and why
    init: InitWeights | None = None  # a new run's starting backbone weights (--init)

    @property
    def init_record(self) -> dict[str, Any] | None:
        """Where the run's backbone started: the new run's --init, or what its checkpoint recorded."""
        return self.init.record if self.init is not None else (self.ckpt or {}).get("init")


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
    init: str | Path | None,
    ctx: DistContext,
    held: ExitStack,
) -> _Plan:
    """Resolve what to run, a fresh run from a recipe (and ``init``'s weights) or the run a checkpoint continues,
    and lock its folder (``held`` releases the lock) before anything in it is read or written."""
    spec = get_arch(arch)
    if not resume:
        resolved, notes = _fresh_recipe(spec, recipe, overrides, data, epochs, batch_size)
        weights = load_init(init, spec) if init is not None else None  # a refused source leaves no run folder
        out_dir = Path(out) if out is not None else new_run_dir(spec.name, resolved.name)
        out_dir = ctx.broadcast(out_dir)  # one run folder name for every rank
        _lock(out_dir, ctx, held)
        if (out_dir / CHECKPOINT).exists():
            raise LwzooError(f"'{out_dir}' already holds a run; add --resume to continue it, or choose another --out")
        return _Plan(spec, resolved, seed, data, out_dir, None, notes, weights)

    if recipe is not None or overrides or epochs is not None or batch_size is not None:
        raise LwzooError(
            "--resume continues a run with the recipe saved in its checkpoint; "
            "drop --recipe/--set/--epochs/--batch-size/--compile, or start a new run without --resume"
        )
    path = _resume_path(spec, out, resume)
    out_dir = Path(out) if out is not None else path.parent
    _lock(out_dir, ctx, held)
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
        out_dir,
        ckpt,
    )


def _fresh_recipe(
    spec: Arch,
    recipe: str | Path | None,
    overrides: dict[str, Any] | list[str] | None,
    data: str | Path | None,
    epochs: int | None,
    batch_size: int | None,
) -> tuple[Recipe, tuple[str, ...]]:
    """The recipe with the user's overrides. A run shorter than the recipe's warmup gets the warmup scaled
    by the same factor as the run (a user's first short try is not refused), and a note saying so."""
    overrides = dict(parse_overrides(overrides) if isinstance(overrides, list) else overrides or {})
    if epochs is not None:
        overrides["train.epochs"] = epochs
    if batch_size is not None:
        overrides["train.batch_size"] = batch_size
    name = recipe if recipe is not None else default_recipe_name(spec, data)
    new_epochs = overrides.get("train.epochs")
    if "optim.warmup_epochs" not in overrides and isinstance(new_epochs, int) and new_epochs >= 1:
        base = load_recipe(name, {k: v for k, v in overrides.items() if k != "train.epochs"})
        warmup, old_epochs = base.optim.warmup_epochs, base.train.epochs
        if warmup >= new_epochs:
            scaled = warmup * new_epochs / old_epochs
            resolved = load_recipe(name, {**overrides, "optim.warmup_epochs": scaled})
            note = (
                f"optim.warmup_epochs {warmup:g} scaled to {scaled:.3g}: {new_epochs} epochs are not longer than "
                f"the recipe's warmup, so it keeps its share of the schedule ({warmup:g} of {old_epochs})"
            )
            return resolved, (note,)
    return load_recipe(name, overrides), ()


def _resume_path(spec: Arch, out: str | Path | None, resume: str | Path | bool) -> Path:
    """The checkpoint ``--resume`` names: the newest run (of ``out`` when given), a run folder or a file."""
    if resume is True or str(resume) in ("last", "auto"):
        path = Path(out) / CHECKPOINT if out is not None else latest_checkpoint(spec.name)
    else:
        path = Path(resume) / CHECKPOINT if Path(resume).is_dir() else Path(resume)
    if not path.exists() and path.name == CHECKPOINT and path.parent.is_dir():
        raise LwzooError(
            f"run folder '{path.parent}' has no checkpoint yet: its run stopped before the first save (the end of "
            f"epoch 1, --until-step or Ctrl-C); start it again without --resume: "
            f"lwzoo pretrain {spec.name} --out {path.parent} (with the options it had)"
        )
    return path


def _remove_if_unused(folder: Path) -> None:
    if folder.is_dir() and all(p.name == RunLock.NAME for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


def _lock(out_dir: Path, ctx: DistContext, held: ExitStack) -> None:
    """Take the run folder's lock (rank 0 takes it for the job); every rank raises if it is held elsewhere."""
    error = None
    if ctx.is_main:
        try:
            check_writable_dir(out_dir, "run")
            if not out_dir.exists():  # a run refused before it wrote anything leaves no empty folder behind
                held.callback(_remove_if_unused, out_dir)
            held.enter_context(RunLock(out_dir))
        except LwzooError as e:
            error = str(e)
        except OSError as e:
            error = f"cannot create the run folder '{out_dir}' ({e.strerror or type(e).__name__}); choose another --out"
    error = ctx.broadcast(error)
    if error:
        raise LwzooError(error)


class _Stop:
    """Turns SIGINT/SIGTERM into a request to stop after the current step; a second Ctrl-C aborts."""

    def __init__(self, progress: Progress) -> None:
        self.signal: str | None = None
        self.progress = progress

    def handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        self.progress.say(
            f"\n{self.signal}: saving a checkpoint after this step (Ctrl-C again to abort without saving)"
        )


@contextmanager
def _stop_on_signals(progress: Progress) -> Iterator[_Stop]:
    stop = _Stop(progress)
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
        try:
            self.train, self.val, self.val_map = labelled_sets(data, eval_data, preprocess.decode_size)
        except LwzooError as e:
            raise LwzooError(f"--eval-every: {e}") from None
        self.preprocess, self.device = preprocess, device

    def __call__(self, backbone: torch.nn.Module) -> float:
        train, _ = compute_features(backbone, self.preprocess, self.train, self.device)
        val, index = compute_features(backbone, self.preprocess, self.val, self.device)
        scores = knn_predict(train, self.train.labels, val, len(self.train.classes))
        return accuracies(scores, self.val_map[self.val.labels[index]], self.train.classes)[0]


class _LossMeter:
    """Sums the loss and the fit (:func:`lwzoo.losses.positive_fit`: instance accuracy, positive softmax mass) on
    the device, with no sync per step; reports window means, read once per window in one reduction over ranks,
    and epoch means of the loss."""

    FIT = ("instance_acc", "positive_mass")

    def __init__(self, device: torch.device, ctx: DistContext, epoch_sum: float = 0.0, epoch_count: int = 0) -> None:
        self.device, self.ctx, self.epoch_sum, self.epoch_count = device, ctx, epoch_sum, epoch_count

        self._reset_window()

    def _reset_window(self) -> None:
        self.window_sum, self.window_fit = torch.zeros((), device=self.device), torch.zeros(2, device=self.device)
        self.window_count, self.window_start = 0, time.perf_counter()

    def add(self, loss: torch.Tensor, fit: torch.Tensor) -> None:
        self.window_sum += loss
        self.window_fit += fit
        self.window_count += 1

    def flush(self) -> tuple[float, dict[str, float], int, float]:
        """Mean loss, mean fit (by :attr:`FIT` name), steps and seconds of the window since the last flush;
        folds the loss into the epoch."""
        n, seconds = self.window_count, time.perf_counter() - self.window_start
        means = [float("nan")] * (1 + len(self.FIT))
        if n:  # one all-reduce and one device-to-host copy for the whole window
            means = self.ctx.mean(torch.cat([self.window_sum.reshape(1), self.window_fit]) / n).tolist()
            self.epoch_sum, self.epoch_count = self.epoch_sum + means[0] * n, self.epoch_count + n
        self._reset_window()
        return means[0], dict(zip(self.FIT, means[1:], strict=True)), n, seconds

    def end_epoch(self) -> float:
        mean = self.epoch_sum / max(1, self.epoch_count)
        self.epoch_sum, self.epoch_count = 0.0, 0
        return mean


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
    lines += [f"note:   {note}" for note in plan.notes]
    lines += _init_lines(plan)
    if plan.ckpt is not None:
        lines.append(f"resume: from step {engine.step} ({engine.step // engine.steps_per_epoch} epochs done)")
    lines.append("recipe:\n  " + r.to_yaml().rstrip().replace("\n", "\n  "))
    return "\n".join(lines)


def _init_lines(plan: _Plan) -> list[str]:
    """What the header says about the starting weights: where they came from, what was dropped, what is fresh."""
    if plan.init_record is None:
        return []
    if plan.init is None:  # resumed: the checkpoint holds the weights, and --init is refused with --resume
        return [f"init:   the run started from {record_line(plan.init_record)}; resuming from its checkpoint"]
    lines = [
        f"init:   backbone of the query and key encoders from {record_line(plan.init.record)}; "
        "the projector, queue, optimizer and schedules start fresh"
    ]
    if plan.init.dropped:
        head = ", ".join(plan.init.dropped)
        lines.append(f"init:   dropped the source's classifier head ({head}): a backbone has none")
    if plan.recipe.moco.zero_init_residual:
        lines.append("init:   moco.zero_init_residual is not applied: the loaded weights are kept as they are")
    return lines


def _load_data(plan: _Plan, device: torch.device, progress: Progress) -> ImageSet:
    """The training images, decoded; a set that fits in a quarter of free GPU memory moves to the GPU."""
    r = plan.recipe
    images = load_images(
        plan.data,
        r.data.decode_size or default_decode_size(r.augment.image_size),
        in_memory_gb=r.data.in_memory_gb,
        workers=r.data.workers,
        whole=True,  # crops are drawn from the whole image, in its own frame
        progress=progress,
    )
    if device.type == "cuda" and images.images is not None:
        free, _ = torch.cuda.mem_get_info(device)
        if images.images.numel() < free // 4:  # decoded once, kept on the GPU as uint8, augmented there
            images.images = images.images.to(device)
            images.aspects = images.aspects.to(device) if images.aspects is not None else None
    return images


class _Run:
    """One pretraining run in its (locked) folder: the data, the engine, and the hooks the loop calls at the
    end of a log window and of an epoch (logging, the NaN check, the kNN monitor, checkpoints)."""

    def __init__(
        self,
        plan: _Plan,
        device: torch.device,
        ctx: DistContext,
        eval_every: int | None,
        eval_data: str | Path | None,
        progress: Progress,
    ) -> None:
        if eval_every is not None and eval_data is None and not is_builtin(plan.data):
            raise LwzooError("--eval-every needs --eval-data DIR, a labelled held-out folder (DIR/<class>/<image>)")
        if plan.recipe.train.batch_size % ctx.world_size:
            raise LwzooError(
                f"train.batch_size {plan.recipe.train.batch_size} must divide evenly over {ctx.world_size} processes "
                "(it is the global batch; each process takes batch_size / world_size)"
            )
        images = _load_data(plan, device, progress)
        if plan.ckpt is None:  # a resumed run keeps the queue its checkpoint holds
            recipe, note = fit_queue_to_data(plan.recipe, len(images))
            plan = replace(plan, recipe=recipe, notes=(*plan.notes, note)) if note else plan
        r = plan.recipe
        steps_per_epoch = len(images) // r.train.batch_size
        if steps_per_epoch == 0:
            raise LwzooError(
                f"batch size {r.train.batch_size} is larger than the {len(images)} images in {images.source}; "
                "lower --batch-size or add images"
            )
        self.plan, self.images, self.ctx, self.eval_every = plan, images, ctx, eval_every
        self.reporter, self.say = progress, progress.say
        self.out_dir = plan.out_dir
        self.monitor = (
            _KnnMonitor(plan.data, eval_data, Preprocess.from_recipe(r), device) if eval_every and ctx.is_main else None
        )
        self.engine = Engine(plan.arch, r, steps_per_epoch, plan.seed, device, ctx)
        self.meter, self.elapsed_before = _LossMeter(device, ctx), 0.0
        if plan.ckpt is not None:
            _restore(self.engine, plan.ckpt)
            self.meter = _LossMeter(device, ctx, *plan.ckpt["epoch_loss"])
            self.elapsed_before = plan.ckpt["elapsed_s"]
        elif plan.init is not None:  # before the queue is filled with the key encoder's keys
            self.engine.model.load_backbone(plan.init.state)
        if ctx.is_main:
            remove_stale_temps(self.out_dir)  # a save killed mid-write left a temp file; the lock says it is dead
            atomic_write_text(self.out_dir / RECIPE, recipe_yaml(r, plan.init_record))
        progress.say(_header(plan, self.engine, images))
        if plan.ckpt is None and r.moco.queue_init == "keys":
            self.engine.fill_queue(images)
        self.data_info = {
            "spec": str(plan.data) if plan.data is not None else BUILTIN,
            "source": images.source,
            "size": images.size,
            "num_images": len(images),
            "classes": images.classes,
            "skipped": len(images.skipped),
        }
        self.t_start = time.perf_counter()
        # a fresh run drops rows an earlier run in this folder logged before dying unsaved
        self.log = MetricsLog(self.out_dir, resume_step=self.engine.step, enabled=ctx.is_main)
        # a bar on a terminal; in a file, one line per log window (end_window asks for it)
        self.progress = progress.counter(self.engine.total_steps, unit="step", initial=self.engine.step, every_s=None)
        self.last_loss = float("nan")

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def save(self) -> None:
        if not self.ctx.is_main:  # every rank holds the same weights and queue; one writes them
            return
        extra = {"data": self.data_info, "epoch_loss": [self.meter.epoch_sum, self.meter.epoch_count]}
        extra |= {"elapsed_s": self.elapsed(), "world_size": self.ctx.world_size}
        if self.plan.init_record is not None:
            extra["init"] = self.plan.init_record
        save_checkpoint({**self.engine.state_dict(), **extra}, self.out_dir / CHECKPOINT)

    def train(self, until_step: int | None) -> PretrainResult:
        engine, r, ctx = self.engine, self.plan.recipe, self.ctx
        stop_at = min(engine.total_steps, until_step) if until_step is not None else engine.total_steps
        workers = default_workers() if r.data.workers is None else r.data.workers
        interrupted = None
        with self.log, self.progress, _stop_on_signals(self.reporter) as stop:
            while engine.step < stop_at and interrupted is None:
                epoch = engine.step // engine.steps_per_epoch
                engine.model.train()
                self.progress.set_description(f"epoch {epoch + 1}/{r.train.epochs}")
                start, shard = engine.step % engine.steps_per_epoch, {"rank": ctx.rank, "world_size": ctx.world_size}
                batches = self.images.batches(r.train.batch_size, epoch, self.plan.seed, start, workers, **shard)
                for images, aspects in batches:
                    self.meter.add(engine.train_step(images, aspects), engine.last_fit)
                    self.progress.update(1)
                    window_end = engine.step % r.train.log_every == 0 or engine.step == stop_at
                    if window_end:
                        self.end_window(epoch)
                    interrupted = _stop_requested(stop, ctx, window_end)
                    if engine.step >= stop_at or interrupted:
                        break
                self.meter.flush()
                if engine.step % engine.steps_per_epoch == 0:
                    self.end_epoch()
            if engine.step % engine.steps_per_epoch != 0:  # stopped mid-epoch, by a signal or --until-step
                self.save()
        teardown(ctx, engine.release)
        return self.summary(interrupted)

    def end_window(self, epoch: int) -> None:
        """Log the window's mean loss, fit and throughput; stop on a non-finite loss."""
        engine = self.engine
        self.last_loss, fit, n, seconds = self.meter.flush()
        if not math.isfinite(self.last_loss):
            last = self.out_dir / CHECKPOINT
            saved = f"the last checkpoint, {last}, is from before it" if last.is_file() else "no checkpoint was saved"
            raise LwzooError(
                f"the loss became {self.last_loss} at step {engine.step}; start a new run with a lower optim.lr "
                f"or a higher moco.temperature ({saved})"
            )
        ips = n * self.plan.recipe.train.batch_size / seconds
        sched = engine.last_schedule
        row = {"epoch": epoch, "loss": self.last_loss, **fit, "images_per_s": ips, "elapsed_s": self.elapsed()}
        self.log.log("step", engine.step, **row, **sched)
        self.progress.set_postfix(
            loss=f"{self.last_loss:.3f}",
            inst_acc=f"{fit['instance_acc']:.1%}",  # queries whose positive outscores every queue key
            pos_mass=f"{fit['positive_mass']:.3f}",  # mean softmax mass on the positive
            lr=f"{sched['lr']:.3g}",
            img_s=f"{ips:.0f}",
        )
        if isinstance(self.progress, LineProgress):
            self.progress.line()

    def end_epoch(self) -> None:
        """Log the epoch, run the kNN monitor when due, and save (keeping a copy every ``keep_every``)."""
        r, engine = self.plan.recipe, self.engine
        done, self.last_loss = engine.step // engine.steps_per_epoch, self.meter.end_epoch()
        self.log.log("epoch", engine.step, epoch=done, loss=self.last_loss, elapsed_s=self.elapsed())
        self.say(f"epoch {done}/{r.train.epochs}: loss {self.last_loss:.4f}")
        if self.monitor is not None and done % self.eval_every == 0:
            top1 = self.monitor(engine.model.backbone)
            self.log.log("eval", engine.step, epoch=done, knn_top1=top1)
            self.progress.set_postfix(loss=f"{self.last_loss:.3f}", knn=f"{top1:.1f}")
            self.say(f"epoch {done}/{r.train.epochs}: kNN top-1 {top1:.2f}% on {self.monitor.val.source}")
        self.save()
        if r.train.keep_every and done % r.train.keep_every == 0 and self.ctx.is_main:
            atomic_copy(self.out_dir / CHECKPOINT, self.out_dir / kept_checkpoint(done))

    def summary(self, interrupted: str | None) -> PretrainResult:
        engine, ckpt = self.engine, self.out_dir / CHECKPOINT
        say = self.say
        steps = f"{engine.step}/{engine.total_steps}"
        resume_hint = f"continue with: lwzoo pretrain {self.plan.arch.name} --resume {self.out_dir}"
        if interrupted:
            say(f"stopped by {interrupted} at step {steps}; checkpoint {ckpt}\n{resume_hint}")
        elif engine.step < engine.total_steps:
            say(f"paused at step {steps}; {resume_hint}")
        elif self.plan.ckpt is not None and self.plan.ckpt["step"] == engine.total_steps:
            say(f"done already: the run finished its {engine.total_steps} steps before; checkpoint {ckpt}")
        else:
            say(
                f"done: {engine.total_steps} steps in {fmt_time(self.elapsed())}, final epoch loss {self.last_loss:.4f}"
            )
            say(f"checkpoint: {ckpt}")
        return PretrainResult(self.out_dir, ckpt, engine.step, engine.total_steps, self.last_loss, interrupted)


def _restore(engine: Engine, ckpt: dict[str, Any]) -> None:
    try:
        engine.load_state_dict(ckpt)
        set_rng_state(ckpt["rng"])  # the resumed run draws the numbers the uninterrupted one would have
    except (KeyError, RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LwzooError(
            f"the checkpoint does not fit this lwzoo's model ({reason}); resume it with the lwzoo version that "
            "wrote it, or start a new run"
        ) from None


def _stop_requested(stop: _Stop, ctx: DistContext, window_end: bool) -> str | None:
    """The signal to stop on, if any. Alone, every step; under DDP all ranks must agree on the step, which
    costs a collective, so they agree once per log window."""
    if not ctx.enabled:
        return stop.signal
    if window_end and ctx.any(stop.signal is not None):
        return stop.signal or "SIGTERM"
    return None


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
    init: str | Path | None = None,
    progress: Progress = SILENT,
) -> PretrainResult:
    """Pretrain ``arch`` with MoCo v2 and smoothed InfoNCE, writing checkpoints to a run folder.

    Args:
        arch: an lwzoo architecture name (``lwzoo.list_archs()``) or its timm name.
        recipe: a shipped recipe name or a YAML path. Default: the arch's tuned recipe, or the
            ``demo`` recipe when training on the built-in data.
        overrides: dotted recipe keys to override, as a dict or ``["optim.lr=0.06", ...]``.
        data: a folder of images (searched recursively), or None / ``"builtin"`` for the demo set.
        epochs, batch_size: shortcuts for ``train.epochs`` and ``train.batch_size``. Fewer epochs than the
            recipe's warmup scale the warmup by the same factor (and say so).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        out: the run folder. Default: ``runs/<arch>/<recipe>-<time>``. A process training into a folder
            holds its lock; a second one is refused.
        resume: continue a run: True for the newest run of ``arch`` (or ``out``'s), or a checkpoint
            path or run folder. The recipe, seed and data come from the checkpoint.
        seed: seeds initialisation, data order and augmentation.
        until_step: stop (with a checkpoint) once this global step is reached; the schedule still
            spans the whole recipe, and a later ``resume`` carries on.
        eval_every: every this many epochs, score the backbone by kNN (k 20, T 0.07): the labelled
            training data votes, ``eval_data`` (default: the built-in held-out split) is scored.
            The result goes to metrics.jsonl (``kind: eval``), TensorBoard and the progress line.
        eval_data: a labelled held-out folder for ``eval_every``.
        init: start a new run's backbone (query and key encoder alike) from given weights: ``"timm"`` (timm's
            ImageNet weights for the arch, from the Hugging Face cache), a ``.safetensors`` file in timm's key
            names, an ``lwzoo export`` folder or zoo name, or a checkpoint or run folder (its query backbone).
            The projector, queue, optimizer and schedules start fresh, ``moco.zero_init_residual`` is not
            applied, and a classifier head in the source is dropped. The source, its file and sha256 are
            recorded in the checkpoint and recipe.yaml. Refused with ``resume``, whose checkpoint has the weights.
        progress: where the recipe, progress and summary go (:class:`lwzoo.progress.Progress`); the default
            shows nothing, ``lwzoo.progress.Console()`` shows a bar on a terminal and a line per log window in a
            file, as the CLI does.
    """
    if until_step is not None and until_step < 1:
        raise LwzooError(f"--until-step must be at least 1 (the first step), got {until_step}")
    if eval_every is not None and eval_every < 1:
        raise LwzooError(f"--eval-every must be at least 1 epoch, got {eval_every}")
    if init is not None and resume:
        raise LwzooError("--init applies to a new run; --resume continues from the checkpoint's weights; drop --init")
    dev = resolve_device(device)
    ctx = from_environment(dev)  # torchrun's process group (each rank on its own GPU), or a single process
    with ExitStack() as held:  # the run folder's lock, held until the run ends
        plan = _plan(arch, recipe, overrides, data, epochs, batch_size, out, resume, seed, init, ctx, held)
        if until_step is not None and plan.ckpt is not None and until_step <= plan.ckpt["step"]:
            raise LwzooError(
                f"--until-step {until_step} is not beyond the checkpoint's step {plan.ckpt['step']}; pass a later step"
            )
        run = _Run(plan, ctx.device, ctx, eval_every, eval_data, progress if ctx.is_main else SILENT)
        return run.train(until_step)
