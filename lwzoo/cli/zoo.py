from __future__ import annotations

import typer

from ..zoo import ZOO, local_models, local_zoo_dir

app = typer.Typer(help="The zoo of named encoders.", no_args_is_help=True)


@app.command("list")
def list_command() -> None:
    """Names lwzoo.load() accepts: the registry's (Hub) and the local zoo's."""
    local = set(local_models())
    typer.echo(f"{'name':<28} {'source':<42} description")
    for name, entry in ZOO.items():
        source = "local + hub " if name in local else "hub "
        typer.echo(f"{name:<28} {source + entry.repo_id + '@' + entry.revision:<42} {entry.description}")
    for name in sorted(local - set(ZOO)):
        typer.echo(f"{name:<28} {'local':<42} {local_zoo_dir() / name}")
