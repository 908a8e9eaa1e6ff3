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

from lwzoo.checkpoint import load_checkpoint
from lwzoo.env import cache_dir

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
    """Throughput numbers come from Engine.train_step, lwzoo.pretrain or lwzoo.evaluate; the only SGD or MoCo a
    benchmark builds itself is a peer lwzoo is compared against, labelled as such: gpu_check.py's plain loop and
    lightly's MoCo as lightly documents it (_peer_lightly_child.py, run in lightly's own virtual environment)."""
    built = {
        (path.name, callee, fn)
        for path in BENCH.glob("*.py")
        for callee in ("SGD", "MoCo", "PlainMoCo", "QueryEncoder")
        for fn in calls_by_function(path, callee)
    }
    assert built == {
        ("gpu_check.py", "SGD", "plain_model"),
        ("gpu_check.py", "PlainMoCo", "plain_model"),
        ("_peer_lightly_child.py", "SGD", "main"),
    }, built


@pytest.mark.slow
def test_domain_transfer_dry_run_adapts_an_export_and_writes_its_section(tmp_path, monkeypatch):
    """domain_transfer.py's dry run on a tiny CIFAR-like folder: a source pretrained and exported, a target run
    from it (``init``) and one from scratch, kNN of each, and a section that says it was a dry run."""
    cifar = tmp_path / "cifar"
    for split in ("train", "test"):
        for c in range(10):
            (cifar / split / f"class{c}").mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (32, 32), (20 * c, 10 * i, 120)).save(cifar / split / f"class{c}" / f"{i:02d}.jpg")
    monkeypatch.setenv("LWZOO_CIFAR", str(cifar))
    results = tmp_path / "RESULTS.md"
    run_bench("domain_transfer.py", "--dry-run", "--seeds", "0", results=results)
    text = results.read_text()
    assert "<!-- domain_transfer:start -->" in text and "<!-- domain_transfer:end -->" in text
    assert "DRY RUN" in text and "Command: `python " in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| encoder")]
    assert len(rows) == 5 and all(any(c.isdigit() for c in row.split("|")[2]) for row in rows), rows
    root = cache_dir() / "bench" / "domain-transfer" / "src100-e1-t1-dry"
    adapted, scratch = load_checkpoint(root / "init-s0"), load_checkpoint(root / "scratch-s0")
    assert adapted["init"]["kind"] == "export" and adapted["init"]["file"].endswith("source-export/model.safetensors")
    assert "init" not in scratch


@pytest.mark.slow
def test_peer_lightly_dry_run_times_lwzoo_through_pretrain_and_judges_nothing(tmp_path):
    """peer_lightly.py's dry run on a tiny folder (40 images, batch 16, 32 px, one timed step per loss): lwzoo's side
    through lwzoo.pretrain, and a section that judges no target. lightly's side runs only where its virtual
    environment already exists at its default place (making it pip-installs a few GB from the package registry,
    which CI cannot assume); otherwise the run is --lwzoo-only and lightly's columns say "not run"."""
    data = tmp_path / "images"
    for c in range(2):
        (data / f"class{c}").mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (32, 32), (12 * i, 100 * c, 60)).save(data / f"class{c}" / f"{i:02d}.jpg")
    venv = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lwzoo" / "peer-lightly-venv"
    with_lightly = (venv / "lwzoo-ready.json").is_file()
    results = tmp_path / "RESULTS.md"
    args = ["--dry-run", "--data", str(data), "--venv", str(venv)] + ([] if with_lightly else ["--lwzoo-only"])
    run_bench("peer_lightly.py", *args, results=results)
    text = results.read_text()
    assert "<!-- peer_lightly:start -->" in text and "<!-- peer_lightly:end -->" in text
    assert "not judged (dry run" in text and ": met" not in text and ": missed" not in text
    speed, _, profile = text.partition("Where lwzoo's step goes")
    rows = [line.split("|") for line in speed.splitlines() if line.startswith("| 32 |")]
    assert [r[2].strip() for r in rows] == ["asymmetric", "symmetric"], rows
    parts = [[c.strip() for c in line.split("|")] for line in profile.splitlines() if line.startswith("| 32 |")]
    assert [p[2] for p in parts] == ["asymmetric", "symmetric"], parts
    for p in parts:  # step = augmentation + the rest, in ms
        step, augment, rest = (float(c) for c in p[3:6])
        assert 0 < augment < step and abs(step - augment - rest) <= 1, p
    for r in rows:
        assert r[3].strip().endswith("(1 steps)") and float(r[3].split()[0]) > 0, r  # lwzoo's pairs/s
        for lightly in (r[4], r[5]):
            assert lightly.strip().endswith("(1 steps)") if with_lightly else lightly.strip() == "not run", r
