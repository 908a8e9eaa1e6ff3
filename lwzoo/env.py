"""Every environment variable lwzoo reads, in one place.

| variable | what it does | default |
|---|---|---|
| ``LWZOO_RUNS`` | where ``lwzoo pretrain`` puts run folders | ``runs`` |
| ``LWZOO_CACHE`` | decoded images, features and the local zoo | ``$XDG_CACHE_HOME/lwzoo`` or ``~/.cache/lwzoo`` |
| ``LWZOO_PROGRESS`` | ``bar``, ``lines`` or ``off``, overriding the choice made from the terminal | unset |
| ``LWZOO_DEBUG`` | ``1``: the CLI shows the traceback behind an error | unset |
| ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` | huggingface_hub's own | huggingface_hub's |
| ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` | set by torchrun for each process | one process |
"""

from __future__ import annotations

import os
from pathlib import Path


def runs_root() -> Path:
    return Path(os.environ.get("LWZOO_RUNS", "runs"))


def cache_dir() -> Path:
    """lwzoo's cache folder: ``$LWZOO_CACHE``, else ``$XDG_CACHE_HOME/lwzoo``, else ``~/.cache/lwzoo``."""
    if os.environ.get("LWZOO_CACHE"):
        return Path(os.environ["LWZOO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lwzoo"


def progress_override() -> str:
    return os.environ.get("LWZOO_PROGRESS", "").strip().lower()


def debug() -> bool:
    return os.environ.get("LWZOO_DEBUG", "") not in ("", "0")


def hub_endpoint() -> str:
    """``HF_ENDPOINT``, else huggingface_hub's default (https://huggingface.co)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE


def hub_cache() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def hub_token_env() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def torchrun() -> tuple[int, int, int] | None:
    """``(world_size, rank, local_rank)`` when torchrun started this process (``WORLD_SIZE`` set), else None."""
    if "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def for_child(**changes: str) -> dict[str, str]:
    """The environment for a child process: this one's, with ``changes``."""
    return {**os.environ, **changes}
