from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..progress import SILENT, Console
from ..publish import publish
from .common import OutOpt, QuietOpt


def publish_command(
    export_dir: Annotated[Path, typer.Argument(help="An `lwzoo export` folder.", show_default=False)],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub repository, ORG/NAME.", show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    revision: Annotated[
        Optional[str], typer.Option("--revision", help="Branch to commit to (created if missing).", show_default=False)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Assemble the folder and list it; upload nothing.")
    ] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Add it to the local zoo as NAME instead of uploading.")
    ] = False,
    license: Annotated[str, typer.Option("--license", help="Licence on the model card.")] = "apache-2.0",
    out: OutOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Publish an export to the Hugging Face Hub with a model card (token: HF_TOKEN or hf auth login)."""
    publish(
        export_dir,
        repo_id,
        private=private,
        revision=revision,
        dry_run=dry_run,
        local=local,
        out=out,
        license=license,
        progress=SILENT if quiet else Console(),
    )
