"""benchmarks/recipe_ablation.py is a thin caller of ``lwzoo.sweep``: its studies are data, and every arm of every
study must be a recipe lwzoo accepts for both nets, so a study cannot fail an hour into a sweep."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from lwzoo.config import parse_overrides
from lwzoo.recipe import load_recipe
from lwzoo.sweep import Arm

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def ablation():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("recipe_ablation")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("net", ["mobilenetv3_large", "effnet_b0"])
def test_every_arm_of_every_study_is_a_valid_recipe(ablation, net):
    for name, study in ablation.STUDIES.items():
        arms = [Arm.parse(a) for a in ablation.study_arms(study, ["moco.temperature=0.2"])]
        assert len({a.name for a in arms}) == len(arms), name
        for arm in arms:
            recipe = load_recipe(arm.recipe or net, parse_overrides([*study.overrides, *arm.overrides]))
            assert recipe.augment.image_size == 32, (name, arm.name)
            assert recipe.moco.momentum == 0.99, (name, arm.name)


def test_the_smoothing_study_compares_the_authors_strategies_with_plain_infonce(ablation):
    study = ablation.STUDIES["smoothing"]
    arms = {a.name: a for a in map(Arm.parse, study.arms)}
    assert next(iter(arms)) == "plain"  # the base: the first arm
    settings = {name: parse_overrides(list(arm.overrides)) for name, arm in arms.items() if not arm.recipe}
    assert settings["plain"] == {"loss.alpha": 0}
    got = {(s.get("loss.smoothing"), s.get("loss.alpha")) for n, s in settings.items() if n != "plain"}
    assert got == {(kind, a) for kind in ("topk", "graded_topk") for a in (0.1, 0.3)}
    # the queue is smaller than the pretraining set: the regime where the model can fit its positives
    assert parse_overrides(list(study.overrides))["moco.queue_size"] < study.images


def test_search_changes_become_arms_named_by_their_change(ablation):
    arms = ablation.study_arms(ablation.STUDIES["search"], ["loss.alpha=0.3", "moco.temperature=0.2"])
    assert [Arm.parse(a).name for a in arms] == ["base", "loss.alpha-0.3", "moco.temperature-0.2"]
    assert Arm.parse(arms[1]).overrides == ("loss.alpha=0.3",)
