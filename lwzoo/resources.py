"""Where the top-level data folders (recipes/, export/, model_cards/) live at run time.

A wheel carries them inside the package as ``lwzoo/_data/<name>`` (see pyproject's force-include);
a source checkout or editable install reads them from the repository root.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder of shipped ``name`` files (``recipes``, ``export`` or ``model_cards``)."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"lwzoo's '{name}' folder is missing from this install; reinstall lwzoo")
