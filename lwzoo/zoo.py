"""The zoo: one registry of named encoders, and a local zoo of exports on this machine.

A name such as ``effnet_b0-smoothed`` maps to a frozen :class:`ZooEntry`: the arch and recipe that make
it, its Hub repository, and whether weights are published there (none are yet). ``lwzoo zoo build NAME``,
``lwzoo export --name NAME`` and ``lwzoo publish --local`` file an export into the local zoo
(``$LWZOO_CACHE/zoo/NAME``), where :func:`lwzoo.load` finds it first, offline.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .env import cache_dir
from .errors import LwzooError
from .files import replace_dir
from .hub_folder import CONFIG


@dataclass(frozen=True)
class ZooEntry:
    """A named encoder: the recipe that makes it, and its weights once they are published.

    Attributes:
        name: the zoo name, ``<arch>-<variant>``.
        arch: lwzoo architecture name.
        recipe: the recipe it is pretrained with.
        overrides: recipe keys the variant changes (``loss.alpha=0`` for plain InfoNCE).
        repo_id: the Hugging Face Hub repository its weights go to (``org/name``).
        revision: the branch, tag or commit to load.
        published: whether weights are on the Hub at ``repo_id@revision``. Until they are, ``lwzoo.load``
            of the name says so and gives the command that builds it (``lwzoo zoo build``).
        evaluation: for a published entry, the evaluation its weights carry (protocol, data, top-1).
        target: what the paper reports for this recipe: a target for a full ImageNet build, never a result.
        license: the licence of the weights.
        description: one line for listings.
    """

    name: str
    arch: str
    recipe: str
    overrides: tuple[tuple[str, Any], ...]
    repo_id: str
    revision: str
    published: bool
    evaluation: str | None
    target: str | None
    license: str
    description: str


_PAPER = "ImageNet-1k linear-probe top-1 at 224 px (arXiv 2212.07158)"
ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "mobilenetv3_large-smoothed",
            "mobilenetv3_large",
            "mobilenetv3_large",
            (),
            "lwzoo/mobilenetv3_large-smoothed",
            "main",
            published=False,
            evaluation=None,
            target=f"62.3% {_PAPER}",
            license="apache-2.0",
            description="MobileNet-V3-Large, lwzoo tuned recipe + smoothed InfoNCE",
        ),
        ZooEntry(
            "effnet_b0-smoothed",
            "effnet_b0",
            "effnet_b0",
            (),
            "lwzoo/effnet_b0-smoothed",
            "main",
            published=False,
            evaluation=None,
            target=f"65.8% {_PAPER}",
            license="apache-2.0",
            description="EfficientNet-B0, lwzoo tuned recipe + smoothed InfoNCE",
        ),
        # The paper reports no number for the tuned recipe with plain InfoNCE, so these carry no target.
        ZooEntry(
            "mobilenetv3_large-infonce",
            "mobilenetv3_large",
            "mobilenetv3_large",
            (("loss.alpha", 0.0),),
            "lwzoo/mobilenetv3_large-infonce",
            "main",
            published=False,
            evaluation=None,
            target=None,
            license="apache-2.0",
            description="MobileNet-V3-Large, lwzoo tuned recipe, plain InfoNCE",
        ),
        ZooEntry(
            "effnet_b0-infonce",
            "effnet_b0",
            "effnet_b0",
            (("loss.alpha", 0.0),),
            "lwzoo/effnet_b0-infonce",
            "main",
            published=False,
            evaluation=None,
            target=None,
            license="apache-2.0",
            description="EfficientNet-B0, lwzoo tuned recipe, plain InfoNCE",
        ),
    )
}


@dataclass(frozen=True)
class ModelInfo:
    """One name :func:`lwzoo.load` knows, and whether it loads today.

    Attributes:
        name: the zoo name.
        status: ``"local"`` (in the local zoo: loads offline), ``"hub"`` (published: loads from the Hub) or
            ``"not built"`` (a registry entry with no weights anywhere yet: ``lwzoo zoo build NAME`` makes them).
        where: the local folder, or ``repo@revision`` on the Hub, or the command that builds it.
        description: one line.
    """

    name: str
    status: str
    where: str
    description: str

    @property
    def loadable(self) -> bool:
        return self.status != "not built"


def build_command(name: str) -> str:
    return f"lwzoo zoo build {name} --data DIR"


def local_zoo_dir() -> Path:
    return cache_dir() / "zoo"


def local_models() -> list[str]:
    """Names in the local zoo."""
    root = local_zoo_dir()
    return sorted(p.name for p in root.iterdir() if (p / CONFIG).is_file()) if root.is_dir() else []


def list_models() -> list[ModelInfo]:
    """Every name :func:`lwzoo.load` knows, with whether it loads today: the registry's entries (published on
    the Hub, built locally, or not built yet) and the local zoo's own names."""
    local = set(local_models())
    out = []
    for name, entry in ZOO.items():
        if name in local:
            out.append(ModelInfo(name, "local", str(local_zoo_dir() / name), entry.description))
        elif entry.published:
            out.append(ModelInfo(name, "hub", f"{entry.repo_id}@{entry.revision}", entry.description))
        else:
            out.append(ModelInfo(name, "not built", build_command(name), entry.description))
    for name in sorted(local - set(ZOO)):
        out.append(ModelInfo(name, "local", str(local_zoo_dir() / name), _local_description(name)))
    return out


def _local_description(name: str) -> str:
    """What the local zoo's config says an entry is (arch and training data)."""
    try:
        config = json.loads((local_zoo_dir() / name / CONFIG).read_text())
    except (OSError, ValueError):
        return ""
    lwzoo = config.get("lwzoo", {})
    source = lwzoo.get("training", {}).get("data", {}).get("source")
    return f"{lwzoo.get('arch', config.get('architecture', '?'))}" + (f", trained on {source}" if source else "")


def get_entry(name: str) -> ZooEntry:
    if name in ZOO:
        return ZOO[name]
    close = difflib.get_close_matches(name, [m.name for m in list_models()], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LwzooError(f"'{name}' is not in the zoo.{hint} `lwzoo zoo list` shows the names")


def unpublished_error(entry: ZooEntry) -> LwzooError:
    return LwzooError(
        f"'{entry.name}' is not published: no weights for it exist on the Hub yet. Build it on your own images "
        f"and lwzoo.load({entry.name!r}) finds it: {build_command(entry.name)}"
    )


def check_name(name: str) -> None:
    """A local zoo name is one plain folder name."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise LwzooError(f"zoo name '{name}' must be a plain name such as effnet_b0-smoothed")


def add_local(name: str, folder: Path) -> Path:
    """Copy an export folder into the local zoo as ``name`` (replacing an older copy only once complete)."""
    check_name(name)
    if not (folder / CONFIG).is_file():
        raise LwzooError(f"'{folder}' is not an export folder (no {CONFIG}); run `lwzoo export` first")
    dest = local_zoo_dir() / name
    tmp = dest.with_name(f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    replace_dir(tmp, dest)
    return dest
