from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated, Optional

import typer

from ..archs import list_archs
from ..pretrain import pretrain
from .common import DeviceOpt, OutOpt, QuietOpt, SeedOpt


def pretrain_command(
    arch: Annotated[str, typer.Argument(help=f"Architecture: {', '.join(list_archs())}.", show_default=False)],
    recipe: Annotated[
        Optional[str],
        typer.Option(
            "--recipe",
            "-r",
            help="Recipe name or YAML path. Default: the arch's tuned recipe; 'demo' on the built-in data.",
        ),
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set", "-s", metavar="KEY=VALUE", help="Override a recipe value, e.g. --set optim.lr=0.06 (repeatable)."
        ),
    ] = None,
    data: Annotated[
        Optional[str],
        typer.Option(
            "--data",
            "-d",
            help="Folder of images, searched recursively. Default: the built-in demo set.",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        Optional[int], typer.Option("--epochs", "-e", help="Set train.epochs.", show_default=False)
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option("--batch-size", "-b", help="Set train.batch_size (images per step).", show_default=False),
    ] = None,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    resume: Annotated[
        Optional[str],
        typer.Option(
            "--resume",
            metavar="[PATH]",
            help="Continue a run: alone, the newest run of ARCH (or --out's); or a checkpoint or run folder.",
            show_default=False,
        ),
    ] = None,
    seed: SeedOpt = 0,
    until_step: Annotated[
        Optional[int],
        typer.Option(
            "--until-step", help="Stop with a checkpoint at this global step; --resume carries on.", show_default=False
        ),
    ] = None,
    eval_every: Annotated[
        Optional[int],
        typer.Option(
            "--eval-every", help="kNN-score the backbone every N epochs (logged and shown).", show_default=False
        ),
    ] = None,
    eval_data: Annotated[
        Optional[str],
        typer.Option(
            "--eval-data", help="Labelled held-out folder for --eval-every. Default: built-in held-out split."
        ),
    ] = None,
    compile_: Annotated[
        Optional[str],
        typer.Option(
            "--compile",
            metavar="MODE",
            help="Set train.compile: a torch.compile mode for the training step (default; reduce-overhead adds "
            "CUDA graphs on a GPU), or false for eager.",
            show_default=False,
        ),
    ] = None,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Processes on this machine, one per GPU: runs itself under torchrun (DDP).")
    ] = 1,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain an encoder with MoCo v2 and smoothed InfoNCE."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(run_under_torchrun(nproc, sys.argv[1:]))

    result = pretrain(
        arch,
        recipe=recipe,
        overrides=[*(set_ or []), *([f"train.compile={compile_}"] if compile_ is not None else [])],
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        device=device,
        out=out,
        resume=resume,
        seed=seed,
        until_step=until_step,
        eval_every=eval_every,
        eval_data=eval_data,
        verbose=not quiet,
    )
    if result.interrupted:
        raise typer.Exit(130 if result.interrupted == "SIGINT" else 143)


def run_under_torchrun(nproc: int, argv: list[str]) -> int:
    """Re-run this command under ``torchrun --standalone --nproc_per_node N`` (one node); its exit status."""
    args, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            args.append(token)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "lwzoo"]
    return subprocess.call([*cmd, *args])
