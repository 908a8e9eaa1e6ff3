from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..data import IMAGE_EXTENSIONS
from ..embed import embed
from ..progress import SILENT, Console
from .common import BatchOpt, DeviceOpt, ForceOpt, QuietOpt


def embed_command(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="Zoo name, Hub repo id (org/name or org/name@rev) or export folder.",
            show_default=False,
        ),
    ],
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help=f"Folder of images, searched recursively ({', '.join(sorted(IMAGE_EXTENSIONS))}).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The .npz file to write (numpy and pandas read it).", show_default=False)
    ],
    backend: Annotated[
        str, typer.Option("--backend", help="onnx (onnxruntime on model.onnx) or torch (model.safetensors in timm).")
    ] = "onnx",
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 64,
    workers: Annotated[
        Optional[int], typer.Option("--workers", help="Decoding processes (default: min(8, CPUs)).", show_default=False)
    ] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the features of every image under DIR to a .npz file: features, relative paths, skipped images, meta."""
    embed(
        model,
        folder,
        out,
        backend=backend,
        device=device,
        batch_size=batch_size,
        workers=workers,
        force=force,
        progress=SILENT if quiet else Console(),
    )
