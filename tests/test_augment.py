import colorsys
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

import lwzoo.augment as augment_module
from lwzoo.augment import (
    TwoViewAugment,
    adjust_brightness,
    adjust_brightness_,
    adjust_contrast,
    adjust_contrast_,
    adjust_hue,
    adjust_hue_,
    adjust_saturation,
    adjust_saturation_,
    blur_radius,
    crop_boxes,
    gaussian_blur,
    grayscale,
    hsv_to_rgb,
    reflect_blur_matrices,
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


# --- the colour ops against float64 references, the view's post-crop stage against torchvision image by image


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (adjust_brightness, TF.adjust_brightness),
        (adjust_contrast, TF.adjust_contrast),
        (adjust_saturation, TF.adjust_saturation),
    ],
)
def test_blend_ops_match_torchvision_in_float64(images, ours, theirs):
    """In float64 these ops are their formulas: torchvision in float64 is the reference, to rounding."""
    x, f = images.double(), torch.tensor([0.6, 1.0, 1.4, 0.0, 1.9, 0.75], dtype=torch.float64)
    want = torch.stack([theirs(img, float(fi)) for img, fi in zip(x, f, strict=True)])
    assert torch.allclose(ours(x, f), want, atol=1e-12)


def colorsys_hue(img: torch.Tensor, shift: float) -> torch.Tensor:
    """Float64 reference hue shift of one (3, H, W) image, pixel by pixel through Python's colorsys."""
    pixels = img.double().reshape(3, -1).T.tolist()
    hsv = [colorsys.rgb_to_hsv(*rgb) for rgb in pixels]
    rgb = [colorsys.hsv_to_rgb((h + shift) % 1.0, s, v) for h, s, v in hsv]
    return torch.tensor(rgb, dtype=torch.float64).T.reshape(img.shape)


def edge_colours() -> torch.Tensor:
    """(1, 3, 8, 8): the colours where a hue computation branches (grays, black, white, primaries and
    secondaries, two-way ties for the max, hairline saturations, hues at sextant borders), then random ones."""
    edges = [
        (0, 0, 0), (1, 1, 1), (0.5, 0.5, 0.5), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1),
        (0.7, 0.7, 0.2), (0.2, 0.7, 0.7), (0.7, 0.2, 0.7), (0.6, 0.3, 0.3), (0.3, 0.6, 0.3), (0.3, 0.3, 0.6),
        (0.5, 0.5 + 1e-6, 0.5), (1e-7, 0, 0), (0.9, 0.9, 0.9 - 1e-6), (0.8, 0.4, 0.0), (0.0, 0.8, 0.4),
    ]  # fmt: skip
    pixels = torch.rand(64, 3, generator=torch.Generator().manual_seed(11))
    pixels[: len(edges)] = torch.tensor(edges)
    return pixels.T.reshape(1, 3, 8, 8).contiguous()


@pytest.mark.parametrize("shift", [-0.5, -0.1, 0.0, 1e-4, 0.05, 0.1, 1 / 6, 0.5])
def test_hue_matches_torchvision_and_a_float64_reference_on_edge_colours(shift):
    x = edge_colours()
    got = adjust_hue(x, torch.tensor([shift]))[0]
    assert torch.allclose(got, TF.adjust_hue(x[0], shift), atol=2e-5)
    assert torch.allclose(got.double(), colorsys_hue(x[0], shift), atol=2e-5)
    # in float64 the op is its formula: no float32 slack can hide a wrong branch
    got64 = adjust_hue(x.double(), torch.tensor([shift], dtype=torch.float64))[0]
    assert torch.allclose(got64, colorsys_hue(x[0], shift), atol=1e-12)


def test_in_place_colour_ops_write_into_their_input_and_match_the_copies(images):
    f = torch.tensor([0.6, 1.0, 1.4, 0.8, 1.2, 0.9])
    for in_place, copy, factor in [
        (adjust_brightness_, adjust_brightness, f),
        (adjust_contrast_, adjust_contrast, f),
        (adjust_saturation_, adjust_saturation, f),
        (adjust_hue_, adjust_hue, f - 1),
    ]:
        x = images.clone()
        assert in_place(x, factor) is x
        assert torch.equal(x, copy(images, factor))


def reference_blur(img: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Float64 reference: one (3, H, W) image convolved with the 2-D Gaussian of half-width ``radius``
    (the outer product of the normalised 1-D kernel), reflect padding, in one non-separable pass."""
    pos = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(pos**2) / (2 * sigma**2))
    k2 = torch.outer(k, k) / k.sum() ** 2
    padded = F.pad(img.double()[None], (radius,) * 4, mode="reflect")
    return F.conv2d(padded.transpose(0, 1), k2[None, None]).transpose(0, 1)[0]


# (H, W): square and not, small enough for the matrix products and (150 px) large enough for the shifted taps
@pytest.mark.parametrize(("height", "width"), [(5, 5), (12, 12), (40, 40), (40, 24), (9, 150), (150, 150)])
def test_blur_matches_a_float64_reference(height, width):
    sigma = torch.tensor([0.1, 0.4, 1.0, 2.0])
    x = torch.rand(4, 3, height, width, generator=torch.Generator().manual_seed(12))
    got = gaussian_blur(x, sigma)
    radius = blur_radius(sigma, min(height, width))
    assert radius == min(6, height - 1, width - 1)  # 3 sigma of the batch's largest sigma, below the side
    for img, s, out in zip(x, sigma.tolist(), got, strict=True):
        assert torch.allclose(out.double(), reference_blur(img, s, radius), atol=1e-6)


def test_reflect_blur_matrix_folds_the_taps_that_fall_off_an_end_back_in():
    """Kernel (a, b, c) on a length-4 signal with reflect padding (v_-1 = v_1, v_4 = v_2): row 0 reads v_1, v_0,
    v_1; row 3 reads v_2, v_3, v_2; every row sums to the kernel's sum."""
    a, b, c = 0.25, 0.5, 0.125
    want = torch.tensor([[b, a + c, 0, 0], [a, b, c, 0], [0, a, b, c], [0, 0, a + c, b]], dtype=torch.float64)
    got = reflect_blur_matrices(torch.tensor([[a, b, c]], dtype=torch.float64), 4)
    assert torch.equal(got, want[None])


def torchvision_stage(v: torch.Tensor, draws, cfg, radius: int) -> torch.Tensor:
    """The view's post-crop stage, one image at a time, from torchvision's functional ops (and the
    float64 blur above) with the parameters the view drew."""
    theirs = {
        adjust_brightness_: TF.adjust_brightness,
        adjust_contrast_: TF.adjust_contrast,
        adjust_saturation_: TF.adjust_saturation,
        adjust_hue_: TF.adjust_hue,
    }
    out = []
    for i, img in enumerate(v):
        if draws.jitter[i]:
            for op, factor in zip(draws.jitter_ops, draws.factors[i].tolist(), strict=True):
                img = theirs[op](img, factor)
        if draws.gray[i]:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if draws.sigma is not None and draws.sigma[i] > 0:
            img = reference_blur(img, float(draws.sigma[i]), radius).float()
        out.append(TF.normalize(img, cfg.mean, cfg.std))
    return torch.stack(out)


@pytest.mark.parametrize("chunk_images", [1, 3, 1000])  # one image; mixed picks in a chunk; the whole batch
@pytest.mark.parametrize("channels_last", [False, True])
def test_view_jitters_grays_and_blurs_just_the_picked_images_as_torchvision_does(
    monkeypatch, chunk_images, channels_last
):
    """Only the images whose coins came up are computed now (before, every image was jittered and the
    unpicked results thrown away): each output image must still be torchvision's, with its own draws."""
    size, n = 16, 16
    monkeypatch.setattr(augment_module, "_CPU_CHUNK_ELEMENTS", chunk_images * 3 * size * size)
    cfg = load_recipe("mocov2_resnet50", {"augment.image_size": size}).augment
    aug = TwoViewAugment(cfg, channels_last=channels_last)
    v = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(13))
    for seed in (0, 2, 3, 4, 5):  # four different orders of the jitter ops
        draws = aug._draw(n, torch.Generator().manual_seed(seed), torch.device("cpu"))
        picked = [draws.jitter, draws.gray, draws.sigma > 0]
        assert all(0 < int(p.sum()) < n for p in picked)  # some images picked and some not, for every op
        want = torchvision_stage(v, draws, cfg, blur_radius(draws.sigma, size))
        got = aug._colour_blur_normalise(v.clone(), draws)
        assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
        std = torch.tensor(cfg.std).view(1, 3, 1, 1)
        assert torch.allclose(got * std, want * std, atol=2e-5)  # in [0, 1] units


def test_channels_last_views_hold_the_same_values():
    cfg = load_recipe("mocov2_resnet50", {"augment.image_size": 24}).augment
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(14))
    last = TwoViewAugment(cfg, channels_last=True)(x, torch.Generator().manual_seed(15))
    first = TwoViewAugment(cfg)(x, torch.Generator().manual_seed(15))
    for a, b in zip(last, first, strict=True):
        assert a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous()
        assert torch.equal(a, b)


def test_view_leaves_torch_threads_as_it_found_them():
    """The CPU stage runs on one torch thread; the caller's setting must come back."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        only(**{"augment.jitter": [0.4, 0.4, 0.4, 0.1], "augment.jitter_p": 1.0}).view(
            torch.rand(3, 3, 8, 8), torch.Generator().manual_seed(16)
        )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
