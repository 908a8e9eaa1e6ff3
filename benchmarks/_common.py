"""What the benchmark scripts share, in one module, so that no script imports another.

- ``sync``: wait for a device's queued work, so wall clocks time what ran.
- ``pil_pipeline``: MoCo v2's per-image PIL augmentation as the authors' reference code writes it. It is a
  peer baseline, not a copy of lwzoo: ``augment_throughput.py`` times lwzoo's batched augmentation against it,
  and ``gpu_check.py``'s plain loop feeds on it.
- CIFAR-10 and the recipe ablation's bookkeeping: where the images are (``cifar_root``), the class-balanced
  subsets (``subsets``), the ablation's arms, its state file and its units' run folders. ``recipe_ablation.py``
  writes them, ``smoothing_neighbours.py`` reads them, ``eval_cifar.py`` uses the images.

Writing RESULTS.md is ``_results.py``'s one job; what a benchmark measures comes from the library itself
(``Engine.train_step``, ``lwzoo.pretrain``, ``lwzoo.evaluate``).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

from lwzoo.data import scan_folder
from lwzoo.env import cache_dir


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------- the peer: per-image PIL augmentation


class PilBlur:
    """MoCo v2's GaussianBlur: PIL's filter with sigma drawn from [0.1, 2.0]."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=float(torch.empty(1).uniform_(0.1, 2.0))))


def pil_pipeline(size: int) -> T.Compose:
    """One view of one PIL image, as facebookresearch/moco's main_moco.py makes it (``--aug-plus``)."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([PilBlur()], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


# ------------------------------------------------------------------ CIFAR-10 and the recipe ablation's units

TAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpg.tar"
# the ablation's arms: (name, recipe (None: the net's tuned one), overrides)
ARMS = {
    "a": ("MoCo v2 ResNet-50 recipe", "mocov2_resnet50", []),
    "b": ("lwzoo tuned, plain InfoNCE", None, ["loss.alpha=0.0"]),
    "c": ("lwzoo tuned + smoothed InfoNCE", None, []),
}
# CIFAR-10 pretraining settings shared by recipe_ablation.py's studies and domain_transfer.py's source: CIFAR's
# 32 px, whole images, no blur (sigma 0.1-2 px is sized for 224 px views), and MoCo's m 0.999, sized for ~1M
# ImageNet steps, brought to a thousand steps (at 0.999 the key encoder stays near its initialisation: issue #4's
# calibration, loss flat at ln(K+1)).
CIFAR_32PX = (
    "augment.image_size=32",
    "data.decode_size=32",
    "augment.eval_crop_pct=1.0",
    "augment.blur_p=0.0",
    "moco.momentum=0.99",
)
# ... at the 10,000-image scale of the ablation's rows: a queue under the data, MoCo's batch
CIFAR_10K = (*CIFAR_32PX, "moco.queue_size=4096", "train.batch_size=256", "train.log_every=20")
# $LWZOO_ABLATION_STATE: a dry run keeps its own state (and PNG beside it)
STATE = Path(os.environ.get("LWZOO_ABLATION_STATE", Path(__file__).with_name("recipe_ablation.json")))


def cifar_root() -> Path:
    """CIFAR-10 as image folders (train/, test/): ``$LWZOO_CIFAR``, else extracted once from ``TAR`` into the cache."""
    root = Path(os.environ.get("LWZOO_CIFAR", cache_dir() / "cifar10"))
    if not (root / "train").is_dir():
        if not TAR.is_file():
            raise SystemExit(f"CIFAR-10 is neither at {root} nor in {TAR}")
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(TAR) as tar:
            tar.extractall(root, filter="data")
    return root


def subsets(per_class_train: int, per_class_val: int) -> tuple[Path, Path, Path, Path]:
    """Class-balanced, disjoint subsets of CIFAR-10 train as folders of symlinks: (pretrain, held-out), then
    the full train and test folders."""
    root = cifar_root()
    base = cache_dir() / "bench" / f"cifar10-sub{per_class_train}-val{per_class_val}"
    train_sub, val_sub = base / "train", base / "val"
    if not (base / "done").exists():
        paths, labels, classes = scan_folder(root / "train")
        by_class: dict[int, list[Path]] = {}
        for p, y in zip(paths, labels, strict=True):
            by_class.setdefault(y, []).append(p)
        for y, files in by_class.items():
            files = sorted(files)  # the sorted order of the tar's file names is the fixed "random" order
            for dest, chosen in ((train_sub, files[:per_class_train]), (val_sub, files[-per_class_val:])):
                (dest / classes[y]).mkdir(parents=True, exist_ok=True)
                for f in chosen:
                    link = dest / classes[y] / f.name
                    if not link.exists():
                        link.symlink_to(f)
        (base / "done").write_text("ok")
    return train_sub, val_sub, root / "train", root / "test"


def load_state() -> dict:
    """The ablation's finished units and random-init rows (recipe_ablation.json), by key."""
    return json.loads(STATE.read_text()) if STATE.exists() else {}


def unit_dir(kind: str, key: str) -> Path:
    """A unit's run folder, from its kind and its key in the state file."""
    return cache_dir() / "bench" / kind / key.replace("|", "-").replace("=", "_").replace(" ", "")
