"""Image data: a folder of images (searched recursively, class sub-folders kept as labels) or the
built-in demo set, decoded once to square uint8 tensors and served as batches in a seeded order.

Two layouts. For evaluation an image is stored as its centre square (the shorter side resized), the
paper's preprocessing. For training it is stored whole: squashed to S x S with its aspect ratio kept
beside it, so random-resized crops are drawn in the original frame and reach the sides of a 4:3
photo, as torchvision's RandomResizedCrop on the original image does.

Small sets are decoded into memory (and cached on disk, so the next run starts at once); sets larger
than ``data.in_memory_gb`` are decoded on the fly by DataLoader workers. Either way a batch is a
uint8 tensor (B, 3, S, S) with its aspect ratios (B,), and augmentation happens afterwards on the
training device.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from .archs import Arch
from .builtin_data import CLASSES as BUILTIN_CLASSES
from .builtin_data import SEED as BUILTIN_SEED
from .builtin_data import SPLITS as BUILTIN_SPLITS
from .builtin_data import render_textures
from .env import cache_dir
from .errors import LwzooError
from .preprocess import chw_uint8, eval_square, to_rgb
from .progress import SILENT, Progress

log = logging.getLogger("lwzoo")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
BUILTIN = "builtin"


@dataclass
class ImageSet:
    """Images with optional class labels.

    Attributes:
        source: ``"builtin:<split>"`` or the folder's resolved path.
        size: side of the square uint8 images.
        classes: class names (sub-folder names); empty when the folder has no class layout.
        labels: (N,) class indices, or None without class folders.
        images: (N, 3, S, S) uint8 when held in memory, else None (streamed from ``paths``).
        aspects: (N,) width / height of each original image when stored whole (``whole``), for held sets.
        paths: image files, for streamed folders.
        skipped: (path, reason) of unreadable images left out.
        key: identifies the content (files, sizes, mtimes, decode size, layout), for caches.
        whole: True when each image is stored whole (squashed, training layout), False for centre squares.
    """

    source: str
    size: int
    classes: list[str]
    labels: torch.Tensor | None
    images: torch.Tensor | None = None
    aspects: torch.Tensor | None = None
    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    key: str = ""
    whole: bool = False

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths)

    def describe(self) -> str:
        where = "streamed from disk" if self.images is None else "in GPU memory" if self.images.is_cuda else "in memory"

        cls = f"{len(self.classes)} classes" if self.classes else "no class folders"
        layout = "whole images squashed to" if self.whole else "centre squares of"
        return f"{len(self):,} images ({cls}) from {self.source}, {layout} {self.size}px, {where}"

    def batches(
        self,
        batch_size: int,
        epoch: int,
        seed: int,
        start: int = 0,
        workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's full batches from batch index ``start`` on, in an order fixed by (seed, epoch), as
        (uint8 images (B, 3, S, S), aspect ratios (B,) float32: width / height of the originals, 1 for squares).

        ``batch_size`` is the global batch; with ``world_size`` ranks each gets its own
        ``batch_size // world_size`` images of every batch (a sharded sampler, re-drawn per epoch).
        """
        order = epoch_order(len(self), seed, epoch)
        steps = len(self) // batch_size
        local = batch_size // world_size
        shard = order[: steps * batch_size].view(steps, world_size, local)[:, rank]  # steps x local
        if self.images is not None:
            aspects = self.aspects if self.aspects is not None else torch.ones(len(self))
            aspects = aspects.to(self.images.device)
            for i in range(start, steps):
                idx = shard[i].to(self.images.device)
                yield self.images[idx], aspects[idx]
            return
        loader = DataLoader(
            _DecodeDataset(self.paths, self.size, self.whole),
            batch_size=local,
            sampler=_ListSampler(shard[start:].reshape(-1).tolist()),
            num_workers=workers,
            collate_fn=_collate_decoded,
            worker_init_fn=_ignore_sigint,
            pin_memory=torch.cuda.is_available(),
            drop_last=True,
            persistent_workers=False,
        )
        for images, aspects, failed in loader:
            for i, reason in failed:
                self._skip(str(self.paths[i]), reason)
            yield images, aspects  # short, or even empty, when some of its images were unreadable

    def ordered_batches(self, batch_size: int, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in order, as (uint8 images, their indices into this set)."""
        if self.images is not None:
            for i in range(0, len(self), batch_size):
                yield self.images[i : i + batch_size], torch.arange(i, min(i + batch_size, len(self)))
            return
        for items in decoded_items(self.paths, self.size, batch_size, workers, self.whole):
            for i, _, _, reason in items:
                if reason:
                    self._skip(str(self.paths[i]), reason)
            ok = [(i, x) for i, x, _, _ in items if x is not None]
            if ok:
                yield torch.stack([x for _, x in ok]), torch.tensor([i for i, _ in ok])

    def _skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=2)


def is_builtin(data: str | Path | None) -> bool:
    """Whether ``data`` names the built-in demo set (None, ``builtin`` or ``builtin:<split>``)."""
    return data is None or str(data) == BUILTIN or str(data).startswith(f"{BUILTIN}:")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``n`` images for ``epoch``, a function of (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def scan_folder(root: str | Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image files under ``root`` (recursive, sorted), with ImageFolder labels when every image sits in a
    first-level sub-folder of ``root``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise LwzooError(
            f"data folder '{root}' does not exist; pass --data DIR with your images, "
            "or omit --data for the built-in demo set"
        )
    if not root.is_dir():
        raise LwzooError(f"--data must be a folder of images, but '{root}' is a file")
    paths = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )
    if not paths:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise LwzooError(f"no images found under '{root}' (searched recursively for {exts})")
    parts = [p.relative_to(root).parts for p in paths]
    if all(len(pt) >= 2 for pt in parts):
        classes = sorted({pt[0] for pt in parts})
        index = {c: i for i, c in enumerate(classes)}
        return paths, [index[pt[0]] for pt in parts], classes
    return paths, None, []


def decode_image(path: str | Path, size: int) -> torch.Tensor:
    """One image file as the evaluation layout: its centre square at ``size`` (:func:`lwzoo.preprocess.eval_square`)."""
    with Image.open(path) as img:
        return eval_square(img, size)


def squash(img: Image.Image, size: int) -> tuple[torch.Tensor, float]:
    """The training layout: the whole image as RGB resized to ``size`` x ``size`` (bicubic, aspect not kept), and
    its aspect ratio width / height, with which crop boxes are drawn in the original frame."""
    img = to_rgb(img)
    aspect = img.width / img.height
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return chw_uint8(img), aspect


def decode_whole(path: str | Path, size: int) -> tuple[torch.Tensor, float]:
    """One image file as the training layout (:func:`squash`). A JPEG much larger than ``size`` is decoded at a
    reduced scale that still covers ``size`` on both sides (PIL's draft mode: several times faster for photos)."""
    with Image.open(path) as img:
        img.draft(img.mode, (size, size))
        return squash(img, size)


DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


class _DecodeDataset(Dataset):
    """Image files decoded in DataLoader workers; an unreadable one gives ``None`` and the reason, not an error."""

    def __init__(self, paths: list[Path], size: int, whole: bool = False) -> None:
        self.paths, self.size, self.whole = paths, size, whole

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, float, str]:
        try:
            if self.whole:
                return i, *decode_whole(self.paths[i], self.size), ""
            return i, decode_image(self.paths[i], self.size), 1.0, ""
        except DECODE_ERRORS as e:
            return i, None, 1.0, f"{type(e).__name__}: {e}"


def decoded_items(
    paths: list[Path], size: int, batch_size: int, workers: int, whole: bool = False
) -> Iterator[list[tuple[int, torch.Tensor | None, float, str]]]:
    """Image files decoded in order by ``workers`` DataLoader processes, a list per batch of
    ``(index, uint8 image or None, aspect, why unreadable)``, so the caller decides what a failure means."""
    yield from DataLoader(
        _DecodeDataset(paths, size, whole),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_as_list,
        worker_init_fn=_ignore_sigint if workers else None,  # Ctrl-C stops the main process, not N tracebacks
    )


def _collate_decoded(items: list) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    ok = [(x, a) for _, x, a, _ in items if x is not None]
    failed = [(i, reason) for i, x, _, reason in items if x is None]
    images = torch.stack([x for x, _ in ok]) if ok else torch.empty(0, dtype=torch.uint8)
    return images, torch.tensor([a for _, a in ok], dtype=torch.float32), failed


def _as_list(items: list) -> list:
    return items


class _ListSampler(Sampler[int]):
    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _ignore_sigint(_: int) -> None:
    # Ctrl-C is the main process's to handle: it saves a checkpoint, then stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def load_images(
    data: str | Path | None,
    size: int,
    split: str = "train",
    in_memory_gb: float = 4.0,
    workers: int | None = None,
    use_cache: bool = True,
    whole: bool = False,
    progress: Progress = SILENT,
) -> ImageSet:
    """Open ``data`` (a folder, or None / ``"builtin"`` for the demo set) as square uint8 images of side ``size``:
    centre squares (evaluation), or with ``whole`` each image squashed whole with its aspect ratio (training)."""
    if is_builtin(data):
        if data is not None and ":" in str(data):
            split = str(data).partition(":")[2]
        return builtin_images(split, size)  # square renders: both layouts are the same
    paths, labels, classes = scan_folder(data)
    root = str(Path(data).expanduser().resolve())
    label_t = torch.tensor(labels) if labels is not None else None
    key = _folder_key(paths, size, whole)
    if len(paths) * 3 * size * size > in_memory_gb * 2**30:
        return ImageSet(root, size, classes, label_t, paths=paths, key=key, whole=whole)
    workers = default_workers() if workers is None else workers
    return _decode_in_memory(
        ImageSet(root, size, classes, label_t, paths=paths, key=key, whole=whole), workers, use_cache, progress
    )


DEMO_RECIPE = "demo"


def default_recipe_name(arch: Arch, data: str | Path | None) -> str:
    """The recipe used when none is named: ``demo`` on the built-in set, else the arch's tuned recipe."""
    return DEMO_RECIPE if is_builtin(data) else arch.recipe


def builtin_images(split: str = "train", size: int = 32) -> ImageSet:
    """The built-in demo set's ``split`` (``train``, or ``val``: a fixed held-out split) rendered at ``size`` px
    (lwzoo.builtin_data draws the textures)."""
    if split not in BUILTIN_SPLITS:
        raise LwzooError(f"the built-in data has splits {', '.join(BUILTIN_SPLITS)}, not '{split}'")
    n, offset = BUILTIN_SPLITS[split]
    images, labels = render_textures(n, size, seed=BUILTIN_SEED + offset)
    key = f"builtin-v1-{split}-{size}-{BUILTIN_SEED}"
    return ImageSet(f"builtin:{split}", size, list(BUILTIN_CLASSES), labels, images, key=key)


def labelled_sets(
    data: str | Path | None, val_data: str | Path | None, decode_size: int, progress: Progress = SILENT
) -> tuple[ImageSet, ImageSet, torch.Tensor]:
    """The labelled train and val sets, and val labels mapped onto the train classes."""
    if data is None:
        data = f"{BUILTIN}:train"
    if val_data is None:
        if not is_builtin(data):
            raise LwzooError(
                "--val-data is needed with --data: a labelled held-out folder (DIR/<class>/<image>); "
                "lwzoo never scores an encoder on the images its classifier was fitted on"
            )
        val_data = f"{BUILTIN}:val"
    train = load_images(data if str(data) != BUILTIN else f"{BUILTIN}:train", decode_size, progress=progress)
    val = load_images(val_data, decode_size, progress=progress)
    for name, images in (("--data", train), ("--val-data", val)):
        if images.labels is None:
            raise LwzooError(
                f"{name} '{images.source}' has no class sub-folders, and evaluation needs labels: "
                "arrange the images as DIR/<class>/<image>"
            )
    if set(train.classes) != set(val.classes):
        only_train, only_val = (
            sorted(set(train.classes) - set(val.classes)),
            sorted(set(val.classes) - set(train.classes)),
        )
        raise LwzooError(
            f"train and val data have different classes (only in train: {only_train[:5]}, only in val: "
            f"{only_val[:5]}); both folders need the same class sub-folders"
        )
    mapping = torch.tensor([train.classes.index(c) for c in val.classes])
    return train, val, mapping


def _folder_key(paths: list[Path], size: int, whole: bool) -> str:
    h = hashlib.sha256(f"v2|{size}|{'whole' if whole else 'centre'}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _decode_in_memory(streamed: ImageSet, workers: int, use_cache: bool, progress: Progress) -> ImageSet:
    """``streamed``'s images decoded into memory (from the decode cache when this content was decoded before)."""
    paths, labels, size = streamed.paths, streamed.labels, streamed.size
    cache_file = cache_dir() / "decoded" / f"{streamed.key}.pt"
    if use_cache and cache_file.is_file():
        try:
            cached = torch.load(cache_file, weights_only=True)
            log.info("using decoded images cached at %s", cache_file)
            keep = cached["keep"]
            skipped = [
                (str(paths[i]), r)
                for i, r in zip(cached["skipped_idx"].tolist(), cached["skipped_reason"], strict=True)
            ]
            return replace(
                streamed,
                labels=labels[keep] if labels is not None else None,
                images=cached["images"],
                aspects=cached["aspects"],
                paths=[],
                skipped=skipped,
            )
        except Exception as e:  # a stale or partial cache is only a lost speed-up
            log.warning("ignoring unreadable decode cache %s (%s)", cache_file, e)

    images = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    aspects = torch.ones(len(paths))
    ok = torch.zeros(len(paths), dtype=torch.bool)
    reasons: dict[int, str] = {}
    with (progress if len(paths) >= 2000 else SILENT).counter(len(paths), "decoding images", "img") as bar:
        for items in decoded_items(paths, size, 256, workers, streamed.whole):
            for i, x, aspect, reason in items:
                if x is None:
                    reasons[i] = reason
                else:
                    images[i], aspects[i], ok[i] = x, aspect, True
            bar.update(len(items))
    for i, reason in sorted(reasons.items()):
        warnings.warn(f"skipping unreadable image {paths[i]}: {reason}", stacklevel=2)
    if not ok.any():
        raise LwzooError(
            f"none of the {len(paths)} images under '{streamed.source}' could be read (first: {paths[0]}: {reasons[0]})"
        )
    keep = ok.nonzero().squeeze(1)
    result = replace(
        streamed,
        labels=labels[keep] if labels is not None else None,
        images=images[keep].contiguous(),
        aspects=aspects[keep].contiguous(),
        paths=[],
        skipped=[(str(paths[i]), r) for i, r in sorted(reasons.items())],
    )
    if use_cache:
        _save_cache(cache_file, result, keep, reasons)
    return result


def _save_cache(path: Path, images: ImageSet, keep: torch.Tensor, reasons: dict[int, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        payload = {
            "images": images.images,
            "aspects": images.aspects,
            "keep": keep,
            "skipped_idx": torch.tensor(sorted(reasons), dtype=torch.long),
            "skipped_reason": [reasons[i] for i in sorted(reasons)],
        }
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as e:  # a read-only or full cache folder only costs the next run a decode
        log.warning("could not write decode cache %s (%s)", path, e)
