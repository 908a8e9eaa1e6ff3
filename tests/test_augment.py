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


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov distance between samples a and b."""
    grid = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, grid, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def test_crop_area_and_aspect_match_torchvision_random_resized_crop():
    """Our batched boxes against torchvision's own RandomResizedCrop.get_params, as distributions."""
    import torchvision.transforms as T

    n, side = 4000, 1000
    boxes = crop_boxes(n, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(5), torch.device("cpu"))
    ours_area, ours_aspect = boxes[:, 2] * boxes[:, 3], boxes[:, 2] / boxes[:, 3]
    torch.manual_seed(5)
    img = torch.zeros(1, side, side)
    params = torch.tensor([T.RandomResizedCrop.get_params(img, (0.2, 1.0), (3 / 4, 4 / 3))[2:] for _ in range(n)])
    tv_area, tv_aspect = params[:, 0] * params[:, 1] / side**2, params[:, 1] / params[:, 0]
    # 1.63 / sqrt(n/2) is the 1% critical value of the two-sample KS test
    assert ks_statistic(ours_area, tv_area) < 1.63 / (n / 2) ** 0.5
    assert ks_statistic(ours_aspect, tv_aspect) < 1.63 / (n / 2) ** 0.5


def only(**augment) -> TwoViewAugment:
    """A pipeline with every random op off except the named ones (whole-image crop, no flip)."""
    base = {
        "augment.image_size": 8,
        "augment.crop_scale": [1.0, 1.0],
        "augment.crop_ratio": [1.0, 1.0],
        "augment.jitter": [0, 0, 0, 0],
        "augment.jitter_p": 0.0,
        "augment.grayscale_p": 0.0,
        "augment.blur_p": 0.0,
        "augment.flip_p": 0.0,
        "augment.mean": [0, 0, 0],
        "augment.std": [1, 1, 1],
    }
    return TwoViewAugment(load_recipe("mocov2_resnet50", {**base, **augment}).augment)


def test_brightness_factors_span_the_recipe_range_uniformly():
    aug = only(**{"augment.jitter": [0.4, 0, 0, 0], "augment.jitter_p": 1.0})
    x = torch.full((4000, 3, 8, 8), 0.5)
    factor = aug.view(x, torch.Generator().manual_seed(6)).mean(dim=(1, 2, 3)) / 0.5
    assert factor.min() >= 0.6 - 1e-4 and factor.max() <= 1.4 + 1e-4
    assert ks_statistic(factor, 0.6 + 0.8 * torch.rand(4000, generator=torch.Generator().manual_seed(7))) < 0.04


def test_hue_shifts_stay_within_the_recipe_range():
    aug = only(**{"augment.jitter": [0, 0, 0, 0.1], "augment.jitter_p": 1.0})
    red = torch.zeros(2000, 3, 8, 8)
    red[:, 0] = 1.0  # hue 0
    hue = rgb_to_hsv(aug.view(red, torch.Generator().manual_seed(8)))[:, 0].mean(dim=(1, 2))
    shift = torch.where(hue > 0.5, hue - 1, hue)
    assert shift.abs().max() <= 0.1 + 1e-4 and shift.min() < -0.08 and shift.max() > 0.08


@pytest.mark.parametrize("key,p", [("augment.jitter_p", 0.8), ("augment.blur_p", 0.5)])
def test_ops_fire_at_their_recipe_probability(key, p):
    settings = {key: p}
    if key == "augment.jitter_p":
        settings["augment.jitter"] = [0.4, 0, 0, 0]
    x = torch.rand(4000, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    out = only(**settings).view(x, torch.Generator().manual_seed(10))
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert abs(changed.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / 4000)
