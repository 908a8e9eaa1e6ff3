"""The zoo: one registry of named encoders, and a local zoo of exports on this machine.

A name such as ``effnet_b0-smoothed`` maps to a frozen :class:`ZooEntry` (arch, Hub repo, revision,
recipe, licence). ``lwzoo export --name NAME`` and ``lwzoo publish --local`` copy an export folder
into the local zoo (``$LWZOO_CACHE/zoo/NAME``), where :func:`lwzoo.load` finds it offline.
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import replace_dir
from .data import cache_dir
from .errors import LwzooError
from .hub_folder import CONFIG


@dataclass(frozen=True)
class ZooEntry:
    """A published encoder.

    Attributes:
        name: the zoo name, ``<arch>-<variant>``.
        arch: lwzoo architecture name.
        repo_id: Hugging Face Hub repository (``org/name``).
        revision: the branch, tag or commit to load.
        recipe: the recipe it was pretrained with.
        license: the licence of the weights.
        description: one line for listings.
    """

    name: str
    arch: str
    repo_id: str
    revision: str
    recipe: str
    license: str
    description: str


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "mobilenetv3_large-smoothed",
            "mobilenetv3_large",
            "lwzoo/mobilenetv3_large-smoothed",
            "main",
            "mobilenetv3_large",
            "apache-2.0",
            "MobileNet-V3-Large, lwzoo tuned recipe + smoothed InfoNCE",
        ),
        ZooEntry(
            "effnet_b0-smoothed",
            "effnet_b0",
            "lwzoo/effnet_b0-smoothed",
            "main",
            "effnet_b0",
            "apache-2.0",
            "EfficientNet-B0, lwzoo tuned recipe + smoothed InfoNCE",
        ),
        ZooEntry(
            "mobilenetv3_large-infonce",
            "mobilenetv3_large",
            "lwzoo/mobilenetv3_large-infonce",
            "main",
            "mobilenetv3_large",
            "apache-2.0",
            "MobileNet-V3-Large, lwzoo tuned recipe, plain InfoNCE",
        ),
        ZooEntry(
            "effnet_b0-infonce",
            "effnet_b0",
            "lwzoo/effnet_b0-infonce",
            "main",
            "effnet_b0",
            "apache-2.0",
            "EfficientNet-B0, lwzoo tuned recipe, plain InfoNCE",
        ),
    )
}


def local_zoo_dir() -> Path:
    return cache_dir() / "zoo"


def local_models() -> list[str]:
    """Names in the local zoo."""
    root = local_zoo_dir()
    return sorted(p.name for p in root.iterdir() if (p / CONFIG).is_file()) if root.is_dir() else []


def list_models() -> list[str]:
    """Every name :func:`lwzoo.load` accepts: the registry's and the local zoo's."""
    return sorted(set(ZOO) | set(local_models()))


def get_entry(name: str) -> ZooEntry:
    if name in ZOO:
        return ZOO[name]
    close = difflib.get_close_matches(name, list_models(), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LwzooError(f"'{name}' is not in the zoo.{hint} `lwzoo zoo list` shows the names")


def add_local(name: str, folder: Path) -> Path:
    """Copy an export folder into the local zoo as ``name`` (replacing an older copy only once complete)."""
    if not name or "/" in name or name.startswith("."):
        raise LwzooError(f"zoo name '{name}' must be a plain name such as effnet_b0-smoothed")
    if not (folder / CONFIG).is_file():
        raise LwzooError(f"'{folder}' is not an export folder (no {CONFIG}); run `lwzoo export` first")
    dest = local_zoo_dir() / name
    tmp = dest.with_name(f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    replace_dir(tmp, dest)
    return dest
