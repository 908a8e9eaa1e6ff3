"""The benchmark scripts run against the current library: one tiny pass of each, writing into a
scratch RESULTS.md, so an API change cannot silently break the evidence the README cites."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run_bench(script: str, *args: str, results: Path) -> None:
    proc = subprocess.run(
        [sys.executable, script, *args],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LWZOO_RESULTS": str(results)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "section"),
    [
        ("pretrain_throughput.py", ["--batch", "8", "--steps", "1", "--warmup", "0"], "pretrain_throughput"),
        ("augment_throughput.py", ["--batch", "8", "--seconds", "0.01"], "augment_throughput"),
        ("inference_speed.py", ["--size", "32", "--repeats", "1"], "inference_speed"),
        (
            "gpu_step_profile.py",
            ["--device", "cpu", "--steps", "1", "--warmup", "0", "--nets", "mobilenetv3_large"],
            "gpu_step_profile",
        ),
    ],
)
def test_benchmark_script_runs_and_writes_its_section(tmp_path, script, args, section):
    results = tmp_path / "RESULTS.md"
    run_bench(script, *args, results=results)
    text = results.read_text()
    assert f"<!-- {section}:start -->" in text and f"<!-- {section}:end -->" in text
    assert "Command: `python " in text and "lwzoo commit " in text
    # a number in every table row: the measurement actually ran
    lines = text.splitlines()
    rows = [line for i, line in enumerate(lines) if line.startswith("| ") and lines[i - 1].startswith(("|---", "| "))]
    rows = [row for row in rows if not row.startswith("|---")]
    assert rows and all(any(c.isdigit() for c in row) for row in rows), rows
