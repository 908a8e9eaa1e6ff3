"""Progress for long work, suited to where the output goes.

On a terminal it is a tqdm bar. Redirected to a file (nohup, SLURM, CI) a bar is a stream of
carriage-return frames, ten a second, that bury the lines worth reading; there it is a plain line
now and then instead (at most one per ``every_s`` seconds, and one at the end), with the count,
rate and ETA. ``LWZOO_PROGRESS=bar`` or ``=lines`` overrides the choice; ``=off`` silences both.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

from . import env


def mode(stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: the env override, else ``bar`` on a terminal and ``lines`` elsewhere."""
    forced = env.progress_override()
    if forced in ("bar", "lines", "off"):
        return forced
    stream = stream if stream is not None else sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def fmt_time(seconds: float) -> str:
    """``1h02m03s`` or ``2m03s``."""
    m, s = divmod(int(max(0.0, seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class LineProgress:
    """The part of tqdm's interface lwzoo uses, printing a plain line at most every ``every_s`` seconds
    (``every_s=None``: only when :meth:`line` is called) instead of redrawing a bar."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        every_s: float | None = 30.0,
        file: TextIO | None = None,
        disable: bool = False,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s, self.file, self.disable = every_s, file, disable
        self.postfix: dict[str, Any] = {}
        self._start_n, self._start = initial, time.perf_counter()
        self._last_print = self._start

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.every_s is not None and now - self._last_print >= self.every_s:
            self.line()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def write(self, text: str) -> None:
        if not self.disable:
            print(text, file=self.file or sys.stdout, flush=True)

    def line(self, extra: str = "") -> None:
        """Print the current count, rate, ETA and postfix as one line."""
        self._last_print = now = time.perf_counter()
        if self.disable:
            return
        rate = (self.n - self._start_n) / max(now - self._start, 1e-9)
        parts = [f"{self.desc}: " if self.desc else "", f"{self.n:,}"]
        if self.total:
            parts.append(f"/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)")
            if rate > 0 and self.n < self.total:
                parts.append(f", ETA {fmt_time((self.total - self.n) / rate)}")
        else:
            parts.append(f" {self.unit}")
        parts.append(f", {rate:.1f} {self.unit}/s")
        parts += [f", {k} {v}" for k, v in self.postfix.items()]
        print("".join(parts) + (f", {extra}" if extra else ""), file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.every_s is not None and self.n != self._start_n:
            self.line()
        self.every_s = None  # closing twice prints once


def bar(
    total: int | None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    leave: bool = True,
    file: TextIO | None = None,
    every_s: float | None = 30.0,
) -> tqdm | LineProgress:
    """A tqdm bar on a terminal, else a :class:`LineProgress` that prints a line every ``every_s`` seconds
    (``None``: only when asked, with ``.line()``)."""
    stream = file if file is not None else sys.stderr
    how = mode(stream)
    if how == "bar":
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, leave=leave, file=file)
    return LineProgress(total, desc, unit, initial, every_s, file, disable=disable or how == "off")


Counter = tqdm | LineProgress


class Progress:
    """How a long library call reports while it works. The library never prints by itself: each such call takes
    ``progress``, and this base class, the default, shows nothing. The CLI passes :class:`Console`; a Python
    caller passes ``Console()`` to see the same, or a subclass to route the lines and counts elsewhere.
    """

    def say(self, text: str) -> None:
        """A line worth reading: a header, a note, a result, a summary."""

    def counter(
        self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0, every_s: float | None = 30.0
    ) -> Counter:
        """A count of work done (the part of tqdm's interface lwzoo uses). ``every_s=None``: in a file, a line
        only when the caller asks for one (``.line()``), e.g. once per log window."""
        return LineProgress(total, desc, unit, initial, every_s, disable=True)


class Console(Progress):
    """Lines on stdout (``file``) and counts on stderr (``counter_file``), as tqdm does: a bar on a terminal, plain
    lines in a file (see :func:`mode`). ``lwzoo pretrain`` keeps its training bar on stdout with its epoch lines."""

    def __init__(self, file: TextIO | None = None, counter_file: TextIO | None = None) -> None:
        self.file, self.counter_file = file, counter_file

    def say(self, text: str) -> None:
        tqdm.write(text, file=self.file or sys.stdout)  # through tqdm, so an open bar is redrawn below the line

    def counter(
        self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0, every_s: float | None = 30.0
    ) -> Counter:
        return bar(total, desc, unit, initial, file=self.counter_file or sys.stderr, every_s=every_s)


SILENT = Progress()
