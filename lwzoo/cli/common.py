"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder.", show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for initialisation, data order and augmentation.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
