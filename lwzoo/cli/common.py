"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder.", show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for initialisation, data order and augmentation.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
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
UntilStepOpt = Annotated[
    Optional[int],
    typer.Option(
        "--until-step", help="Stop with a checkpoint at this global step; run again to carry on.", show_default=False
    ),
]
