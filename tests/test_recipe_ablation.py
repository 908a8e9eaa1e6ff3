"""The recipe ablation's bookkeeping (benchmarks/recipe_ablation.py): units running in parallel must not
lose each other's results, and the report's paired and search comparisons must be computed by seed."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def ablation(tmp_path, monkeypatch):
    monkeypatch.setenv("LWZOO_ABLATION_STATE", str(tmp_path / "state.json"))
    monkeypatch.syspath_prepend(str(BENCH))
    names = ("recipe_ablation", "_common")  # _common reads $LWZOO_ABLATION_STATE when imported
    for name in names:
        sys.modules.pop(name, None)
    module = importlib.import_module("recipe_ablation")
    yield module
    for name in names:
        sys.modules.pop(name, None)


def test_parallel_updates_keep_every_entry(ablation, tmp_path):
    # both writers import first, then start together, so their read-modify-writes interleave
    writer = (
        "import sys, time, pathlib; sys.path.insert(0, sys.argv[1]); import recipe_ablation as r\n"
        "go = pathlib.Path(sys.argv[3]); (go.parent / sys.argv[2]).touch()\n"
        "while not go.exists(): time.sleep(0.01)\n"
        "for i in range(150): r.update_state({f'{sys.argv[2]}|{i}': {'i': i}})\n"
    )
    env = {**os.environ, "LWZOO_ABLATION_STATE": str(tmp_path / "state.json")}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(BENCH), n, str(go)], env=env) for n in "ab"]
    deadline = time.monotonic() + 120
    while not ((tmp_path / "a").exists() and (tmp_path / "b").exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    state = json.loads((tmp_path / "state.json").read_text())
    assert sorted(state) == sorted(f"{n}|{i}" for n in "ab" for i in range(150))


def test_paired_differences_use_only_seeds_that_ran_both(ablation):
    units = {
        "m|a|0|b": {"knn": 20.0},
        "m|b|0|b": {"knn": 30.0},
        "m|a|1|b": {"knn": 22.0},
        "m|b|1|b": {"knn": 26.0},
        "m|b|2|b": {"knn": 99.0},  # no (a) for seed 2: left out
    }
    text = ablation._paired(units, sorted(units), "b", "a", "knn")
    # differences 10 and 4: mean 7, sample sd 4.24; each seed's difference is shown, in seed order
    assert text == "+7.0 ± 4.2 (seed 0, 1: +10.0, +4.0)"
    assert ablation._paired(units, sorted(units), "c", "b", "knn") == "-"


def test_search_table_reports_deltas_against_base_of_the_same_seed(ablation):
    state = {
        "search|m|base|0|10k-e15": {"val_knn": 40.0},
        "search|m|base|1|10k-e15": {"val_knn": 44.0},
        "search|m|loss.alpha=0.0|0|10k-e15": {"val_knn": 41.0},
        "search|m|loss.alpha=0.0|1|10k-e15": {"val_knn": 47.0},
        "search|m|moco.temperature=0.2|0|10k-e15": {"val_knn": 35.0},
    }
    rows = {line.split("|")[1].strip(): line for line in ablation._search_tables(state) if line.startswith("| `")}
    assert rows["`base`"].split("|")[2:5] == [" 42.0 ± 2.8 ", " - ", " 0, 1 "]
    # differences +1 and +3, each seed shown: a two-seed mean can hide a sign flip
    assert rows["`loss.alpha=0.0`"].split("|")[2:4] == [" 44.0 ± 4.2 ", " +2.0 ± 1.4 (+1.0, +3.0) "]
    assert rows["`moco.temperature=0.2`"].split("|")[2:4] == [" 35.0 ", " -5.0 "]


def test_progress_reads_the_last_step_of_a_running_unit(ablation, tmp_path, monkeypatch):
    monkeypatch.setenv("LWZOO_CACHE", str(tmp_path / "cache"))
    unit = ablation.Unit("m|a|0|1k-e2", "ablation", "m", "r", ("train.epochs=2", "train.batch_size=100"), 0, 100, 1)
    assert ablation._progress(unit) == 0.0  # not started
    unit.out.mkdir(parents=True)
    rows = [{"kind": "step", "step": 5}, {"kind": "eval", "step": 15, "epoch": 1, "knn_top1": 1.0}]
    (unit.out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert ablation._progress(unit) == pytest.approx(15 / 20)  # 2 epochs x (1,000 images // 100)
