"""The benchmark scripts run against the current library: one tiny pass of each, writing into a
scratch RESULTS.md, so an API change cannot silently break the evidence the README cites."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SHARED = {"_common", "_results"}  # helpers, and RESULTS.md writing: what benchmarks share; no script imports another


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def calls_by_function(path: Path, callee: str) -> set[str]:
    """Names of the innermost functions of ``path`` that call something named ``callee`` (``<module>``: top level)."""
    found: set[str] = set()

    def visit(node: ast.AST, scope: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scope = node.name
        elif isinstance(node, ast.Call) and callee in {getattr(node.func, name, None) for name in ("id", "attr")}:
            found.add(scope)
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(path.read_text()), "<module>")
    return found


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


@pytest.mark.slow
def test_gpu_check_dry_run_trains_through_pretrain_and_says_it_was_a_dry_run(tmp_path):
    """gpu_check.py's CPU dry run, cut to its first phase: it writes a JPEG folder of photo-like sizes, trains
    through lwzoo.pretrain() with its Engine hooks, and writes a section that claims no GPU numbers."""
    results, state_file, scratch = tmp_path / "RESULTS.md", tmp_path / "gpu_check.json", tmp_path / "scratch"
    run_bench(
        "gpu_check.py", "--device", "cpu", "--images", "64", "--batch", "32", "--image-size", "32", "--steps", "2",
        "--compile", "0", "--scratch", str(scratch), "--json", str(state_file), "--only", "lwzoo_mnv3",
        results=results,
    )  # fmt: skip
    text = results.read_text()
    assert "<!-- gpu_check:start -->" in text and "<!-- gpu_check:end -->" in text
    assert "CPU DRY RUN" in text and "not judged (CPU dry run)" in text
    assert "| met |" not in text and "| missed |" not in text
    jpegs = sorted((scratch / "jpegs").rglob("*.jpg"))
    assert len(jpegs) == 64
    sizes = [Image.open(p).size for p in jpegs]
    assert all(300 <= max(s) <= 1000 for s in sizes) and len({round(w / h, 2) for w, h in sizes}) >= 3
    state = json.loads(state_file.read_text())
    assert state["folder"]["images"] == 64 and state["pending"] == []
    (row,) = state["rows"]
    assert row["phase"] == "lwzoo_mnv3" and row["status"] == "ok", row
    assert row["pairs_per_s"] > 0 and row["steps"] >= 1
    assert row["label"].startswith("lwzoo: fp32") and "batches arrived on the cpu" in row["notes"]
    assert row["kernel_ms"] is None and row["peak_gib"] is None  # no GPU numbers from a CPU


def test_no_benchmark_imports_another_they_share_through_common_and_results():
    scripts = {p.stem for p in BENCH.glob("*.py")}
    assert scripts >= SHARED
    for path in sorted(BENCH.glob("*.py")):
        others = (imported_modules(path) & scripts) - SHARED - {path.stem}
        assert not others, f"{path.name} imports the benchmark(s) {sorted(others)}; share through _common.py instead"


def test_the_only_hand_built_moco_and_optimizer_is_gpu_checks_plain_loop():
    """Throughput numbers come from Engine.train_step, lwzoo.pretrain or lwzoo.evaluate; the one MoCo and SGD a
    benchmark builds itself is the plain loop gpu_check.py compares lwzoo against (a peer, labelled as such)."""
    built = {
        (path.name, callee, fn)
        for path in BENCH.glob("*.py")
        for callee in ("SGD", "MoCo", "PlainMoCo", "QueryEncoder")
        for fn in calls_by_function(path, callee)
    }
    assert built == {("gpu_check.py", "SGD", "plain_model"), ("gpu_check.py", "PlainMoCo", "plain_model")}, built
