import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lwzoo
from lwzoo.data import scan_folder
from lwzoo.errors import LwzooError

from .conftest import run_cli
from .test_cli import assert_clean_error

KEYS = {"features", "paths", "skipped_paths", "skipped_reasons", "meta"}


def write_folder(root: Path, decode_size: int) -> Path:
    """Images of several shapes and modes at three depths, one at exactly ``decode_size`` (no resize),
    a corrupt JPEG and a text file."""
    rng = np.random.default_rng(0)
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(root / "wide.jpg")
    Image.fromarray(rng.integers(0, 255, (90, 50, 3), dtype=np.uint8)).save(root / "sub" / "tall.png")
    exact = rng.integers(0, 255, (decode_size, decode_size, 3), dtype=np.uint8)
    Image.fromarray(exact).save(root / "sub" / "exact.png")
    Image.fromarray(rng.integers(0, 255, (33, 45), dtype=np.uint8), mode="L").save(root / "sub" / "deeper" / "grey.png")
    rgba = rng.integers(0, 255, (50, 50, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(root / "sub" / "alpha.png")
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def readable(root: Path) -> list[str]:
    paths, _, _ = scan_folder(root)
    return [p.relative_to(root).as_posix() for p in paths if p.name != "broken.jpg"]


def expected_features(export: Path, root: Path, backend: str) -> torch.Tensor:
    """What ``lwzoo.load`` gives for the readable images, one image at a time."""
    fx = lwzoo.load(export, backend=backend, device="cpu")
    rows = []
    for rel in readable(root):
        with Image.open(root / rel) as img:
            rows.append(fx(img))
    return torch.cat(rows)  # N x D


def test_features_match_load_and_read_back_with_plain_numpy(evaluated_export, tmp_path):
    fx = lwzoo.load(evaluated_export, backend="torch", device="cpu")
    root = write_folder(tmp_path / "images", fx.config.decode_size)
    out = tmp_path / "feats.npz"
    with pytest.warns(UserWarning) as warned:
        result = lwzoo.embed(evaluated_export, root, out, backend="torch", device="cpu", batch_size=2, workers=2)
    messages = [str(w.message) for w in warned]
    assert messages[0].startswith("skipped unreadable image sub/broken.jpg: ") and len(messages) == 2
    assert messages[1].startswith("1 of 6 images could not be read and were skipped")

    with np.load(out) as f:  # allow_pickle=False, numpy's default: nothing in the file is an object
        assert set(f.files) == KEYS
        features, paths, meta = f["features"], f["paths"], json.loads(f["meta"].item())
        skipped_paths, skipped_reasons = f["skipped_paths"], f["skipped_reasons"]
    assert paths.dtype.kind == "U" and skipped_paths.dtype.kind == "U" and skipped_reasons.dtype.kind == "U"
    assert paths.tolist() == readable(root) == result.paths  # relative, in scan order, the broken one left out
    assert skipped_paths.tolist() == ["sub/broken.jpg"] and "Error: " in skipped_reasons[0]
    assert features.dtype == np.float32 and features.shape == (5, fx.feature_dim)
    torch.testing.assert_close(
        torch.from_numpy(features), expected_features(evaluated_export, root, "torch"), atol=1e-5, rtol=0
    )
    assert meta["arch"] == fx.arch.name and meta["backend"] == "torch" and meta["source"] == str(evaluated_export)
    assert meta["preprocessing"]["image_size"] == 32 and meta["preprocessing"]["decode_size"] == fx.config.decode_size
    assert meta["lwzoo_version"] == lwzoo.__version__ and meta["images"] == 5 and meta["skipped"] == 1
    assert meta["date"].endswith("+00:00")


def test_an_image_at_decode_size_matches_an_independent_float64_normalisation(evaluated_export, tmp_path):
    """At exactly decode_size there is no resize, so the encoder's input can be made by hand: centre crop,
    /255, (x - mean) / std in float64."""
    fx = lwzoo.load(evaluated_export, backend="torch", device="cpu")
    p, d = fx.config, fx.config.decode_size
    root = tmp_path / "images"
    root.mkdir()
    pixels = np.random.default_rng(1).integers(0, 255, (d, d, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "exact.png")
    out = lwzoo.embed(evaluated_export, root, tmp_path / "f.npz", backend="torch", device="cpu", workers=0).out
    off = (d - p.image_size) // 2
    crop = pixels[off : off + p.image_size, off : off + p.image_size].astype(np.float64) / 255
    x = (crop - np.array(p.mean)) / np.array(p.std)  # S x S x 3
    batch = torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))
    np.testing.assert_allclose(np.load(out)["features"], fx(batch).numpy(), atol=1e-5, rtol=0)


def test_cli_uses_onnx_by_default_and_matches_load(evaluated_export, tmp_path):
    root = write_folder(tmp_path / "images", lwzoo.load(evaluated_export).config.decode_size)
    out = tmp_path / "deep" / "er" / "feats.npz"  # missing parents are created
    proc = run_cli("embed", str(evaluated_export), str(root), "--out", str(out), "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "lwzoo: warning: skipped unreadable image sub/broken.jpg" in proc.stderr
    assert "lwzoo: warning: 1 of 6 images could not be read" in proc.stderr
    assert "embedding: 6/6 img (100%)" in proc.stderr  # progress, as plain lines away from a terminal
    with np.load(out) as f:
        assert f["paths"].tolist() == readable(root)
        assert json.loads(f["meta"].item())["backend"] == "onnx"
        np.testing.assert_allclose(
            f["features"], expected_features(evaluated_export, root, "onnx").numpy(), atol=1e-4, rtol=0
        )


def test_an_existing_file_is_replaced_only_with_force_and_a_failed_run_keeps_it(evaluated_export, tmp_path):
    good = write_folder(tmp_path / "good", 37)
    bad = tmp_path / "bad"
    (bad / "x").mkdir(parents=True)
    (bad / "a.png").write_bytes(b"not a png")
    (bad / "x" / "b.jpg").write_bytes(b"")
    out = tmp_path / "out" / "feats.npz"
    out.parent.mkdir()
    out.write_bytes(b"an earlier result")
    model = str(evaluated_export)

    proc = run_cli("embed", model, str(good), "--out", str(out))
    assert_clean_error(proc, "already exists", "--force")
    proc = run_cli("embed", model, str(bad), "--out", str(out), "--force", "--quiet")
    assert_clean_error(proc, "none of the 2 images", "could be read", "a.png")
    assert out.read_bytes() == b"an earlier result"
    assert [p.name for p in out.parent.iterdir()] == ["feats.npz"]  # no temporary file left behind

    proc = run_cli("embed", model, str(good), "--out", str(out), "--force", "--backend", "torch", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert np.load(out)["features"].shape == (5, 1280)
    assert [p.name for p in out.parent.iterdir()] == ["feats.npz"]


def test_an_interrupted_write_leaves_the_earlier_file(evaluated_export, tmp_path, monkeypatch):
    root = write_folder(tmp_path / "images", 37)
    out = tmp_path / "feats.npz"
    out.write_bytes(b"an earlier result")

    def interrupted_savez(file, **arrays):
        file.write(b"PK half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        lwzoo.embed(evaluated_export, root, out, backend="torch", device="cpu", workers=0, force=True)
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.npz", "images"]


@pytest.mark.parametrize("case", ["not_npz", "under_a_file", "uncreatable_parent", "no_images"])
def test_bad_output_places_are_one_clean_line(evaluated_export, tmp_path, case):
    images = write_folder(tmp_path / "images", 37)
    (tmp_path / "file.txt").write_text("a regular file")
    folder, out = (
        str(images),
        {
            "not_npz": str(tmp_path / "features.csv"),
            "under_a_file": str(tmp_path / "file.txt" / "f.npz"),
            "uncreatable_parent": "/proc/lwzoo-embed-test/f.npz",  # no folder can be made in /proc, even by root
            "no_images": str(tmp_path / "f.npz"),
        }[case],
    )
    if case == "uncreatable_parent" and not Path("/proc/self").is_dir():
        pytest.skip("needs a /proc file system")
    if case == "no_images":
        folder = str(tmp_path / "empty")
        Path(folder).mkdir()
        (Path(folder) / "notes.txt").write_text("no images here")
    expected = {
        "not_npz": "--out must name a .npz file",
        "under_a_file": "file.txt' is a file, not a folder",
        "uncreatable_parent": "cannot write the features file under '/proc'",
        "no_images": "no images found under",
    }[case]
    assert_clean_error(run_cli("embed", str(evaluated_export), folder, "--out", out, "--quiet"), expected)
    assert not (tmp_path / "f.npz").exists()


def test_bad_arguments_are_lwzoo_errors(evaluated_export, tmp_path):
    images = write_folder(tmp_path / "images", 37)
    out = tmp_path / "f.npz"
    cases = [
        ({"folder": tmp_path / "missing"}, "missing' does not exist"),
        ({"folder": images / "sub" / "tall.png"}, "is a file; lwzoo embed takes a folder"),
        ({"model": tmp_path}, "not an export folder"),
        ({"device": "cuda"}, "--device cuda needs --backend torch"),
        ({"backend": "tensorflow"}, "--backend must be onnx or torch"),
        ({"backend": "torch", "device": "tpu"}, "unknown device 'tpu'"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
    ]
    for change, message in cases:
        args = {"model": evaluated_export, "folder": images, "out": out, **change}
        with pytest.raises(LwzooError, match=message):
            lwzoo.embed(**args)
    assert not out.exists()


def test_pandas_reads_the_file_in_one_line(evaluated_export, tmp_path):
    pd = pytest.importorskip("pandas")
    root = write_folder(tmp_path / "images", 37)
    with pytest.warns(UserWarning):
        lwzoo.embed(evaluated_export, root, tmp_path / "f.npz", backend="torch", device="cpu", workers=0)
    f = np.load(tmp_path / "f.npz")
    df = pd.DataFrame(f["features"], index=f["paths"])
    assert df.shape == (5, 1280) and list(df.index) == readable(root)
