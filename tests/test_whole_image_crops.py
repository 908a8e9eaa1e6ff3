"""Training crops are drawn in each original image's frame, from the whole image, as torchvision's
RandomResizedCrop draws them on the original photo (not on its centre square)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from lwzoo.augment import TwoViewAugment, crop_boxes
from lwzoo.data import load_images
from lwzoo.recipe import load_recipe

SCALE, RATIO = (0.2, 1.0), (3 / 4, 4 / 3)  # MoCo v2's
N = 20_000


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic, max |F_a(x) - F_b(x)| over the pooled sample. Values are rounded
    to 1e-6 first, so that an atom (the fallback box) is one point in both samples, float32 or float64."""
    a, b = np.sort(np.round(a, 6)), np.sort(np.round(b, 6))
    grid = np.concatenate([a, b])
    return float(
        np.abs(np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right") / len(b)).max()
    )


def ks_critical(n: int, m: int, alpha_coefficient: float = 1.949) -> float:
    """The statistic's critical value at alpha = 0.001 (c(alpha) = sqrt(-ln(alpha / 2) / 2) = 1.949)."""
    return alpha_coefficient * np.sqrt((n + m) / (n * m))


def torchvision_boxes(width: int, height: int, n: int) -> np.ndarray:
    """(n, 4) boxes (left, top, w, h) in pixels from torchvision's own sampler on a width x height image."""
    torch.manual_seed(0)
    image = Image.new("L", (width, height))
    return np.array(
        [[j, i, w, h] for i, j, h, w in (RandomResizedCrop.get_params(image, SCALE, RATIO) for _ in range(n))]
    )


def lwzoo_boxes(aspect: float, n: int) -> np.ndarray:
    """(n, 4) boxes (left, top, w, h) as fractions of the original's width and height."""
    g = torch.Generator().manual_seed(0)
    cx, cy, w, h = crop_boxes(n, SCALE, RATIO, g, torch.device("cpu"), torch.full((n,), aspect)).double().unbind(1)
    return torch.stack([cx - w / 2, cy - h / 2, w, h], 1).numpy()


@pytest.mark.parametrize("width,height", [(4000, 3000), (3000, 4000), (9000, 3000), (2400, 2400)])
def test_crop_statistics_match_torchvision_on_the_original_frame(width, height):
    """Area and aspect of the crop relative to the original (non-square) image, and where it sits, have the
    distributions torchvision's RandomResizedCrop gives (two-sample KS test at alpha 0.001). The 3:1 panorama
    mostly takes the fallback box, sized so that torchvision's whole-pixel rounding of it is exact."""
    tv = torchvision_boxes(width, height, N)
    ours = lwzoo_boxes(width / height, N)
    stats = {
        "area": (tv[:, 2] * tv[:, 3] / (width * height), ours[:, 2] * ours[:, 3]),
        "aspect": (tv[:, 2] / tv[:, 3], ours[:, 2] * width / (ours[:, 3] * height)),
        "centre x": ((tv[:, 0] + tv[:, 2] / 2) / width, ours[:, 0] + ours[:, 2] / 2),
        "centre y": ((tv[:, 1] + tv[:, 3] / 2) / height, ours[:, 1] + ours[:, 3] / 2),
    }
    for name, (theirs, mine) in stats.items():
        assert ks_statistic(theirs, mine) < ks_critical(N, N), name
    assert (ours[:, :2] >= -1e-6).all() and (ours[:, :2] + ours[:, 2:] <= 1 + 1e-6).all()  # inside the image


def test_the_outer_eighths_of_a_4_3_photo_appear_as_often_as_with_torchvision():
    """A centre square cuts away the outer eighth on each side of a 4:3 photo; whole-image crops reach it at
    torchvision's rate (binomial sd here ~0.35 points)."""
    width, height = 4000, 3000
    tv = torchvision_boxes(width, height, N)
    ours = lwzoo_boxes(width / height, N)
    tv_left, tv_right = tv[:, 0] < width / 8, tv[:, 0] + tv[:, 2] > 7 * width / 8
    our_left, our_right = ours[:, 0] < 1 / 8, ours[:, 0] + ours[:, 2] > 7 / 8
    for theirs, mine in ((tv_left, our_left), (tv_right, our_right), (tv_left | tv_right, our_left | our_right)):
        assert abs(theirs.mean() - mine.mean()) < 0.015 and mine.mean() > 0.2


def _photo(path, width=64, height=48):
    """A 4:3 photo: red outer eighths left and right, green in between."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :, 1] = 255
    pixels[:, : width // 8] = (255, 0, 0)
    pixels[:, -width // 8 :] = (255, 0, 0)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("in_memory_gb", [4.0, 0.0], ids=["in-memory", "streamed"])
def test_training_views_reach_the_sides_of_the_photo_in_both_data_paths(tmp_path, in_memory_gb):
    for i in range(8):
        _photo(tmp_path / f"{i}.png")
    images = load_images(tmp_path, 32, in_memory_gb=in_memory_gb, workers=0, whole=True, use_cache=False)
    assert images.whole and "whole images squashed to 32px" in images.describe()
    (batch, aspects), *_ = list(images.batches(8, epoch=0, seed=0))
    assert batch.shape == (8, 3, 32, 32) and torch.allclose(aspects, torch.full((8,), 4 / 3))
    assert (batch[:, 0, :, 0] > 200).all() and (batch[:, 1, :, 0] < 50).all()  # the left edge is stored, red
    cfg = load_recipe(
        "mocov2_resnet50", {"augment.image_size": 16, "augment.jitter_p": 0.0, "augment.grayscale_p": 0.0}
    ).augment
    augment = TwoViewAugment(cfg)
    reds = []
    for step in range(40):
        view, _ = augment(batch, torch.Generator().manual_seed(step), aspects)
        red = (view * augment.std + augment.mean)[:, 0] > 0.8  # N x 16 x 16: reddish pixels
        reds.append(red.flatten(1).any(1).float())
    reached = torch.cat(reds).mean().item()
    centre_square = load_images(tmp_path, 32, workers=0, use_cache=False)  # the evaluation layout
    assert not centre_square.whole and (centre_square.images[:, 0, :, 0] < 50).all()  # no red: the sides are cut
    assert reached > 0.3  # most views of the whole photo include some of its red sides


def test_evaluation_keeps_the_papers_centre_crop(tmp_path):
    _photo(tmp_path / "a.png")
    (x, _), *_ = list(load_images(tmp_path, 48, workers=0, use_cache=False).batches(1, 0, 0))
    assert x.shape == (1, 3, 48, 48) and (x[0, 1] == 255).all()  # the centre square: all green
