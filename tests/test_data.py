import numpy as np
import pytest
import torch
from PIL import Image

from lwzoo.builtin_data import CLASSES
from lwzoo.data import builtin_images, decode_image, epoch_order, load_images, scan_folder
from lwzoo.errors import LwzooError


def write_mixed_folder(root, corrupt: bool = True):
    """Two classes with RGB JPEG, greyscale, palette and RGBA PNGs, and (optionally) a corrupt file."""
    rng = np.random.default_rng(0)
    (root / "cats" / "nested").mkdir(parents=True)
    (root / "dogs").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / "cats" / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), mode="L").save(
        root / "cats" / "nested" / "grey.png"
    )
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).convert("P").save(root / "dogs" / "palette.png")
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, half transparent on the left
    rgba[:, 10:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(root / "dogs" / "alpha.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    if corrupt:
        (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return root


def test_scan_keeps_class_folders_as_labels(tmp_path):
    paths, labels, classes = scan_folder(write_mixed_folder(tmp_path))
    assert classes == ["cats", "dogs"]
    names = [p.name for p in paths]
    assert "notes.txt" not in names and "grey.png" in names  # recursive, images only
    assert (
        dict(zip(names, labels, strict=True))["grey.png"] == 0
        and dict(zip(names, labels, strict=True))["alpha.png"] == 1
    )


def test_flat_folder_has_no_labels(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    _, labels, classes = scan_folder(tmp_path)
    assert labels is None and classes == []


def test_decode_converts_every_mode_to_rgb(tmp_path):
    root = write_mixed_folder(tmp_path, corrupt=False)
    for path in root.rglob("*.*g"):
        x = decode_image(path, 16)
        assert x.shape == (3, 16, 16) and x.dtype == torch.uint8, path
    grey = decode_image(root / "cats" / "nested" / "grey.png", 20)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    alpha = decode_image(root / "dogs" / "alpha.png", 20)
    assert alpha[:, :, 15].tolist() == [[255] * 20, [0] * 20, [0] * 20]  # opaque red
    assert alpha[:, :, 2].tolist() == [[255] * 20] * 3  # transparent: the white background


def test_unreadable_images_are_skipped_with_a_warning_and_counted(tmp_path):
    root = write_mixed_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.jpg"):
        images = load_images(root, 16, workers=0, use_cache=False)
    assert len(images) == 4 and len(images.skipped) == 1
    assert images.labels.tolist() == [0, 0, 1, 1]


def test_decoded_folders_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LWZOO_CACHE", str(tmp_path / "cache"))
    root = write_mixed_folder(tmp_path / "data", corrupt=False)
    first = load_images(root, 16, workers=0)
    assert list((tmp_path / "cache" / "decoded").glob("*.pt"))
    second = load_images(root, 16, workers=0)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def test_large_folders_stream_through_workers(tmp_path):
    root = write_mixed_folder(tmp_path)
    images = load_images(root, 16, in_memory_gb=0.0, workers=0)
    assert images.images is None and len(images) == 5
    with pytest.warns(UserWarning, match="broken.jpg"):
        batches = list(images.batches(batch_size=5, epoch=0, seed=0))
    (batch, aspects), *rest = batches
    assert not rest and batch.shape == (4, 3, 16, 16) and aspects.shape == (4,)  # the unreadable one left out


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(LwzooError, match="does not exist"):
        load_images(tmp_path / "nope", 16)
    with pytest.raises(LwzooError, match="no images found"):
        load_images(tmp_path, 16)
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(LwzooError, match="is a file"):
        load_images(tmp_path / "file.jpg", 16)


def test_builtin_data_is_deterministic_coloured_and_labelled():
    a, b = builtin_images("train", 32), builtin_images("train", 32)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.classes == CLASSES and a.labels.bincount().min() > 0
    assert (a.images[:, 0].float() - a.images[:, 1].float()).abs().mean() > 10  # colour, not grey
    val = builtin_images("val", 32)
    assert not torch.equal(val.images[:8], a.images[:8])
    with pytest.raises(LwzooError, match="splits"):
        builtin_images("test", 32)


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert torch.equal(epoch_order(100, 1, 2), epoch_order(100, 1, 2))
    assert not torch.equal(epoch_order(100, 1, 2), epoch_order(100, 1, 3))
    assert not torch.equal(epoch_order(100, 1, 2), epoch_order(100, 2, 2))
    assert sorted(epoch_order(100, 0, 0).tolist()) == list(range(100))


def test_batches_resume_mid_epoch():
    data = builtin_images("val", 8)
    full = list(data.batches(100, epoch=3, seed=7))
    tail = list(data.batches(100, epoch=3, seed=7, start=4))
    assert len(full) == len(data) // 100
    assert all(torch.equal(a, b) and torch.equal(p, q) for (a, p), (b, q) in zip(full[4:], tail, strict=True))
    assert all(torch.equal(aspects, torch.ones(100)) for _, aspects in full)  # the built-in renders are square


def _png16(path, pixels: np.ndarray) -> None:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB): signature, IHDR, one IDAT, IEND."""
    import struct
    import zlib

    h, w = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("shape", [(12, 16), (12, 16, 3)], ids=["grey", "rgb"])
def test_16_bit_pngs_decode_to_their_8_bit_values(tmp_path, shape):
    """A 16-bit PNG of value v * 257 is 8-bit value v; PIL's own conversion had made grey 128 almost white."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, shape)
    _png16(tmp_path / "deep.png", values * 257)
    decoded = decode_image(tmp_path / "deep.png", 12)  # the centre 12 x 12 square: no resampling
    expected = values[:, 2:14] if len(shape) == 3 else np.repeat(values[:, 2:14, None], 3, axis=2)
    assert torch.equal(decoded, torch.from_numpy(expected.astype(np.uint8)).permute(2, 0, 1))
