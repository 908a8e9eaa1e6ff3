import math

import pytest
import torch
import torchvision.transforms.functional as TF

from lwzoo.augment import (
    TwoViewAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    crop_boxes,
    gaussian_blur,
    grayscale,
    hsv_to_rgb,
    resized_crop,
    rgb_to_hsv,
)
from lwzoo.recipe import load_recipe


@pytest.fixture
def images():
    return torch.rand(6, 3, 20, 20, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "ours,theirs,factors",
    [
        (adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4]),
        (adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4]),
        (adjust_saturation, TF.adjust_saturation, [0.6, 1.0, 1.4]),
        (adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.05, 0.5]),
    ],
)
def test_colour_ops_match_torchvision_per_image(images, ours, theirs, factors):
    """Each image gets its own factor; torchvision, applied one image at a time, is the reference."""
    f = torch.tensor(factors * 2)[: len(images)]
    got = ours(images, f)
    want = torch.stack([theirs(img, float(fi)) for img, fi in zip(images, f, strict=True)])
    assert torch.allclose(got, want, atol=2e-5)


def test_grayscale_matches_torchvision(images):
    assert torch.allclose(grayscale(images), TF.rgb_to_grayscale(images), atol=1e-6)


def test_hsv_round_trip(images):
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(images)), images, atol=1e-5)


def test_crop_boxes_respect_scale_ratio_and_bounds():
    g = torch.Generator().manual_seed(1)
    boxes = crop_boxes(20000, (0.2, 1.0), (3 / 4, 4 / 3), g, torch.device("cpu"))
    cx, cy, w, h = boxes.unbind(1)
    assert torch.all(cx - w / 2 >= -1e-6) and torch.all(cx + w / 2 <= 1 + 1e-6)
    assert torch.all(cy - h / 2 >= -1e-6) and torch.all(cy + h / 2 <= 1 + 1e-6)
    area, aspect = w * h, w / h
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 1 + 1e-4
    assert aspect.min() >= 3 / 4 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
    # log-aspect is uniform: its mean is the midpoint of [log 3/4, log 4/3], which is 0
    assert abs(aspect.log().mean().item()) < 0.01


def test_resized_crop_of_the_whole_image_is_identity_and_flip_mirrors():
    x = torch.rand(2, 3, 16, 16)
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2)
    same = resized_crop(x, whole, torch.tensor([False, True]), 16)
    assert torch.allclose(same[0], x[0], atol=1e-5)
    assert torch.allclose(same[1], x[1].flip(-1), atol=1e-5)


def test_resized_crop_takes_the_right_region():
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4, :4] = 1.0  # top-left quadrant
    top_left = torch.tensor([[0.25, 0.25, 0.5, 0.5]])
    assert torch.allclose(resized_crop(x, top_left, torch.tensor([False]), 4), torch.ones(1, 1, 4, 4))


def test_blur_preserves_constants_and_smooths():
    flat = torch.full((2, 3, 12, 12), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.5, 2.0])), flat, atol=1e-6)
    noise = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    blurred = gaussian_blur(noise, torch.tensor([0.3, 2.0]))
    assert blurred[1].std() < blurred[0].std() < noise.std()


def test_two_views_shapes_determinism_and_independence():
    cfg = load_recipe("mocov2_resnet50", {"augment.image_size": 24}).augment
    aug = TwoViewAugment(cfg)
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    v1, v2 = aug(x, torch.Generator().manual_seed(3))
    w1, w2 = aug(x, torch.Generator().manual_seed(3))
    assert v1.shape == v2.shape == (5, 3, 24, 24)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert not torch.allclose(v1, v2)


def test_view_statistics_follow_the_recipe():
    """Over many images, grayscale, flip and jitter fire at their recipe probabilities."""
    cfg = load_recipe("mocov2_resnet50", {"augment.image_size": 8, "augment.blur_p": 0.0}).augment
    aug = TwoViewAugment(cfg)
    n = 4000
    # a horizontal ramp in red only: grayscale makes the channels equal, flip reverses the ramp
    ramp = torch.linspace(0, 1, 16)
    x = torch.zeros(n, 3, 16, 16)
    x[:, 0] = ramp
    v = aug.view(x, torch.Generator().manual_seed(4)) * aug.std + aug.mean
    gray = (v[:, 0] - v[:, 1]).abs().amax(dim=(1, 2)) < 1e-4
    assert abs(gray.float().mean().item() - cfg.grayscale_p) < 4 * math.sqrt(0.2 * 0.8 / n)
    slope = (v[:, :, :, -1] - v[:, :, :, 0]).mean(dim=(1, 2))
    flipped = slope < 0
    assert abs(flipped[~gray].float().mean().item() - cfg.flip_p) < 4 * math.sqrt(0.25 / n)
