"""lwzoo's version (lwzoo/version.py): one number, which packaging reads too."""

import importlib.metadata
import re

import lwzoo
from lwzoo.version import __version__


def test_the_installed_distribution_has_the_packages_version():
    """pyproject's [tool.hatch.version] reads lwzoo/version.py, so pip's metadata and the code agree."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert lwzoo.__version__ == __version__ == importlib.metadata.version("lwzoo")
