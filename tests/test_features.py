"""Frozen features (lwzoo/features.py): one eval-mode pass over an image set, cached on disk by content."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from lwzoo.data import ImageSet
from lwzoo.features import compute_features, extract_features
from lwzoo.preprocess import Preprocess

PRE = Preprocess(6, 0.75, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # decode 8 px, centre 6 px
CPU = torch.device("cpu")


def tiny_net() -> nn.Module:
    """conv -> BatchNorm (with running statistics off their init, so eval mode matters) -> ReLU -> pooled (N, 4)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


def image_set(n: int = 10, key: str = "tiny-v1", labelled: bool = True) -> ImageSet:
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n) % 2 if labelled else None
    return ImageSet("tiny", 8, ["a", "b"] if labelled else [], labels, images, key=key)


def reference_features(net: nn.Module, images: torch.Tensor) -> np.ndarray:
    """The centre crop, normalisation and the net in eval mode, all in float64."""
    mean = torch.tensor(PRE.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(PRE.std, dtype=torch.float64).view(1, 3, 1, 1)
    x = (images[..., 1:7, 1:7].double() / 255 - mean) / std
    with torch.no_grad():
        return copy.deepcopy(net).double().eval()(x).numpy()


def test_features_are_an_eval_mode_pass_matching_a_float64_reference():
    net, images = tiny_net().train(), image_set()
    feats, index = compute_features(net, PRE, images, CPU, batch_size=4)  # batches of 4, 4 and 2
    assert net.training  # the caller's mode is given back
    assert feats.dtype == torch.float32 and torch.equal(index, torch.arange(10))
    np.testing.assert_allclose(feats.numpy(), reference_features(net, images.images), rtol=1e-5, atol=1e-6)


def test_a_second_extraction_reads_the_cache_and_a_changed_input_does_not():
    net, images = tiny_net(), image_set()
    first = extract_features(net, "tiny-net", PRE, images, CPU, batch_size=4)
    assert not first.cached and first.classes == ["a", "b"] and torch.equal(first.labels, images.labels)
    # stored in float16, and rounded so already on the first run: a cached rerun gives identical numbers
    assert torch.equal(first.features, first.features.half().float())
    np.testing.assert_allclose(first.features.numpy(), reference_features(net, images.images), rtol=2e-3, atol=1e-3)

    scrambled = copy.deepcopy(net)
    with torch.no_grad():
        scrambled[0].weight.normal_()
    again = extract_features(scrambled, "tiny-net", PRE, images, CPU)  # same identity: the backbone is not run
    assert again.cached and torch.equal(again.features, first.features) and torch.equal(again.labels, first.labels)
    for identity, preprocess, data in [
        ("another-net", PRE, images),
        ("tiny-net", Preprocess(4, 0.5, PRE.mean, PRE.std), images),
        ("tiny-net", PRE, image_set(key="tiny-v2")),
    ]:
        assert not extract_features(net, identity, preprocess, data, CPU).cached, (identity, preprocess, data.key)


def test_a_damaged_cache_file_costs_a_recomputation(tmp_path):
    net, images = tiny_net(), image_set()
    first = extract_features(net, "tiny-net", PRE, images, CPU)
    (cached,) = (tmp_path / "cache").rglob("*.pt")  # the test's LWZOO_CACHE (conftest)
    cached.write_bytes(b"PK\x03\x04 torn")
    again = extract_features(net, "tiny-net", PRE, images, CPU)
    assert not again.cached and torch.equal(again.features, first.features)
    assert extract_features(net, "tiny-net", PRE, images, CPU).cached  # and it is written again


def test_unlabelled_images_have_no_features_to_evaluate():
    with pytest.raises(ValueError, match="needs a labelled image set"):
        extract_features(tiny_net(), "tiny-net", PRE, image_set(labelled=False), CPU)
