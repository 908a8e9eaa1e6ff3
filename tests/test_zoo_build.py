"""``lwzoo zoo build``: an entry trained, evaluated, exported and filed in the local zoo (lwzoo/zoo_build.py)."""

import json

import numpy as np
import pytest
import torch

import lwzoo
from lwzoo.checkpoint import load_checkpoint
from lwzoo.data import DEMO_RECIPE
from lwzoo.errors import LwzooError
from lwzoo.recipe import load_recipe
from lwzoo.run_folder import CHECKPOINT
from lwzoo.zoo import ZOO, list_models, local_zoo_dir
from lwzoo.zoo_build import build

from .conftest import TINY

BUDGET = [*TINY, "optim.warmup_epochs=0.5", "train.log_every=2"]


@pytest.mark.slow  # a whole build, paused and resumed (~1 min on 2 cores): `pytest -m slow`
def test_build_pauses_resumes_then_loads_by_name(tmp_path):
    """zoo build on the built-in data with a tiny budget: stopped part-way, run again it continues (not
    restarts), evaluates, exports and files the entry with its card; then lwzoo.load(NAME) gives it."""
    name = "mobilenetv3_large-smoothed"
    options = {"epochs": 1, "batch_size": 64, "overrides": BUDGET, "device": "cpu"}
    paused = build(name, until_step=5, **options)
    assert paused.local is None and paused.pretrain.step == 5 and not paused.pretrain.finished
    with pytest.raises(LwzooError, match="not published"):
        lwzoo.load(name)  # nothing filed yet

    done = build(name, **options)
    assert done.pretrain.finished and done.pretrain.step == done.pretrain.total_steps == 32 and done.evaluated
    rows = [json.loads(line) for line in (done.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    assert steps == [2, 4, 5, *range(6, 33, 2)]  # paused at 5 (logged there), continued from it, not restarted
    assert load_checkpoint(done.run_dir / CHECKPOINT)["recipe"]["name"] == "demo"  # the demo budget on built-in data

    assert done.local == local_zoo_dir() / name
    (info,) = [m for m in list_models() if m.name == name]
    assert info.status == "local" and info.loadable
    card = (done.local / "README.md").read_text()
    assert "2,048 images from `builtin:train`" in card  # the data it was built on
    assert "62.3% ImageNet-1k" in card and "Target, not this model's result" in card
    assert "62.3" not in card.split("---\n")[1]  # the model-index cites measured numbers only
    evals = json.loads((done.local / "evals.json").read_text())["results"]
    assert {e["protocol"] for e in evals} == {"knn", "linear"} and all(e["baseline"] for e in evals)

    encoder = lwzoo.load(name)
    images = [np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8) for i in range(3)]
    assert torch.equal(encoder(images), lwzoo.load(done.run_dir / "export")(images))
    assert encoder.source == str(local_zoo_dir() / name)


@pytest.mark.parametrize("name", list(ZOO))
def test_each_entry_trains_its_own_arch_and_loss_and_is_not_mixed_with_other_options(name):
    """One step of every registry entry: its arch, and its variant's loss (plain InfoNCE for ``-infonce``, the
    demo recipe's smoothed InfoNCE on built-in data for ``-smoothed``); a build with another budget is refused."""
    entry = ZOO[name]
    paused = build(name, epochs=1, batch_size=64, overrides=BUDGET, device="cpu", until_step=1)
    ckpt = load_checkpoint(paused.run_dir / CHECKPOINT)
    alpha = dict(entry.overrides).get("loss.alpha", load_recipe(DEMO_RECIPE).loss.alpha)
    assert ckpt["arch"] == entry.arch and ckpt["recipe"]["loss"]["alpha"] == alpha
    assert (alpha == 0.0) == name.endswith("-infonce")  # plain InfoNCE exactly for the -infonce entries
    with pytest.raises(LwzooError, match="started with other batch_size"):
        build(name, epochs=1, batch_size=32, overrides=BUDGET, device="cpu")


def test_val_data_needs_labelled_training_data(tmp_path):
    from PIL import Image

    for folder in ("photos", "val/a", "val/b"):
        (tmp_path / folder).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    with pytest.raises(LwzooError, match="--val-data needs class sub-folders in --data"):
        build("effnet_b0-smoothed", data=tmp_path / "photos", val_data=tmp_path / "val")
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made
