from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..zoo import list_models
from ..zoo_build import build
from .common import DeviceOpt, EpochsOpt, OutOpt, QuietOpt, SeedOpt, SetOpt, TrainBatchOpt, UntilStepOpt

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
    data: Annotated[
        Optional[str],
        typer.Option("--data", "-d", help="Folder of your images. Default: the built-in demo set.", show_default=False),
    ] = None,
    val_data: Annotated[
        Optional[str],
        typer.Option(
            "--val-data",
            help="Labelled held-out folder (DIR/<class>/<image>): score the build by kNN and linear probe.",
            show_default=False,
        ),
    ] = None,
    epochs: EpochsOpt = None,
    batch_size: TrainBatchOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    until_step: UntilStepOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Build a zoo entry on your images (its own arch and recipe): pretrain, evaluate, export, file it locally."""
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
        verbose=not quiet,
    )
