import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import lwzoo
from lwzoo.encoders import load_encoder
from lwzoo.errors import LwzooError

from .hub_server import FakeHub

REPO = "lwzoo-test/mnv3-load"


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8) for i in range(3)]


def test_load_from_a_local_folder_gives_the_exported_backbone(evaluated_export, images):
    fx = lwzoo.load(evaluated_export)
    batch = fx.preprocess(images)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32
    features = fx(batch)
    assert features.shape == (3, 1280) and fx.feature_dim == 1280
    encoder = load_encoder(evaluated_export)
    with torch.no_grad():
        assert torch.allclose(features, encoder.backbone(batch), atol=1e-5)
    assert torch.equal(fx(images), features)  # raw images are preprocessed on the way in


def test_torch_and_onnx_backends_agree(evaluated_export, images):
    a, b = lwzoo.load(evaluated_export), lwzoo.load(evaluated_export, backend="onnx")
    assert b.backend == "onnx"
    batch = a.preprocess(images)
    np.testing.assert_allclose(a(batch).numpy(), b(batch).numpy(), atol=1e-4, rtol=1e-4)


def test_preprocess_accepts_pil_arrays_and_tensors(evaluated_export, images):
    fx = lwzoo.load(evaluated_export)
    img = images[0]
    reference = fx.preprocess(Image.fromarray(img))
    variants = [
        img,
        [img],
        img[None],  # N x H x W x C
        img.astype(np.float32) / 255,
        torch.from_numpy(img).permute(2, 0, 1),  # C x H x W uint8
        torch.from_numpy(img).permute(2, 0, 1)[None],
    ]
    for v in variants:
        assert torch.allclose(fx.preprocess(v), reference, atol=1e-6), type(v)
    grey = fx.preprocess(Image.fromarray(img[..., 0]))
    assert grey.shape == (1, 3, 32, 32)
    with pytest.raises(LwzooError, match="cannot read an image"):
        fx.preprocess("not an image")


def test_load_never_unpickles(evaluated_export, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(target, name, refuse)
    assert lwzoo.load(evaluated_export)(torch.zeros(1, 3, 32, 32)).shape == (1, 1280)


def test_tampered_or_missing_files_are_clear_errors(evaluated_export, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(evaluated_export, folder)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last weight
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(LwzooError, match="does not match the sha256"):
        lwzoo.load(folder)
    (folder / "model.onnx").unlink()
    with pytest.raises(LwzooError, match="has no model.onnx"):
        lwzoo.load(folder, backend="onnx")
    with pytest.raises(LwzooError, match="not an export folder"):
        lwzoo.load(tmp_path)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(LwzooError, match="Did you mean 'effnet_b0-smoothed'"):
        lwzoo.load("effnet_b0-smoothd")
    assert {"mobilenetv3_large-smoothed", "effnet_b0-smoothed"} <= {m.name for m in lwzoo.list_models()}


def publish_to(
    hub: FakeHub, export_dir, repo_id: str, files=("config.json", "model.safetensors", "model.onnx")
) -> None:
    dest = hub.repo_dir(repo_id)
    dest.mkdir(parents=True)
    for name in files:
        shutil.copyfile(export_dir / name, dest / name)


def test_load_from_the_hub_then_offline_from_the_cache_and_in_timm(evaluated_export, tmp_path, monkeypatch, images):
    """huggingface_hub's real client fills a cache from a loopback Hub; then, offline, lwzoo and timm
    (in a fresh process with HF_HUB_OFFLINE=1 and the Hub gone) load from that cache alone."""
    cache = tmp_path / "hf-cache"
    with FakeHub(tmp_path / "hub") as hub:
        publish_to(hub, evaluated_export, REPO)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        online = lwzoo.load(REPO)
        lwzoo.load(REPO, backend="onnx")
        assert ("GET", f"/{REPO}/resolve/main/model.safetensors") in hub.requests
    batch = online.preprocess(images)
    expected = online(batch)
    assert list(cache.glob("models--lwzoo-test--mnv3-load/snapshots/*/model.safetensors"))

    np.save(tmp_path / "batch.npy", batch.numpy())
    script = textwrap.dedent(f"""
        import numpy as np, torch, timm, lwzoo
        batch = torch.from_numpy(np.load({str(tmp_path / "batch.npy")!r}))
        a = lwzoo.load({REPO!r})(batch)
        b = lwzoo.load({REPO!r}, backend="onnx")(batch)
        model = timm.create_model("hf-hub:{REPO}", pretrained=True, num_classes=0).eval()
        with torch.no_grad():
            c = model(batch)
        assert tuple(model.pretrained_cfg["input_size"]) == (3, 32, 32), model.pretrained_cfg
        np.save({str(tmp_path / "offline.npy")!r}, np.stack([a.numpy(), b.numpy(), c.numpy()]))
    """)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": "http://127.0.0.1:9", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    a, b, c = np.load(tmp_path / "offline.npy")
    np.testing.assert_allclose(a, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(c, a, atol=1e-5)


def test_hub_errors(evaluated_export, tmp_path, monkeypatch):
    with FakeHub(tmp_path / "hub") as hub:
        publish_to(hub, evaluated_export, REPO, files=("config.json", "model.safetensors"))
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        with pytest.raises(LwzooError, match="has no model.onnx"):
            lwzoo.load(REPO, backend="onnx")
        with pytest.raises(LwzooError, match="no model repository 'lwzoo-test/absent'"):
            lwzoo.load("lwzoo-test/absent")
        (hub.repo_dir(REPO) / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        with pytest.raises(LwzooError, match="does not match the sha256"):
            lwzoo.load(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LwzooError, match="HF_HUB_OFFLINE is set"):
        lwzoo.load("lwzoo-test/never-downloaded")
