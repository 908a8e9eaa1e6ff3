"""benchmarks/smoothing_neighbours.py: its statistics against a float64 reference written as plain loops,
and one real measurement of a small engine."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def neighbours(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("smoothing_neighbours", "_common"):
        sys.modules.pop(name, None)
    yield importlib.import_module("smoothing_neighbours")


def reference(logits: list[list[float]], y_q: list[int], y_n: list[int], k: int) -> dict[str, float]:
    prec, p_top, p_pos, inst = 0.0, 0.0, 0.0, 0.0
    for row, yq in zip(logits, y_q, strict=True):
        z = sum(math.exp(v) for v in row)
        negs = sorted(range(len(row) - 1), key=lambda j: -row[j + 1])[:k]
        prec += sum(y_n[j] == yq for j in negs) / k
        p_top += sum(math.exp(row[j + 1]) for j in negs) / z
        p_pos += math.exp(row[0]) / z
        inst += row[0] > max(row[1:])
    n = len(logits)
    return {
        f"precision@{k}": 100 * prec / n,
        f"p_top{k}": p_top / n,
        "p_positive": p_pos / n,
        "instance_acc": 100 * inst / n,
    }


def test_stats_match_a_float64_reference(neighbours):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 1 + 60, generator=g, dtype=torch.float64) * 3
    logits[:7, 0] += 10  # some queries whose positive wins
    y_q, y_n = torch.randint(0, 4, (40,), generator=g), torch.randint(0, 4, (60,), generator=g)
    got = neighbours.neighbour_stats(logits, y_q, y_n)
    for k in neighbours.KS:
        want = reference(logits.tolist(), y_q.tolist(), y_n.tolist(), k)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    same = sum(a == b for a in y_q.tolist() for b in y_n.tolist()) / (40 * 60) * 100
    assert got["same_class_in_queue"] == pytest.approx(same, rel=1e-6)


def test_a_real_engine_is_measured(neighbours):
    from lwzoo.config import parse_overrides
    from lwzoo.data import load_images
    from lwzoo.recipe import load_recipe

    recipe = load_recipe("mobilenetv3_large", parse_overrides([*TINY, "train.batch_size=64"]))
    engine = neighbours.engine_for(None, "mobilenetv3_large", recipe.to_dict(), seed=0)
    data = load_images("builtin:val", 16)
    stats = neighbours.measure(engine, data.images, data.labels, queries=128)
    assert 0 <= stats["precision@5"] <= 100 and 0 <= stats["instance_acc"] <= 100
    # the mass on the top-k keys grows with k and, with the positive's, is a share of one softmax row
    assert 0 < stats["p_top1"] < stats["p_top5"] < stats["p_top20"] < 1 - stats["p_positive"]
    with pytest.raises(SystemExit, match="need 1280 images for 1024 queries and a queue of 256"):
        neighbours.measure(engine, data.images, data.labels, queries=1024)
