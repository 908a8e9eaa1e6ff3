"""Evaluation preprocessing (lwzoo/preprocess.py): the decode, the centre crop and the normalisation."""

import numpy as np
import pytest
import torch
from PIL import Image

from lwzoo.preprocess import Preprocess, eval_square, to_rgb
from lwzoo.recipe import load_recipe

IMAGENET = Preprocess(6, 0.75, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_the_transform_matches_a_float64_reference():
    """uint8 (N, 3, 8, 8) at decode size 8 -> the centre 6 x 6, / 255, minus mean, over std, channels-last."""
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8))
    assert IMAGENET.decode_size == 8  # round(6 / 0.75)
    got = IMAGENET(images)
    mean = np.array(IMAGENET.mean)[None, :, None, None]
    std = np.array(IMAGENET.std)[None, :, None, None]
    want = (images.numpy()[:, :, 1:7, 1:7].astype(np.float64) / 255 - mean) / std
    assert got.shape == (2, 3, 6, 6) and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_from_recipe_and_timm_cfg_carry_the_recipes_numbers():
    recipe = load_recipe("mobilenetv3_large")
    p = Preprocess.from_recipe(recipe)
    a = recipe.augment
    assert (p.image_size, p.crop_pct, p.mean, p.std) == (a.image_size, a.eval_crop_pct, a.mean, a.std)
    assert p.timm_cfg() == {
        "input_size": (3, a.image_size, a.image_size),
        "interpolation": "bicubic",
        "crop_pct": a.eval_crop_pct,
        "crop_mode": "center",
        "mean": a.mean,
        "std": a.std,
    }


def test_the_cache_key_changes_with_every_field_and_only_with_them():
    assert IMAGENET.key() == Preprocess(6, 0.75, IMAGENET.mean, IMAGENET.std).key()
    variants = [
        Preprocess(7, 0.75, IMAGENET.mean, IMAGENET.std),
        Preprocess(6, 0.875, IMAGENET.mean, IMAGENET.std),
        Preprocess(6, 0.75, (0.5, 0.5, 0.5), IMAGENET.std),
        Preprocess(6, 0.75, IMAGENET.mean, (0.5, 0.5, 0.5)),
        Preprocess(6, 0.75, IMAGENET.mean, IMAGENET.std, "bilinear"),
    ]
    assert len({IMAGENET.key(), *(v.key() for v in variants)}) == 1 + len(variants)


def test_eval_square_takes_the_centred_square_of_a_wide_image():
    """A 2:1 image whose height already is the size: the middle columns, pixel for pixel (no resampling)."""
    pixels = np.random.default_rng(1).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    square = eval_square(Image.fromarray(pixels), 8)
    assert square.dtype == torch.uint8 and square.shape == (3, 8, 8)
    assert torch.equal(square, torch.from_numpy(pixels[:, 4:12]).permute(2, 0, 1))


def test_alpha_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red; transparent on the left half, opaque on the right
    rgba[:, 2:, 3] = 255
    rgb = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA")))
    assert (rgb[:, :2] == 255).all() and (rgb[:, 2:] == [255, 0, 0]).all()


@pytest.mark.parametrize("orientation,expected", [(1, [[0, 255]]), (6, [[0], [255]])])
def test_exif_orientation_is_applied(tmp_path, orientation, expected):
    """EXIF orientation 6 (turn 90 degrees clockwise to view) makes a 1 x 2 row a 2 x 1 column."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.array([[0, 255]], np.uint8), mode="L").save(tmp_path / "photo.png", exif=exif)
    with Image.open(tmp_path / "photo.png") as img:
        assert np.asarray(to_rgb(img))[..., 0].tolist() == expected


def test_float_and_32_bit_greyscale_keep_their_brightness(tmp_path):
    mid = to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32)))
    assert np.asarray(mid).mean() == 128
    deep = to_rgb(Image.fromarray(np.full((4, 4), 128 * 257, np.int32)))
    assert np.asarray(deep).mean() == 128
    eight_bit_in_int32 = to_rgb(Image.fromarray(np.full((4, 4), 77, np.int32)))
    assert np.asarray(eight_bit_in_int32).mean() == 77
