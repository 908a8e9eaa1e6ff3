import json

import numpy as np
import pytest
import torch

import lwzoo
from lwzoo.checkpoint import LAST, load_checkpoint
from lwzoo.errors import LwzooError
from lwzoo.zoo import ZOO, list_models, local_zoo_dir
from lwzoo.zoo_build import build

from .conftest import TINY, run_cli

BUDGET = [*TINY, "optim.warmup_epochs=0.5", "train.log_every=2"]


@pytest.mark.parametrize("name", list(ZOO))
def test_every_registry_name_loads_or_says_how_to_build_it(name):
    """No registry entry is published yet, so each must say exactly that and give the one command that builds
    it, never point at the network or a token."""
    entry = ZOO[name]
    assert not entry.published and entry.evaluation is None
    with pytest.raises(LwzooError) as raised:
        lwzoo.load(name)
    message = str(raised.value)
    assert f"lwzoo zoo build {name} --data DIR" in message and "not published" in message
    assert "HF_TOKEN" not in message and "network" not in message and "cache" not in message
    (info,) = [m for m in list_models() if m.name == name]
    assert info.status == "not built" and not info.loadable and info.where == f"lwzoo zoo build {name} --data DIR"


def test_targets_are_the_papers_numbers_for_the_smoothed_entries_only():
    assert ZOO["mobilenetv3_large-smoothed"].target.startswith("62.3% ImageNet-1k linear-probe top-1")
    assert ZOO["effnet_b0-smoothed"].target.startswith("65.8% ImageNet-1k linear-probe top-1")
    assert ZOO["effnet_b0-infonce"].target is None and dict(ZOO["effnet_b0-infonce"].overrides) == {"loss.alpha": 0.0}


def test_zoo_list_shows_the_status():
    proc = run_cli("zoo", "list")
    assert proc.returncode == 0, proc.stderr
    rows = {
        line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip() and "not built':" not in line
    }
    assert set(ZOO) <= set(rows)
    for name in ZOO:
        assert " not built " in rows[name] and f"lwzoo zoo build {name} --data DIR" in rows[name]


def test_build_pauses_resumes_then_loads_by_name(tmp_path):
    """zoo build on the built-in data with a tiny budget: stopped part-way, run again it continues (not
    restarts), evaluates, exports and files the entry with its card; then lwzoo.load(NAME) gives it."""
    name = "mobilenetv3_large-smoothed"
    options = {"epochs": 1, "batch_size": 64, "overrides": BUDGET, "device": "cpu", "verbose": False}
    paused = build(name, until_step=5, **options)
    assert paused.local is None and paused.pretrain.step == 5 and not paused.pretrain.finished
    with pytest.raises(LwzooError, match="not published"):
        lwzoo.load(name)  # nothing filed yet

    done = build(name, **options)
    assert done.pretrain.finished and done.pretrain.step == done.pretrain.total_steps == 32 and done.evaluated
    rows = [json.loads(line) for line in (done.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    assert steps == [2, 4, 5, *range(6, 33, 2)]  # paused at 5 (logged there), continued from it, not restarted
    assert load_checkpoint(done.run_dir / LAST)["recipe"]["name"] == "demo"  # the demo budget on built-in data

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


def test_a_variant_trains_its_own_loss_and_is_not_mixed_with_other_options():
    name = "mobilenetv3_large-infonce"
    paused = build(name, epochs=1, batch_size=64, overrides=BUDGET, device="cpu", until_step=1, verbose=False)
    assert load_checkpoint(paused.run_dir / LAST)["recipe"]["loss"]["alpha"] == 0.0  # plain InfoNCE
    with pytest.raises(LwzooError, match="started with other batch_size"):
        build(name, epochs=1, batch_size=32, overrides=BUDGET, device="cpu", verbose=False)


def test_val_data_needs_labelled_training_data(tmp_path):
    from PIL import Image

    for folder in ("photos", "val/a", "val/b"):
        (tmp_path / folder).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    with pytest.raises(LwzooError, match="--val-data needs class sub-folders in --data"):
        build("effnet_b0-smoothed", data=tmp_path / "photos", val_data=tmp_path / "val", verbose=False)
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made
