"""Shared by the benchmark scripts: machine description and writing a section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import torch

# $LWZOO_RESULTS lets a benchmark run from a separate checkout still write into this repository's file.
RESULTS = Path(os.environ.get("LWZOO_RESULTS", Path(__file__).with_name("RESULTS.md")))


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


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- name -->`` markers in RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    stamp = f"Command: `{command()}`  \nMachine: {machine()}  \nDate: {time.strftime('%Y-%m-%d %H:%M %Z')}\n\n"
    block = f"{start}\n{stamp}{body.rstrip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# lwzoo benchmark results\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
