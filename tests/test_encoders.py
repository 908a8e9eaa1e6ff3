"""Encoder specs (lwzoo/encoders.py): what ``random:ARCH[:SEED]`` resolves to, and the errors of a bad spec.

Checkpoints, exports and ``timm:ARCH`` are resolved end to end in test_evaluate.py, test_export.py and
test_load.py."""

import pytest
import torch

from lwzoo.archs import ARCHS
from lwzoo.encoders import load_encoder
from lwzoo.errors import LwzooError
from lwzoo.preprocess import Preprocess
from lwzoo.recipe import load_recipe


def test_a_random_encoder_is_timms_init_frozen_in_eval_mode():
    encoder = load_encoder("random:resnet18:3", data="builtin")
    assert encoder.arch is ARCHS["resnet18"] and encoder.spec == "random:resnet18:3" and encoder.feature_dim == 512
    assert not encoder.backbone.training and not any(p.requires_grad for p in encoder.backbone.parameters())
    assert "random|resnet18|3|" in encoder.identity and encoder.checkpoint is None
    with torch.no_grad():
        assert encoder.backbone(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_the_seed_picks_the_init_and_only_the_seed():
    def weights(spec: str) -> torch.Tensor:
        return load_encoder(spec, data="builtin").backbone.conv1.weight

    default, zero, one = weights("random:resnet18"), weights("random:resnet18:0"), weights("random:resnet18:1")
    assert torch.equal(default, zero) and not torch.equal(zero, one)  # seed 0 is the default


def test_a_random_baseline_takes_the_preprocessing_of_the_data_it_will_see(tmp_path):
    """The demo recipe's on the built-in set, the arch's own recipe's on a folder of the user's images."""
    on_builtin = load_encoder("random:mobilenetv3_large", data="builtin:val").preprocess
    on_folder = load_encoder("random:mobilenetv3_large", data=tmp_path).preprocess
    assert on_builtin == Preprocess.from_recipe(load_recipe("demo"))
    assert on_folder == Preprocess.from_recipe(load_recipe(ARCHS["mobilenetv3_large"].recipe))
    assert on_builtin != on_folder


def test_image_size_changes_the_size_and_keeps_the_rest_of_the_preprocessing():
    own = load_encoder("random:resnet18", data="builtin").preprocess
    resized = load_encoder("random:resnet18", data="builtin", image_size=48).preprocess
    assert resized == Preprocess(48, own.crop_pct, own.mean, own.std, own.interpolation) and own.image_size != 48


@pytest.mark.parametrize(
    "spec,message",
    [
        ("random:resnet18:one", r"the seed after the arch must be an integer, as in random:resnet18:1"),
        ("random:vit_giant", r"unknown architecture 'vit_giant'"),
        ("timm:vit_giant", r"unknown architecture 'vit_giant'"),
    ],
)
def test_a_bad_spec_is_a_clear_error(spec, message):
    with pytest.raises(LwzooError, match=message):
        load_encoder(spec)


def test_a_path_that_is_nothing_lwzoo_wrote_is_a_clear_error(tmp_path):
    with pytest.raises(LwzooError, match="does not exist"):
        load_encoder(tmp_path / "nowhere.pt")
    with pytest.raises(LwzooError, match="holds no checkpoint-last.pt"):
        load_encoder(tmp_path)  # an empty folder: neither a run nor an export
