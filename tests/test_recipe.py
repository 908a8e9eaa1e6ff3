import re

import pytest
import yaml

from lwzoo.config import apply_overrides, parse_overrides
from lwzoo.errors import LwzooError
from lwzoo.recipe import Recipe, list_recipes, load_recipe, recipe_from_dict, recipe_keys, recipes_dir


@pytest.mark.parametrize("name", list_recipes())
def test_shipped_recipes_load_and_round_trip(name):
    recipe = load_recipe(name)
    assert isinstance(recipe, Recipe)
    assert recipe.name == name
    assert recipe_from_dict(yaml.safe_load(recipe.to_yaml())) == recipe


@pytest.mark.parametrize("name", list_recipes())
def test_every_value_in_a_shipped_recipe_says_where_it_comes_from(name):
    for line in (recipes_dir() / f"{name}.yaml").read_text().splitlines():
        if re.match(r"^\s+\w+:\s*\S", line):  # a leaf value inside a section
            assert "#" in line, f"{name}.yaml: no source comment on: {line.strip()}"


def test_required_recipes_are_shipped():
    assert {"mobilenetv3_large", "effnet_b0", "mocov2_resnet50", "demo"} <= set(list_recipes())


def test_resnet50_recipe_is_moco_v2():
    r = load_recipe("mocov2_resnet50")
    assert (r.optim.lr, r.optim.lr_batch_size, r.optim.weight_decay) == (0.03, 256, 1e-4)
    assert (r.moco.temperature, r.moco.queue_size, r.moco.momentum) == (0.2, 65536, 0.999)
    assert (r.moco.mlp_hidden, r.moco.dim, r.moco.symmetric, r.loss.alpha) == (2048, 128, False, 0.0)
    assert r.train.epochs == 200


def test_tuned_recipes_inherit_and_override():
    r = load_recipe("mobilenetv3_large")
    assert r.moco.temperature == 0.1 and r.moco.symmetric and r.loss.alpha > 0
    assert r.moco.queue_size == 65536  # inherited from mocov2_resnet50


def test_overrides_are_typed():
    r = load_recipe(
        "mocov2_resnet50", parse_overrides(["optim.lr=0.5", "moco.symmetric=true", "augment.crop_scale=[0.3, 1]"])
    )
    assert r.optim.lr == 0.5 and r.moco.symmetric is True and r.augment.crop_scale == (0.3, 1.0)


def test_yaml_exponent_without_dot_reads_as_a_number():
    assert load_recipe("mocov2_resnet50", {"optim.weight_decay": "1e-5"}).optim.weight_decay == 1e-5


def test_unknown_override_key_names_close_matches():
    with pytest.raises(LwzooError, match=r"unknown recipe key 'optim\.lrr'.*'optim\.lr'"):
        load_recipe("mocov2_resnet50", {"optim.lrr": 0.1})


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("optim.lr", "fast", "must be a number"),
        ("train.epochs", 2.5, "must be an integer"),
        ("moco.symmetric", "yes", "must be true or false"),
        ("augment.crop_scale", [0.2], "must be a list of 2 numbers"),
        ("loss.smoothing", "gaussian", "must be one of 'topk', 'uniform'"),
        ("train.epochs", 0, "'train.epochs' is 0, but must be at least 1"),
        ("optim.warmup_epochs", 200, r"'optim.warmup_epochs' is 200.0, but must be in \[0, train.epochs=200\)"),
        ("loss.alpha", 1.0, r"must be in \[0, 1\)"),
        ("loss.topk", 70000, r"loss\.topk"),
    ],
)
def test_bad_values_are_clear_errors(key, value, expected):
    with pytest.raises(LwzooError, match=expected):
        load_recipe("mocov2_resnet50", {key: value})


def test_unknown_key_in_a_file_is_an_error(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: mocov2_resnet50\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(LwzooError, match=r"unknown recipe key 'optim\.learning_rate'"):
        load_recipe(path)


def test_missing_key_without_base_is_an_error(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("train:\n  epochs: 3\n")
    with pytest.raises(LwzooError, match="is missing"):
        load_recipe(path)


def test_user_recipe_with_base(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("base: mobilenetv3_large\ntrain:\n  epochs: 10\n")
    r = load_recipe(path)
    assert r.name == "short" and r.train.epochs == 10 and r.moco.temperature == 0.1


def test_unknown_recipe_name_lists_the_shipped_ones():
    with pytest.raises(LwzooError, match="Did you mean 'mobilenetv3_large'"):
        load_recipe("mobilenetv3_larg")


def test_invalid_yaml_is_an_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(LwzooError, match="not valid YAML"):
        load_recipe(path)


# A valid value other than mocov2_resnet50's for every recipe key, so setting it shows whether the override took.
OTHER_VALUES = {
    "name": "renamed",
    "description": "another description",
    "train.epochs": 7,
    "train.batch_size": 64,
    "train.log_every": 3,
    "train.keep_every": 2,
    "train.compile": "default",
    "optim.lr": 0.5,
    "optim.lr_batch_size": 128,
    "optim.weight_decay": 0.01,
    "optim.momentum": 0.5,
    "optim.warmup_epochs": 10.0,
    "optim.min_lr_ratio": 0.1,
    "optim.decay_norm_and_bias": False,
    "moco.dim": 64,
    "moco.mlp_hidden": 512,
    "moco.queue_size": 4096,
    "moco.momentum": 0.99,
    "moco.momentum_schedule": "cosine",
    "moco.temperature": 0.07,
    "moco.symmetric": True,
    "moco.key_bn_splits": 4,
    "moco.zero_init_residual": True,
    "moco.queue_init": "keys",
    "loss.alpha": 0.3,
    "loss.topk": 20,
    "loss.smoothing": "uniform",
    "loss.alpha_schedule": "cosine",
    "augment.image_size": 96,
    "augment.crop_scale": [0.3, 0.9],
    "augment.crop_ratio": [0.5, 2.0],
    "augment.jitter": [0.1, 0.2, 0.3, 0.4],
    "augment.jitter_p": 0.3,
    "augment.grayscale_p": 0.6,
    "augment.blur_p": 0.1,
    "augment.blur_sigma": [0.5, 1.5],
    "augment.flip_p": 0.0,
    "augment.mean": [0.5, 0.5, 0.5],
    "augment.std": [0.25, 0.25, 0.25],
    "augment.eval_crop_pct": 1.0,
    "data.decode_size": 128,
    "data.in_memory_gb": 2.0,
    "data.workers": 3,
}


def leaf_value(raw: dict, key: str):
    section, _, leaf = key.rpartition(".")
    return raw[section][leaf] if section else raw[leaf]


def test_every_key_has_another_value_to_set():
    assert set(recipe_keys()) >= {"optim.lr", "moco.temperature", "loss.alpha", "augment.image_size"}
    assert set(OTHER_VALUES) == set(recipe_keys())  # a new key needs its own other value here


@pytest.mark.parametrize("key", recipe_keys())
def test_every_key_is_settable(key):
    """Each key, set to a valid value other than its current one, takes that value through validation and
    changes no other key; setting its current value changes nothing."""
    assert key in OTHER_VALUES, f"give {key} a valid value other than mocov2_resnet50's in OTHER_VALUES"
    raw = load_recipe("mocov2_resnet50").to_dict()
    current, value = leaf_value(raw, key), OTHER_VALUES[key]
    assert apply_overrides(raw, {key: current}, recipe_keys(), "recipe") == raw
    assert value != current
    changed = load_recipe("mocov2_resnet50", {key: value}).to_dict()
    assert leaf_value(changed, key) == value
    assert changed == apply_overrides(raw, {key: value}, recipe_keys(), "recipe")  # and nothing else moved


def test_digest_changes_with_values():
    a, b = load_recipe("demo"), load_recipe("demo", {"optim.lr": 0.123})
    assert a.digest() != b.digest() and a.digest() == load_recipe("demo").digest()


def test_a_recipe_saved_before_later_keys_still_loads():
    """Checkpoints and exports written before train.compile existed hold recipes without it."""
    from lwzoo.recipe import LATER_KEYS, recipe_from_dict

    saved = load_recipe("demo").to_dict()
    del saved["train"]["compile"]
    old = recipe_from_dict(saved, source="an old checkpoint")
    assert old.train.compile is False and old == load_recipe("demo")
    assert set(LATER_KEYS) <= set(recipe_keys())
