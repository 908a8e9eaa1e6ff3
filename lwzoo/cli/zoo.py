from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..progress import SILENT, Console
from ..zoo import list_models
from ..zoo_build import build
from .common import (
    DeviceOpt,
    EpochsOpt,
    ImagesOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    TrainBatchOpt,
    UntilStepOpt,
    ValDataOpt,
)

app = typer.Typer(help="The zoo of named encoders: list them, build one.", no_args_is_help=True)


@app.command("list")
def list_command() -> None:
    """Every name lwzoo.load() knows, and whether it loads today (local, hub) or must be built first."""
    rows = list_models()
    typer.echo(f"{'name':<28} {'status':<10} {'where / how to get it':<55} description")
    for m in rows:
        typer.echo(f"{m.name:<28} {m.status:<10} {m.where:<55} {m.description}")
    if any(not m.loadable for m in rows):
        typer.echo("\n'not built': no weights are published for it yet; the command beside it builds it on your data.")


@app.command("build")
def build_command(
    name: Annotated[str, typer.Argument(help="A zoo name from `lwzoo zoo list`.", show_default=False)],
    data: ImagesOpt = None,
    val_data: ValDataOpt = None,
    epochs: EpochsOpt = None,
    batch_size: TrainBatchOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    until_step: UntilStepOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Build a zoo entry on your images (its own arch and recipe): pretrain, evaluate, export, file it locally.

    It is evaluated (kNN and linear probe) on held-out images: --val-data, or the built-in data's own split.
    """
    build(
        name,
        data=data,
        val_data=val_data,
        epochs=epochs,
        batch_size=batch_size,
        overrides=set_ or [],
        device=device,
        seed=seed,
        out=out,
        until_step=until_step,
        progress=SILENT if quiet else Console(counter_file=sys.stdout),  # the training bar beside its epoch lines
    )
