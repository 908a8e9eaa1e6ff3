"""The zoo registry (lwzoo/zoo.py): every entry is tested by construction, parametrised over ``ZOO``.
Building an entry is tested in test_zoo_build.py."""

import pytest

import lwzoo
from lwzoo.archs import get_arch
from lwzoo.errors import LwzooError
from lwzoo.recipe import load_recipe
from lwzoo.zoo import ZOO, get_entry, list_models

from .conftest import run_cli

VARIANTS = ("smoothed", "infonce")  # <arch>-<variant>: the paper's smoothed InfoNCE, or plain InfoNCE


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


@pytest.mark.parametrize("name", list(ZOO))
def test_every_entry_resolves_to_its_arch_recipe_and_repository(name):
    """The name is ``<arch>-<variant>``; the arch and the recipe with the variant's overrides load; the variant's
    loss is the one its name says; the Hub repository is named after the entry."""
    entry = ZOO[name]
    assert entry.name == name and get_entry(name) is entry
    arch, _, variant = name.rpartition("-")
    assert arch == entry.arch == get_arch(entry.arch).name and variant in VARIANTS
    assert entry.repo_id == f"lwzoo/{name}" and entry.revision and entry.license and entry.description
    recipe = load_recipe(entry.recipe, dict(entry.overrides))
    for key, value in entry.overrides:
        section, leaf = key.split(".")
        assert getattr(getattr(recipe, section), leaf) == value, key
    if variant == "infonce":
        assert recipe.loss.alpha == 0.0 and entry.target is None
    else:
        assert recipe.loss.alpha > 0 and recipe.loss.smoothing == "topk"
        assert "ImageNet-1k linear-probe top-1" in entry.target
    (info,) = [m for m in list_models() if m.name == name]
    assert info.description == entry.description


@pytest.mark.parametrize("name", list(ZOO))
def test_a_misspelt_name_is_an_error_that_suggests_the_entry(name):
    with pytest.raises(LwzooError, match="is not in the zoo") as raised:
        get_entry(name[:-1])
    assert repr(name) in str(raised.value) and "lwzoo zoo list" in str(raised.value)


@pytest.fixture(scope="module")
def zoo_list_rows(tmp_path_factory):
    """`lwzoo zoo list` run once, with an empty cache and runs folder (no local builds): its rows by name."""
    home = tmp_path_factory.mktemp("zoo-list")
    env = {"LWZOO_CACHE": str(home / "cache"), "LWZOO_RUNS": str(home / "runs"), "HF_HUB_OFFLINE": "1"}
    proc = run_cli("zoo", "list", env=env)
    assert proc.returncode == 0, proc.stderr
    return {
        line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip() and "not built':" not in line
    }


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_list_shows_the_status(zoo_list_rows, name):
    assert name in zoo_list_rows
    assert " not built " in zoo_list_rows[name] and f"lwzoo zoo build {name} --data DIR" in zoo_list_rows[name]
