"""Pretraining checkpoints: written atomically, read back with clear errors.

A checkpoint is a plain dict of tensors and builtins (so ``torch.load(weights_only=True)`` reads it,
and nothing arbitrary is unpickled) holding everything later stages need: the arch, the resolved
recipe, model/optimizer/scaler state, the queue, epoch and step, RNG states, the data it saw and the
lwzoo version. A run started from given weights (``lwzoo pretrain --init``) also holds ``init``, the record of
where its backbone started (:class:`lwzoo.init_weights.InitWeights`), which every later save keeps.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import LwzooError
from .files import temp_name
from .run_folder import CHECKPOINT
from .version import __version__

FORMAT = "lwzoo-pretrain/1"
# What resume, eval and export read from a checkpoint; each is written by every lwzoo-pretrain/1 save.
REQUIRED_KEYS = (
    "arch", "recipe", "seed", "step", "epoch", "total_steps", "model", "optimizer", "rng", "data", "epoch_loss",
    "elapsed_s",
)  # fmt: skip


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over it: a crash mid-write
    leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Save a pretraining checkpoint: ``state`` (the engine's and the run's) with the format tag, the lwzoo
    version and every RNG state, so a resumed run draws the same numbers."""
    return atomic_save({**state, "format": FORMAT, "lwzoo_version": __version__, "rng": rng_state()}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an lwzoo pretraining checkpoint onto the CPU, or raise LwzooError saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        if path.name == CHECKPOINT and path.parent.is_dir():
            raise LwzooError(
                f"'{path.parent}' holds no {CHECKPOINT}: no run has saved a checkpoint there yet; "
                "pass a run folder or checkpoint that `lwzoo pretrain` wrote"
            )
        raise LwzooError(f"checkpoint '{path}' does not exist; pass a checkpoint file or run folder that exists")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols before failing
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # torch's restricted unpickler, fed bytes that are not a checkpoint (a photo, a text file), can fail with any of
    # these, IndexError and KeyError included (seen: 'pop from empty list' on a text file)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError, IndexError,
            KeyError, TypeError, AttributeError) as e:  # fmt: skip
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in reason:
            # lwzoo never unpickles arbitrary objects, so it does not pass on torch's advice to do so
            reason = "it holds Python objects that lwzoo does not load, or is damaged"
        raise LwzooError(
            f"checkpoint '{path}' is corrupt or not a PyTorch file ({reason}); "
            "resume from an earlier checkpoint or start a new run"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise LwzooError(f"'{path}' is not an lwzoo pretraining checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise LwzooError(
            f"checkpoint '{path}' is missing {', '.join(repr(k) for k in missing)}: it is damaged or was edited; "
            "resume from an earlier checkpoint or start a new run"
        )
    return ckpt


def read_init(path: str | Path) -> dict[str, Any] | None:
    """The ``init`` record of a checkpoint that :func:`load_checkpoint` has accepted, or None for a run that
    started from a random initialisation. The file is memory-mapped, so its tensors are not read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return ckpt.get("init")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
