from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import LwzooError
from ..progress import SILENT, Console
from ..sweep import sweep
from .common import DeviceOpt, EpochsOpt, ImagesOpt, OutOpt, QuietOpt, SetOpt, ValDataOpt

ArmOpt = Annotated[
    list[str],
    typer.Option(
        "--arm",
        "-a",
        metavar="NAME=SPEC",
        help="An arm (repeatable): NAME= (the default recipe), NAME=recipe:R, NAME=KEY=VALUE[,KEY=VALUE...], "
        "or NAME=recipe:R,KEY=VALUE...",
    ),
]


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise LwzooError(f"--seeds '{text}' must be integers separated by commas, e.g. --seeds 0,1,2") from None


def sweep_command(
    arch: Annotated[str, typer.Argument(help="Architecture (`lwzoo recipes` lists them).", show_default=False)],
    arm: ArmOpt,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds every arm runs with, paired across arms.")] = "0,1,2",
    data: ImagesOpt = None,
    val_data: ValDataOpt = None,
    base: Annotated[
        Optional[str], typer.Option("--base", help="The arm the others are compared with (default: the first).")
    ] = None,
    epochs: EpochsOpt = None,
    subset: Annotated[
        Optional[int],
        typer.Option("--subset", help="Pretrain on this many images of --data, class-balanced.", show_default=False),
    ] = None,
    image_size: Annotated[
        Optional[int],
        typer.Option("--image-size", help="Train every arm at this size (augment.image_size).", show_default=False),
    ] = None,
    set_: SetOpt = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Units at once (CPU threads are divided among them).")] = 1,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Arms x seeds at one budget, each scored by kNN and linear probe beside random init, compared by seed.

    Every unit is a run folder under OUT/units; rerun the same command to continue an interrupted sweep. It writes
    OUT/SWEEP.md, OUT/sweep.json and OUT/sweep.png. --set applies to every arm.
    """
    sweep(
        arch,
        arm,
        _seeds(seeds),
        data=data,
        val_data=val_data,
        base=base,
        epochs=epochs,
        subset=subset,
        image_size=image_size,
        overrides=set_ or [],
        jobs=jobs,
        device=device,
        out=out,
        progress=SILENT if quiet else Console(),
    )
