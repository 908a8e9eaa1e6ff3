"""Where the shipped data folders live at run time (lwzoo/resources.py)."""

import pytest

from lwzoo.resources import resource_dir


@pytest.mark.parametrize(
    "name,shipped", [("recipes", "demo.yaml"), ("export", "default.yaml"), ("model_cards", "template.md.j2")]
)
def test_each_shipped_folder_is_found_with_its_files(name, shipped):
    assert (resource_dir(name) / shipped).is_file()


def test_a_missing_folder_says_to_reinstall():
    with pytest.raises(FileNotFoundError, match="'nothing' folder is missing from this install; reinstall lwzoo"):
        resource_dir("nothing")
