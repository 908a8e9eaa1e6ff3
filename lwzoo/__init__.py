"""lwzoo: a pretrain-then-export model zoo for lightweight self-supervised encoders.

Public API (everything else is plumbing):

- :func:`pretrain` trains an encoder with MoCo v2 and smoothed InfoNCE.
- :func:`list_archs`, :func:`list_recipes` and :func:`load_recipe` show what it can train and how.
- :func:`smoothed_infonce` and :class:`SmoothedInfoNCE` are the loss.
"""

from .archs import list_archs
from .errors import LwzooError
from .losses import SmoothedInfoNCE, smoothed_infonce
from .pretrain import PretrainResult, pretrain
from .recipe import Recipe, list_recipes, load_recipe
from .version import __version__

__all__ = [
    "LwzooError",
    "PretrainResult",
    "Recipe",
    "SmoothedInfoNCE",
    "__version__",
    "list_archs",
    "list_recipes",
    "load_recipe",
    "pretrain",
    "smoothed_infonce",
]
