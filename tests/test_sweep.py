"""lwzoo sweep: arms x seeds as real runs in child processes, scored, compared by seed, resumable."""

import json
import statistics

import pytest

from lwzoo.errors import LwzooError
from lwzoo.sweep import SWEEP_JSON, SWEEP_MD, SWEEP_PNG, Arm, compare, mean_sd, sweep

TINY = ["train.batch_size=128", "moco.queue_size=512", "train.log_every=4"]


@pytest.mark.parametrize(
    ("text", "arm"),
    [
        ("base=", Arm("base")),
        ("r50=recipe:mocov2_resnet50", Arm("r50", "mocov2_resnet50")),
        ("a0=loss.alpha=0", Arm("a0", None, ("loss.alpha=0",))),
        ("mix=recipe:demo,loss.alpha=0.3,loss.topk=5", Arm("mix", "demo", ("loss.alpha=0.3", "loss.topk=5"))),
        ("s1-a0.1=loss.alpha=0.1", Arm("s1-a0.1", None, ("loss.alpha=0.1",))),  # a value in the name
    ],
)
def test_arm_specs(text, arm):
    assert Arm.parse(text) == arm


@pytest.mark.parametrize("text", ["noequals", "=loss.alpha=0", "bad name=", "x=alpha", "a/b=", "a:b="])
def test_bad_arm_specs_are_one_line_errors(text):
    with pytest.raises(LwzooError, match="--arm"):
        Arm.parse(text)


def test_paired_difference_and_verdicts_match_a_float64_reference():
    base = {0: 30.0, 1: 31.5, 2: 29.25}
    arm = {0: 33.0, 1: 34.0, 2: 32.75, 3: 99.0}  # seed 3 has no base: not paired
    c = compare(arm, base)
    diffs = [3.0, 2.5, 3.5]
    assert c["diffs"] == {0: 3.0, 1: 2.5, 2: 3.5}
    assert c["mean"] == pytest.approx(statistics.fmean(diffs), abs=1e-12)
    assert c["sd"] == pytest.approx((sum((d - 3.0) ** 2 for d in diffs) / 2) ** 0.5, abs=1e-12)
    assert c["verdict"] == "beats base beyond 2 sd"
    assert compare(base, arm)["verdict"] == "loses to base beyond 2 sd"
    noisy = {0: 31.0, 1: 30.0, 2: 30.0}  # differences +1, -1.5, +0.75
    assert compare(noisy, base)["verdict"] == "within noise"
    assert compare({0: 40.0}, {0: 30.0})["verdict"] == "one seed: no verdict"
    assert mean_sd([2.0]) == (2.0, None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arms": ["a=", "a=loss.alpha=0"]}, "different name"),
        ({"base": "nope"}, "--base"),
        ({"seeds": [0, 0]}, "--seeds"),
        ({"jobs": 0}, "--jobs"),
        ({"subset": 100}, "--subset"),
        ({"data": "/tmp"}, "--val-data"),
        ({"arch": "resnet9000"}, "unknown architecture"),
        # the last arm's typo is found before the first arm trains
        ({"arms": ["base=", "b=loss.alfa=0.3"]}, "arm 'b': unknown recipe key 'loss.alfa'"),
        ({"arms": ["base=", "g=loss.smoothing=graded_topk,loss.topk=7"]}, "arm 'g': .*graded_topk"),
        ({"arms": ["base=", "r=recipe:nope"]}, "arm 'r': .*nope"),
        ({"arms": ["base="], "overrides": ["moco.queue_size=-4"]}, "arm 'base': .*queue_size"),
    ],
)
def test_bad_sweeps_are_refused_before_anything_runs(tmp_path, kwargs, match):
    args = {"arch": "mobilenetv3_large", "arms": ["base="], "seeds": [0], "out": tmp_path / "s"} | kwargs
    with pytest.raises(LwzooError, match=match):
        sweep(**args)
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # 14 child processes (~3 min on 2 cores): `pytest -m slow`
def test_a_sweep_on_the_builtin_data_runs_scores_compares_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    args = {
        "arch": "mobilenetv3_large",
        "arms": ["base=", "a0=loss.alpha=0"],
        "seeds": [0, 1],
        "epochs": 1,
        "overrides": TINY,
        "jobs": 2,
        "device": "cpu",
        "out": out,
    }
    result = sweep(**args)
    record = json.loads((out / SWEEP_JSON).read_text())
    for arm in ("base", "a0"):
        for seed in (0, 1):
            run = out / "units" / f"{arm}-s{seed}"
            evals = {r["protocol"]: r for r in json.loads((run / "evals.json").read_text())["results"]}
            assert set(evals) == {"knn", "linear"}
            for protocol in ("knn", "linear"):  # the sweep reports exactly what each run recorded
                assert result.scores[arm][protocol][seed] == evals[protocol]["top1"]
                assert record["scores"][arm][protocol][str(seed)] == evals[protocol]["top1"]
            recipe = (run / "recipe.yaml").read_text()
            assert "batch_size: 128" in recipe and ("alpha: 0.0" in recipe) == (arm == "a0")
    c = result.comparisons["a0"]["knn"]
    assert c["diffs"] == {s: result.scores["a0"]["knn"][s] - result.scores["base"]["knn"][s] for s in (0, 1)}
    assert 0 < result.random["knn"] < 100 and result.random == record["random_init"]
    for protocol in ("knn", "linear"):  # random init is scored beside the base arm's first seed, as it is scored
        report = json.loads((out / "units" / "base-s0" / f"eval-{protocol}.json").read_text())
        assert result.random[protocol] == report["baseline"]["top1"]
        assert report["baseline"]["settings"]["crop_pct"] == report["settings"]["crop_pct"]
        assert report["baseline"]["settings"]["image_size"] == report["settings"]["image_size"]
    table = (out / SWEEP_MD).read_text()
    assert "| a0 |" in table and "| base (base) |" in table and "random-init" in table and c["verdict"] in table
    assert (out / SWEEP_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    logs = {p.name: p.read_text() for p in (out / "logs").iterdir()}
    again = sweep(**args)  # everything is done: nothing runs again, the numbers are the same
    assert again.scores == result.scores
    assert {p.name: p.read_text() for p in (out / "logs").iterdir()} == logs
