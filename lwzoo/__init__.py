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

Map of the package. Modules import only from their own layer or the layers above them in this list
(``tests/test_layers.py`` holds the package to it), and stages never import each other::

    core       errors, version, resources, env (every environment variable), files (atomic writes, locks),
               config, recipe, archs, devices, scoring (kNN, linear probe, accuracies), progress, distributed,
               losses (smoothed InfoNCE), split_bn, moco, schedules, augment, preprocess,
               engine (the training step)
    data       builtin_data (the demo textures), data (folders, decoding, batches, labelled sets)
    io         run_folder (a run's file names: checkpoint, recipe, metrics, evals), checkpoint (its format),
               metrics (metrics.jsonl), features (the features cache), card (model card text),
               hub_folder (the model folder's layout, its one writer and reader), onnx_runtime,
               hub_client (the Hub), encoders (an encoder from any source), zoo (names and the local zoo),
               init_weights (a new run's starting backbone weights: timm, safetensors, export, zoo, checkpoint)
    stages     pretrain, evaluate, export, publish, load
    workflows  embed (load, then features of a folder), zoo_build (pretrain, evaluate, export, card),
               sweep (arms x seeds of pretrain and evaluate in child processes, compared by seed)
    cli        lwzoo/cli/: options and printing over one library call per command

One batch through training: ``data.ImageSet.batches`` yields uint8 images (and aspect ratios) ->
``engine.Engine.train_step`` augments two views (``augment``), runs the query and key encoders (``moco``),
the loss (``losses``) and the optimizer step -> ``pretrain._Run.train`` logs, checks and saves around it.
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
