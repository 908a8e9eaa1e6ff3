from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import evaluate
from ..progress import SILENT, Console
from .common import BatchOpt, DeviceOpt, ImageSizeOpt, LabelledDataOpt, OutOpt, QuietOpt, ValDataOpt

app = typer.Typer(help="Validate a frozen encoder by kNN or linear probe.", no_args_is_help=True)

CkptArg = Annotated[
    Optional[str],
    typer.Argument(
        help="lwzoo checkpoint or run folder, random:ARCH[:SEED], or timm:ARCH. Default: the newest run.",
        show_default=False,
    ),
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Recompute features and leave the cache alone.")]
BaselineOpt = Annotated[
    bool, typer.Option("--baseline", help="Also score random:ARCH with the same preprocessing, shown alongside.")
]


@app.command("knn")
def knn_command(
    checkpoint: CkptArg = None,
    data: LabelledDataOpt = None,
    val_data: ValDataOpt = None,
    k: Annotated[int, typer.Option("--k", help="Neighbours that vote.")] = 20,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="T in the exp(sim/T) vote weight.")] = 0.07,
    batch_size: BatchOpt = 256,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    no_cache: NoCacheOpt = False,
    baseline: BaselineOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Weighted kNN (cosine, exp(sim/T) votes) on frozen features."""
    evaluate.knn(
        checkpoint,
        data=data,
        val_data=val_data,
        k=k,
        temperature=temperature,
        batch_size=batch_size,
        image_size=image_size,
        device=device,
        out=out,
        cache=not no_cache,
        baseline=baseline,
        progress=SILENT if quiet else Console(),
    )


@app.command("linear")
def linear_command(
    checkpoint: CkptArg = None,
    data: LabelledDataOpt = None,
    val_data: ValDataOpt = None,
    augment: Annotated[
        bool, typer.Option("--augment", help="MoCo-style probe: augmented images every epoch, SGD, cosine lr.")
    ] = False,
    weight_decay: Annotated[
        Optional[float],
        typer.Option("--wd", help="L2 weight of the feature probe. Default: chosen on a held-out fifth of --data."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of the --augment probe.")] = 100,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of the --augment probe, per 256 images.")] = 0.1,
    batch_size: BatchOpt = 256,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    no_cache: NoCacheOpt = False,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the held-out split and the --augment probe.")] = 0,
    baseline: BaselineOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Linear probe on frozen features (L-BFGS on cached features, or --augment for MoCo's protocol)."""
    evaluate.linear(
        checkpoint,
        data=data,
        val_data=val_data,
        augment=augment,
        weight_decay=weight_decay,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        image_size=image_size,
        device=device,
        out=out,
        cache=not no_cache,
        seed=seed,
        baseline=baseline,
        progress=SILENT if quiet else Console(),
    )
