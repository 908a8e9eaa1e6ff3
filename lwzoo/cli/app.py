"""The ``lwzoo`` app: registers the commands and turns LwzooError into one clean line."""

from __future__ import annotations

import sys
import warnings

import typer

from .. import env
from ..errors import LwzooError
from .embed import embed_command
from .eval import app as eval_app
from .export import export_command
from .pretrain import PretrainCommand, pretrain_command
from .publish import publish_command
from .recipes import recipes_command
from .sweep import sweep_command
from .zoo import app as zoo_app

app = typer.Typer(
    name="lwzoo",
    help="Self-supervised pretraining and export of lightweight image encoders (MoCo v2 + smoothed InfoNCE).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("pretrain", cls=PretrainCommand)(pretrain_command)
app.command("recipes")(recipes_command)
app.add_typer(eval_app, name="eval")
app.command("export")(export_command)
app.command("publish")(publish_command)
app.command("embed")(embed_command)
app.command("sweep")(sweep_command)
app.add_typer(zoo_app, name="zoo")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lwzoo`` console script. ``LWZOO_DEBUG=1`` shows tracebacks."""
    debug = env.debug()
    if not debug:
        warnings.formatwarning = lambda message, category, *args, **kwargs: f"lwzoo: warning: {message}\n"
    try:
        app(args=argv, prog_name="lwzoo")  # None: sys.argv[1:]
    except LwzooError as e:
        if debug:
            raise
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line, always
        print(f"lwzoo: error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside pretraining (which saves and exits 130 itself): stop, no traceback
        if debug:
            raise
        print("lwzoo: interrupted", file=sys.stderr)
        sys.exit(130)
