from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..recipe import list_recipes, load_recipe, recipe_keys, recipes_dir


def recipes_command(
    name: Annotated[Optional[str], typer.Argument(help="Show this recipe, resolved.", show_default=False)] = None,
    keys: Annotated[bool, typer.Option("--keys", help="List every key --set accepts.")] = False,
) -> None:
    """List the shipped recipes, show one resolved, or list the recipe keys."""
    if keys:
        typer.echo("\n".join(recipe_keys()))
    elif name:
        typer.echo(load_recipe(name).to_yaml().rstrip())
    else:
        for recipe in list_recipes():
            desc = load_recipe(recipe).description.strip().splitlines()
            typer.echo(f"{recipe:<20} {desc[0] if desc else ''}")
        typer.echo(f"\n(from {recipes_dir()})")
