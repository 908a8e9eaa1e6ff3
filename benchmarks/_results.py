"""Shared by the benchmark scripts: machine description and writing a section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

# $LWZOO_RESULTS lets a benchmark run from a separate checkout still write into this repository's file.
RESULTS = Path(os.environ.get("LWZOO_RESULTS", Path(__file__).with_name("RESULTS.md")))


HEADER = """# lwzoo benchmark results

Every number lwzoo claims, with the command that made it, the machine, the date and the commit.
Each section is written by its script in this folder (rerun the command to refresh it); accuracy
is always reported beside a random-init encoder of the same architecture.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}"
    )


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def revision() -> str:
    """The checkout's commit, marked ``+dirty`` when the library or its recipes have uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "lwzoo", "recipes"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return (head.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")


def write_section(name: str, body: str, ran: tuple[str, str, str] | None = None) -> None:
    """Replace (or append) the section between ``<!-- name -->`` markers in RESULTS.md.

    ``ran``: (command, machine, date) for numbers brought back from another machine (a GPU session);
    by default this process's own."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    cmd, where, when = ran or (command(), machine(), time.strftime("%Y-%m-%d %H:%M %Z"))
    stamp = f"Command: `{cmd}`  \nMachine: {where}  \nDate: {when}, lwzoo commit {revision()}\n\n"
    block = f"{start}\n{stamp}{body.rstrip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
