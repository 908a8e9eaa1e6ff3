"""The Hub folder: one layout for export, publish and the local zoo, and what timm makes of it."""

import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from lwzoo.errors import LwzooError
from lwzoo.hub_folder import CARD, CURVE, EXPORT_FILES, FILES, MODEL_FILES, assemble


def test_export_writes_only_names_of_the_layout_and_assemble_adds_the_card(evaluated_export, tmp_path):
    exported = {p.name for p in evaluated_export.iterdir() if p.is_file()}
    assert exported <= set(EXPORT_FILES)
    files = assemble(evaluated_export, tmp_path / "hub", "lwzoo-test/x")
    assert set(files) == exported | {CARD, CURVE} and set(files) <= FILES
    for name in exported:  # copied byte for byte
        assert (tmp_path / "hub" / name).read_bytes() == (evaluated_export / name).read_bytes()


def test_every_model_file_has_a_recorded_checksum(evaluated_export):
    recorded = json.loads((evaluated_export / "config.json").read_text())["lwzoo"]["files"]
    assert set(recorded) == {name for name in MODEL_FILES if (evaluated_export / name).is_file()}


def test_an_edited_model_file_is_refused_before_anything_is_assembled(evaluated_export, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(evaluated_export, edited)
    (edited / "model.onnx").write_bytes((edited / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(LwzooError, match="does not match the sha256"):
        assemble(edited, tmp_path / "hub", "lwzoo-test/x")


def _timm_with_overlay(path, **overlay):
    return timm.create_model(
        "mobilenetv3_large_100", num_classes=0, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), **overlay)
    )


def test_the_readme_timm_snippet_loads_strictly(evaluated_export, tmp_path):
    """With ``num_classes=0`` in the overlay (as the README shows) a weights file missing a key is refused;
    without it timm loads non-strictly and the missing key would go unnoticed."""
    state = load_file(str(evaluated_export / "model.safetensors"))
    model = _timm_with_overlay(evaluated_export / "model.safetensors", num_classes=0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    dropped = next(k for k in state if k.endswith("running_mean"))
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if k != dropped}, str(partial))
    with pytest.raises(RuntimeError, match="Missing key"):
        _timm_with_overlay(partial, num_classes=0)
    _timm_with_overlay(partial)  # timm's own default: strict=False, so this loads
