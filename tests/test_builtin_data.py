"""The built-in demo set's textures (lwzoo/builtin_data.py): a pure function of its arguments, nothing downloaded.
(The split loader, ``lwzoo.data.builtin_images``, is tested in test_data.py.)"""

import colorsys

import numpy as np
import torch

from lwzoo.builtin_data import CLASSES, SPLITS, _hsv, render_textures


def test_hsv_matches_colorsys_in_float64():
    """The vectorised HSV -> RGB against the standard library's, on a grid that crosses every hue sector."""
    h, s, v = (
        t.flatten() for t in torch.meshgrid(*(torch.linspace(0, 1, 13, dtype=torch.float64),) * 3, indexing="ij")
    )
    want = np.array([colorsys.hsv_to_rgb(*hsv) for hsv in zip(h.tolist(), s.tolist(), v.tolist(), strict=True)])
    np.testing.assert_allclose(_hsv(h, s, v).numpy(), want, atol=1e-12)


def test_renders_are_a_pure_function_of_their_arguments():
    a, labels_a = render_textures(40, 12, seed=5)
    b, labels_b = render_textures(40, 12, seed=5)
    assert torch.equal(a, b) and torch.equal(labels_a, labels_b)
    c, labels_c = render_textures(40, 12, seed=6)
    assert not torch.equal(a, c) and not torch.equal(labels_a, labels_c)
    assert a.shape == (40, 3, 12, 12) and a.dtype == torch.uint8


def test_labels_are_balanced_over_the_ten_classes_and_independent_of_size():
    _, labels = render_textures(100, 8, seed=0)
    assert labels.bincount(minlength=len(CLASSES)).tolist() == [10] * 10
    assert torch.equal(render_textures(100, 24, seed=0)[1], labels)  # the same images at any resolution


def test_splits_are_disjoint_renders_of_ten_named_classes():
    assert len(set(CLASSES)) == len(CLASSES) == 10
    (n_train, seed_train), (n_val, seed_val) = SPLITS["train"], SPLITS["val"]
    assert (n_train, n_val) == (2048, 1024) and seed_train != seed_val
