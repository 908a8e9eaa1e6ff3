"""The ``lwzoo`` app: registers the commands and turns LwzooError into one clean line."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import typer

from ..errors import LwzooError
from .embed import embed_command
from .eval import app as eval_app
from .export import export_command
from .pretrain import pretrain_command
from .publish import publish_command
from .recipes import recipes_command
from .zoo import app as zoo_app

app = typer.Typer(
    name="lwzoo",
    help="Self-supervised pretraining and export of lightweight image encoders (MoCo v2 + smoothed InfoNCE).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("pretrain")(pretrain_command)
app.command("recipes")(recipes_command)
app.add_typer(eval_app, name="eval")
app.command("export")(export_command)
app.command("publish")(publish_command)
app.command("embed")(embed_command)
app.add_typer(zoo_app, name="zoo")


def _optional_resume_value(argv: list[str]) -> list[str]:
    """Let ``--resume`` stand alone: with no path after it, it means the newest run."""
    out = list(argv)
    for i, token in enumerate(out):
        if token != "--resume":
            continue
        nxt = out[i + 1] if i + 1 < len(out) else None
        looks_like_path = nxt is not None and (Path(nxt).exists() or "/" in nxt or nxt.endswith((".pt", ".pth")))
        if nxt is None or nxt.startswith("-") or not looks_like_path:
            out.insert(i + 1, "last")
        break
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lwzoo`` console script. ``LWZOO_DEBUG=1`` shows tracebacks."""
    debug = os.environ.get("LWZOO_DEBUG", "") not in ("", "0")
    if not debug:
        warnings.formatwarning = lambda message, category, *args, **kwargs: f"lwzoo: warning: {message}\n"
    args = _optional_resume_value(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="lwzoo")
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
