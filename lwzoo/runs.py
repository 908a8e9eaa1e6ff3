"""The default output layout: ``runs/<arch>/<recipe>-<YYYYmmdd-HHMMSS>/``, so later commands can find
the newest run without being told where it is. ``$LWZOO_RUNS`` moves the ``runs`` folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .checkpoint import LAST
from .errors import LwzooError


def runs_root() -> Path:
    return Path(os.environ.get("LWZOO_RUNS", "runs"))


def new_run_dir(arch: str, recipe_name: str) -> Path:
    """A fresh run folder name (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_root() / arch / f"{recipe_name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


def latest_checkpoint(arch: str | None = None) -> Path:
    """The newest ``checkpoint-last.pt`` under the runs folder (of ``arch`` when given)."""
    pattern = f"{arch}/*/{LAST}" if arch else f"*/*/{LAST}"
    found = sorted(runs_root().glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        where = runs_root() / (arch or "")
        raise LwzooError(
            f"no checkpoint found under '{where}'; "
            f"run `lwzoo pretrain {arch or 'ARCH'}` first or pass a checkpoint path"
        )
    return found[-1]
