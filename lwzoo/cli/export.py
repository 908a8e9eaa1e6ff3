from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..export import export
from ..progress import SILENT, Console
from .common import EvalDataOpt, ForceOpt, ImageSizeOpt, OutOpt, QuietOpt


def export_command(
    checkpoint: Annotated[
        Optional[str],
        typer.Argument(help="Checkpoint or run folder. Default: the newest run under runs/.", show_default=False),
    ] = None,
    safetensors: Annotated[
        bool, typer.Option("--safetensors", help="Write model.safetensors (+ config.json).")
    ] = False,
    onnx: Annotated[bool, typer.Option("--onnx", help="Write model.onnx. Naming formats writes only those.")] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write model.int8.onnx (onnxruntime quantisation).")
    ] = False,
    opset: Annotated[
        Optional[int], typer.Option("--opset", help="ONNX opset (profile default 18).", show_default=False)
    ] = None,
    image_size: ImageSizeOpt = None,
    out: OutOpt = None,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Export profile from export/ or a YAML path.")
    ] = "default",
    force: ForceOpt = False,
    calib_data: Annotated[
        Optional[Path], typer.Option("--calib-data", help="Images to calibrate static int8 on.", show_default=False)
    ] = None,
    eval_data: EvalDataOpt = None,
    name: Annotated[
        Optional[str],
        typer.Option("--name", help="Also add it to the local zoo, for lwzoo.load(NAME).", show_default=False),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Export the backbone as safetensors and ONNX (optionally int8), verified against torch."""
    export(
        checkpoint,
        out=out,
        profile=profile,
        safetensors=safetensors or None,
        onnx=onnx or None,
        int8=True if int8 else None,
        opset=opset,
        image_size=image_size,
        calib_data=calib_data,
        eval_data=eval_data,
        force=force,
        name=name,
        progress=SILENT if quiet else Console(),
    )
