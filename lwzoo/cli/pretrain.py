from __future__ import annotations

import subprocess
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from ..archs import list_archs
from ..env import torchrun
from ..pretrain import pretrain
from ..progress import SILENT, Console
from .common import (
    DeviceOpt,
    EpochsOpt,
    EvalDataOpt,
    ImagesOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    TrainBatchOpt,
    UntilStepOpt,
)

NEWEST_RUN = "last"  # the value of a bare --resume: lwzoo.pretrain reads it as the newest run of ARCH (or --out's)

ResumeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--resume",
        metavar="[PATH]",
        help="Continue a run: alone, the newest run of ARCH (or --out's); or a checkpoint or run folder.",
        show_default=False,
    ),
]


class PretrainCommand(TyperCommand):
    """``lwzoo pretrain``, whose ``--resume`` takes an optional value.

    click's own optional value (``is_flag=False, flag_value=...``) is not available through Typer: Typer
    removed ``is_flag``/``flag_value`` (typer#987), and since 0.29 it parses with its own copy of click, whose
    parser always takes the token after an option as its value. So this command applies click's rule to its
    own arguments before parsing them: ``--resume`` stands alone (meaning NEWEST_RUN) when it comes last, when
    an option follows it, or when an architecture name follows it (that is ARCH: ``lwzoo pretrain --resume
    ARCH``). Otherwise the next token is its PATH, as is the value in ``--resume=PATH``.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _with_bare_resume(args))


def _with_bare_resume(args: list[str]) -> list[str]:
    """``args`` with a ``--resume`` that has no value written as ``--resume=NEWEST_RUN``; nothing else changes."""
    out = list(args)
    for i, token in enumerate(out):
        if token == "--":  # the rest are positional
            break
        if token == "--resume":
            following = out[i + 1] if i + 1 < len(out) else None
            is_option = following is not None and following.startswith("-") and following != "-"
            if following is None or is_option or following in list_archs():
                out[i] = f"--resume={NEWEST_RUN}"
    return out


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
    set_: SetOpt = None,
    data: ImagesOpt = None,
    epochs: EpochsOpt = None,
    batch_size: TrainBatchOpt = None,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    resume: ResumeOpt = None,
    seed: SeedOpt = 0,
    until_step: UntilStepOpt = None,
    eval_every: Annotated[
        Optional[int],
        typer.Option(
            "--eval-every",
            help="kNN-score the backbone every N epochs (logged and shown), on --eval-data or, with the built-in "
            "data, its held-out split.",
            show_default=False,
        ),
    ] = None,
    eval_data: EvalDataOpt = None,
    init: Annotated[
        Optional[str],
        typer.Option(
            "--init",
            metavar="SOURCE",
            help="Start the backbone from given weights: 'timm' (timm's ImageNet weights), a .safetensors file in "
            "timm's key names, an lwzoo export folder or zoo name, or a checkpoint or run folder. The projector, "
            "queue and optimizer start fresh; the source and its sha256 are recorded. Not with --resume.",
            show_default=False,
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
    if nproc > 1 and torchrun() is None:
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
        init=init,
        progress=SILENT if quiet else Console(counter_file=sys.stdout),  # the training bar beside its epoch lines
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
