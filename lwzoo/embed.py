"""``lwzoo.embed()``: the features of every image in a folder, from any encoder :func:`lwzoo.load` opens,
written to one ``.npz`` file.

Why ``.npz``: numpy reads it natively and pandas through numpy, so the file needs neither lwzoo nor a
new dependency, and every array in it is numeric or fixed-width unicode, so ``np.load`` reads it with
its default ``allow_pickle=False``: opening a file someone sent you runs no code. The file holds:

- ``features``: float32 (N, D), row i the encoder's features of ``paths[i]``;
- ``paths``: unicode (N,), the images' paths relative to the folder (``/``-separated), sorted;
- ``skipped_paths``, ``skipped_reasons``: unicode (K,), the images that could not be read, and why;
- ``meta``: a unicode scalar, JSON: model, source, arch, backend, preprocessing, lwzoo version,
  date (UTC), folder and counts.

Reading it back::

    import json, numpy as np, pandas as pd

    f = np.load("features.npz")
    df = pd.DataFrame(f["features"], index=f["paths"])  # N rows x D feature columns, indexed by path
    meta = json.loads(f["meta"].item())

Images are decoded by DataLoader workers with :func:`lwzoo.preprocess.eval_square` at the encoder's
``decode_size`` and normalised by its ``config``: exactly ``FeatureExtractor.preprocess``, so the rows
equal ``lwzoo.load(model)(images)``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .data import decoded_items, default_workers, scan_folder
from .devices import resolve_device
from .errors import LwzooError
from .files import check_writable_dir, remove_stale_temps, temp_name
from .load import FeatureExtractor, load
from .progress import SILENT, Progress
from .version import __version__


@dataclass
class EmbedResult:
    """What :func:`embed` wrote.

    Attributes:
        out: the ``.npz`` file.
        paths: the N images embedded, relative to the folder, in the file's row order.
        skipped: (relative path, reason) of the K images that could not be read.
        feature_dim: D.
        meta: the file's ``meta`` record.
    """

    out: Path
    paths: list[str]
    skipped: list[tuple[str, str]]
    feature_dim: int
    meta: dict = field(default_factory=dict)


def embed(
    model: str | Path,
    folder: str | Path,
    out: str | Path,
    backend: str = "onnx",
    device: str | torch.device | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    force: bool = False,
    progress: Progress = SILENT,
) -> EmbedResult:
    """Write the features of every image under ``folder`` (recursive) to the ``.npz`` file ``out``.

    Args:
        model: a zoo name, a Hub repo id (``org/name[@revision]``) or an export folder, as for :func:`lwzoo.load`.
        backend: ``"onnx"`` (onnxruntime on ``model.onnx``) or ``"torch"`` (safetensors into timm).
        device: for the torch backend: ``auto`` / None (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: images per forward pass.
        workers: decoding processes; default ``min(8, CPUs)``, 0 decodes in this process.
        force: replace an existing ``out``; without it an existing file is an error.
        progress: where progress and the summary go (default: nowhere; the CLI passes a Console). Warnings
            about unreadable images go to Python's ``warnings`` either way.

    Unreadable images are skipped, listed in the file and warned about after the pass; if none can be
    read it is an error. The file is written beside ``out`` under a temporary name and renamed into
    place, so a failed or interrupted run leaves an earlier ``out`` as it was.
    """
    out = _check_out(out, force)
    if batch_size < 1 or (workers is not None and workers < 0):
        raise LwzooError(f"--batch-size must be >= 1 and --workers >= 0, got {batch_size} and {workers}")
    root = _image_folder(folder)
    paths, _, _ = scan_folder(root)
    fx = load(model, backend=backend, device=_torch_device(device, backend))
    workers = default_workers() if workers is None else workers
    features, kept, failed = _extract(fx, paths, batch_size, workers, progress)
    relative = [p.relative_to(root).as_posix() for p in paths]
    skipped = [(relative[i], reason) for i, reason in failed]
    if not kept:
        first, reason = skipped[0]
        raise LwzooError(f"none of the {len(paths)} images under '{root}' could be read (first: {first}: {reason})")
    meta = _meta(model, fx, root, len(kept), len(skipped))
    _write_npz(
        out,
        features=features,
        paths=np.array([relative[i] for i in kept], dtype=str),
        skipped_paths=np.array([p for p, _ in skipped], dtype=str),
        skipped_reasons=np.array([r for _, r in skipped], dtype=str),
        meta=np.array(json.dumps(meta)),
    )
    _warn_skipped(skipped, len(paths), out)
    progress.say(f"wrote {out}: features {features.shape[0]:,} x {features.shape[1]} of {fx.arch.name} ({fx.backend})")
    return EmbedResult(out, [relative[i] for i in kept], skipped, fx.feature_dim, meta)


def _extract(
    fx: FeatureExtractor, paths: list[Path], batch_size: int, workers: int, progress: Progress
) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """(features (N, D) float32 of the readable images, their indices into ``paths``, (index, reason) of the rest)."""
    chunks, kept, failed = [], [], []
    with progress.counter(len(paths), "embedding", "img") as bar:
        for items in decoded_items(paths, fx.config.decode_size, batch_size, workers):  # the evaluation layout
            failed += [(i, reason) for i, x, _, reason in items if x is None]
            ok = [(i, x) for i, x, _, _ in items if x is not None]
            if ok:
                squares = torch.stack([x for _, x in ok])  # B x 3 x decode x decode uint8
                chunks.append(fx(fx.config(squares)).numpy().astype(np.float32, copy=False))  # B x D
                kept += [i for i, _ in ok]
            if failed:
                bar.set_postfix(skipped=len(failed))
            bar.update(len(items))
    features = np.concatenate(chunks) if chunks else np.empty((0, fx.feature_dim), np.float32)  # N x D
    return features, kept, failed


def _check_out(out: str | Path, force: bool) -> Path:
    """``out`` as a Path, refused early (before any work) when it cannot or may not be written."""
    out = Path(out).expanduser()
    if out.suffix != ".npz":
        raise LwzooError(f"--out must name a .npz file (numpy's archive format), got '{out}'; e.g. --out features.npz")
    if out.is_dir():
        raise LwzooError(f"'{out}' is a folder; --out must name a .npz file")
    if out.exists() and not force:
        raise LwzooError(f"'{out}' already exists; pass --force to replace it, or choose another --out")
    existing = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if not existing.is_dir():  # said here, as check_writable_dir would call the folder '--out'
        raise LwzooError(f"cannot write '{out}': '{existing}' is a file, not a folder; choose another --out")
    check_writable_dir(out.parent, "features file")  # creates nothing: a failed run leaves no empty folders
    return out


def _image_folder(folder: str | Path) -> Path:
    root = Path(folder).expanduser()
    if not root.exists():
        raise LwzooError(f"'{root}' does not exist; lwzoo embed takes a folder of images")
    if not root.is_dir():
        raise LwzooError(f"'{root}' is a file; lwzoo embed takes a folder of images (searched recursively)")
    return root


def _torch_device(device: str | torch.device | None, backend: str) -> torch.device | None:
    """The torch device to load on; onnxruntime runs on the CPU, so another device there is an error."""
    if backend not in ("onnx", "torch"):
        raise LwzooError(f"--backend must be onnx or torch, got {backend!r}")
    if backend == "onnx":
        if device is not None and str(device) not in ("auto", "cpu"):
            raise LwzooError(f"--device {device} needs --backend torch (the onnx backend runs on the CPU)")
        return None
    return resolve_device("auto" if device is None else device)


def _meta(model: str | Path, fx: FeatureExtractor, root: Path, n: int, k: int) -> dict:
    p = fx.config
    return {
        "model": str(model),
        "source": fx.source,
        "arch": fx.arch.name,
        "timm_name": fx.arch.timm_name,
        "feature_dim": fx.feature_dim,
        "backend": fx.backend,
        "device": str(fx.device),
        "preprocessing": {
            **asdict(p),
            "decode_size": p.decode_size,
            "steps": f"shorter side to {p.decode_size} ({p.interpolation}), centre-crop {p.decode_size}, "
            f"centre-crop {p.image_size}, /255, (x - mean) / std",
        },
        "folder": str(root.resolve()),
        "images": n,
        "skipped": k,
        "lwzoo_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_npz(out: Path, **arrays: np.ndarray) -> None:
    """All of ``arrays`` into ``out`` at once: written to a temporary file beside it, then renamed over it."""
    tmp = temp_name(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out.parent, of=out.name)  # what a killed earlier run left
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temporary name
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as e:
        raise LwzooError(f"cannot write '{out}': {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _warn_skipped(skipped: list[tuple[str, str]], total: int, out: Path) -> None:
    for path, reason in skipped:
        warnings.warn(f"skipped unreadable image {path}: {reason}", stacklevel=3)
    if skipped:
        warnings.warn(
            f"{len(skipped)} of {total} images could not be read and were skipped "
            f"(listed in {out} as skipped_paths, skipped_reasons)",
            stacklevel=3,
        )
