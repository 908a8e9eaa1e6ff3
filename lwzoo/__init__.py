"""lwzoo: a pretrain-then-export model zoo for lightweight self-supervised encoders.

Public API (everything else is plumbing):

- :func:`pretrain` trains an encoder with MoCo v2 and smoothed InfoNCE.
- :mod:`evaluate` validates one: ``evaluate.knn(...)``, ``evaluate.linear(...)``.
- :func:`export` writes safetensors and ONNX, verified; :func:`publish` puts an export on the Hub.
- :func:`load` gives a feature extractor by zoo name, Hub repo or folder; :func:`list_models` lists the zoo
  and whether each name loads today; :func:`build` makes a zoo entry on your images and files it locally.
- :func:`embed` writes the features of a folder of images to a ``.npz`` file.
- :func:`list_archs`, :func:`list_recipes` and :func:`load_recipe` show what it can train and how.
- :func:`smoothed_infonce` and :class:`SmoothedInfoNCE` are the loss.
"""

from . import evaluate
from .archs import list_archs
from .embed import embed
from .errors import LwzooError
from .export import export
from .load import FeatureExtractor, load
from .losses import SmoothedInfoNCE, smoothed_infonce
from .pretrain import PretrainResult, pretrain
from .publish import publish
from .recipe import Recipe, list_recipes, load_recipe
from .version import __version__
from .zoo import ModelInfo, list_models
from .zoo_build import BuildResult, build

__all__ = [
    "BuildResult",
    "FeatureExtractor",
    "LwzooError",
    "ModelInfo",
    "PretrainResult",
    "Recipe",
    "SmoothedInfoNCE",
    "__version__",
    "build",
    "embed",
    "evaluate",
    "export",
    "list_archs",
    "list_models",
    "list_recipes",
    "load",
    "load_recipe",
    "pretrain",
    "publish",
    "smoothed_infonce",
]
