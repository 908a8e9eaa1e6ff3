"""Options shared by several commands, each defined once.

An alias here is the whole option (flags, help, display); a command gives only its default. A flag that two
commands read differently is two aliases, named for what it means there:

- ``--data``: ``ImagesOpt`` (images to pretrain on: pretrain, zoo build) and ``LabelledDataOpt`` (the labelled
  folder a probe is fitted on: eval knn, eval linear);
- ``--batch-size``: ``TrainBatchOpt`` (the recipe's images per optimiser step: pretrain, zoo build) and
  ``BatchOpt`` (images per forward pass: eval knn, eval linear, embed).

Options of one command are defined beside it, even where their flag is also a shared one's: eval linear's
``--epochs`` and ``--seed`` (the probe's), embed's ``--out`` (a file, required) and pretrain's ``--resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder.", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Replace an existing output.")]

# Pretraining: pretrain, zoo build.
ImagesOpt = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        "-d",
        help="Folder of images, searched recursively. Default: the built-in demo set.",
        show_default=False,
    ),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a recipe value, e.g. --set optim.lr=0.06 (repeatable)."
    ),
]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", "-e", help="Set train.epochs.", show_default=False)]
TrainBatchOpt = Annotated[
    Optional[int],
    typer.Option("--batch-size", "-b", help="Set train.batch_size (images per step).", show_default=False),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for initialisation, data order and augmentation.")]
UntilStepOpt = Annotated[
    Optional[int],
    typer.Option(
        "--until-step",
        help="Stop with a checkpoint at this global step, and print how to carry on.",
        show_default=False,
    ),
]

# Scoring an encoder: eval knn, eval linear, zoo build, and pretrain's and export's kNN checks.
LabelledDataOpt = Annotated[
    Optional[str],
    typer.Option("--data", "-d", help="Labelled training folder (DIR/<class>/<image>). Default: built-in train split."),
]
ValDataOpt = Annotated[
    Optional[str],
    typer.Option(
        "--val-data",
        help="Labelled held-out folder (DIR/<class>/<image>) to score. Default with the built-in data: its held-out "
        "split.",
        show_default=False,
    ),
]
EvalDataOpt = Annotated[
    Optional[str],
    typer.Option(
        "--eval-data",
        help="Labelled held-out folder (DIR/<class>/<image>) or builtin:val for the kNN check of --eval-every "
        "or --int8.",
        show_default=False,
    ),
]

# Running an encoder: eval knn, eval linear, export, embed.
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")]
ImageSizeOpt = Annotated[
    Optional[int],
    typer.Option("--image-size", help="Input size in pixels (default: the encoder's).", show_default=False),
]
