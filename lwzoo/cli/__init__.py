"""lwzoo's command line: wiring only. Each command parses options and calls a library function."""

from .app import main

__all__ = ["main"]
