"""Progress output (lwzoo/progress.py): a bar on a terminal, plain lines in a file, nothing when off."""

import io

import pytest
from tqdm.auto import tqdm

from lwzoo.progress import SILENT, Console, LineProgress, bar, fmt_time, mode


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "forced,stream,expected",
    [
        ("", Terminal(), "bar"),
        ("", io.StringIO(), "lines"),
        ("lines", Terminal(), "lines"),
        (" BAR ", io.StringIO(), "bar"),
        ("off", Terminal(), "off"),
        ("sometimes", io.StringIO(), "lines"),  # an unknown value is ignored
    ],
)
def test_mode_follows_the_stream_unless_the_environment_says(monkeypatch, forced, stream, expected):
    monkeypatch.setenv("LWZOO_PROGRESS", forced)
    assert mode(stream) == expected


@pytest.mark.parametrize(
    "seconds,text", [(0, "0m00s"), (59.9, "0m59s"), (123, "2m03s"), (3723, "1h02m03s"), (-5, "0m00s")]
)
def test_fmt_time(seconds, text):
    assert fmt_time(seconds) == text


def test_lines_say_the_count_total_percentage_and_postfix():
    out = io.StringIO()
    progress = LineProgress(total=200, desc="features", unit="img", every_s=None, file=out)
    progress.update(50)
    assert out.getvalue() == ""  # every_s=None: a line only when asked
    progress.set_postfix(loss="1.234")
    progress.line()
    (line,) = out.getvalue().splitlines()
    assert line.startswith("features: 50/200 img (25%), ETA ") and line.endswith(" img/s, loss 1.234")


def test_closing_prints_the_final_line_once():
    out = io.StringIO()
    with LineProgress(total=10, unit="it", every_s=3600.0, file=out) as progress:
        progress.update(10)
        assert out.getvalue() == ""  # not yet an hour since the start
    progress.close()
    (line,) = out.getvalue().splitlines()
    assert line.startswith("10/10 it (100%), ") and "ETA" not in line


def test_a_disabled_progress_prints_nothing():
    out = io.StringIO()
    with LineProgress(total=5, every_s=0.0, file=out, disable=True) as progress:
        progress.update(5)
        progress.write("a message")
    assert out.getvalue() == ""


def test_bar_picks_the_kind_for_where_the_output_goes(monkeypatch):
    monkeypatch.delenv("LWZOO_PROGRESS", raising=False)
    to_file = bar(total=3, file=io.StringIO())
    assert isinstance(to_file, LineProgress) and not to_file.disable
    to_terminal = bar(total=3, file=Terminal())
    assert isinstance(to_terminal, tqdm)
    to_terminal.close()
    monkeypatch.setenv("LWZOO_PROGRESS", "off")
    off = bar(total=3, file=Terminal())
    assert isinstance(off, LineProgress) and off.disable


def test_the_silent_default_shows_nothing_and_a_console_writes_to_its_file(monkeypatch, capsys):
    monkeypatch.delenv("LWZOO_PROGRESS", raising=False)
    SILENT.say("not shown")
    with SILENT.counter(4, every_s=0.0) as count:
        count.update(4)
    assert capsys.readouterr() == ("", "")
    out = io.StringIO()
    console = Console(out, counter_file=out)
    console.say("epoch 1/2: loss 5.0")
    with console.counter(4, desc="steps", unit="step", every_s=3600.0) as count:  # a file: plain lines, no bar
        count.update(4)
    said, counted = out.getvalue().splitlines()
    assert said == "epoch 1/2: loss 5.0" and counted.startswith("steps: 4/4 step (100%)")
    lines = io.StringIO()
    default = Console(lines)  # counts go to stderr by default, as tqdm's do; lines to the console's file
    with default.counter(2, desc="images", unit="img", every_s=3600.0) as count:
        count.update(2)
    assert lines.getvalue() == "" and capsys.readouterr().err.startswith("images: 2/2 img (100%)")
