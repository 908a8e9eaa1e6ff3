"""``lwzoo.load()``: a ready feature extractor from a zoo name, a Hub repository or an export folder.

Weights are read from safetensors (torch) or ONNX (onnxruntime) only; nothing is unpickled. Every
file is checked against the sha256 that ``config.json`` records, so a tampered or damaged download
is an error, not silent garbage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .archs import Arch
from .devices import resolve_device
from .errors import LwzooError
from .hub_client import download, validate_repo_id
from .hub_folder import CONFIG, ONNX, WEIGHTS, load_backbone, read_hub_config, verify_checksum
from .onnx_runtime import onnx_session
from .preprocess import Preprocess, eval_square
from .zoo import ZOO, get_entry, local_models, local_zoo_dir, unpublished_error


class FeatureExtractor:
    """A frozen encoder: ``fx.preprocess(images)`` makes a batch, ``fx(batch)`` gives (N, D) features.

    ``fx(images)`` also accepts raw images directly. Float tensors are taken to be batches that
    :meth:`preprocess` already made; PIL images, numpy arrays and uint8 tensors are preprocessed.

    Attributes:
        arch: the architecture.
        backend: ``"torch"`` or ``"onnx"``.
        config: the preprocessing (image size, crop, mean, std).
        source: where it was loaded from.
        feature_dim: D.
    """

    def __init__(
        self, arch: Arch, config: Preprocess, backend: str, model: Any, source: str, device: torch.device
    ) -> None:
        self.arch, self.config, self.backend, self.source, self.device = arch, config, backend, source, device
        self.feature_dim = arch.feature_dim
        self._model = model

    def __repr__(self) -> str:
        size = self.config.image_size
        return f"FeatureExtractor({self.arch.name}, backend={self.backend!r}, {size}px, source={self.source!r})"

    def preprocess(self, images: Any) -> torch.Tensor:
        """PIL images, HxWxC arrays (uint8, or float in [0, 1]) or CxHxW tensors, alone or as a list or
        batch -> a normalised float batch (N, 3, S, S): shorter side resized to S / crop_pct (bicubic),
        centre-cropped to S."""
        pil = [_to_pil(x) for x in _as_list(images)]
        if not pil:
            raise LwzooError("preprocess got no images")
        squares = torch.stack([eval_square(img, self.config.decode_size) for img in pil])  # N x 3 x D x D uint8
        return self.config(squares).contiguous()

    @torch.no_grad()
    def __call__(self, images: Any) -> torch.Tensor:
        is_batch = isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim == 4
        batch = images if is_batch else self.preprocess(images)
        size = self.config.image_size
        if self.backend == "onnx" and batch.shape[1:] != (3, size, size):
            raise LwzooError(f"the ONNX model takes (N, 3, {size}, {size}) batches, got {tuple(batch.shape)}")
        if self.backend == "onnx":
            out = self._model.run(["features"], {"images": batch.float().cpu().contiguous().numpy()})[0]
            return torch.from_numpy(out)
        return self._model(batch.to(self.device, memory_format=torch.channels_last)).float().cpu()


def _as_list(images: Any) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


def _to_pil(x: Any) -> Image.Image:
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, torch.Tensor):
        if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
            raise LwzooError(f"image tensors must be CxHxW with 1, 3 or 4 channels, got shape {tuple(x.shape)}")
        x = x.detach().cpu().permute(1, 2, 0).numpy()
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
            raise LwzooError(f"image arrays must be HxWxC with 1, 3 or 4 channels, got shape {x.shape}")
        if x.dtype != np.uint8:
            x = (np.clip(x.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
        x = x[..., 0] if x.shape[2] == 1 else x
        return Image.fromarray(x)
    raise LwzooError(f"cannot read an image from a {type(x).__name__}; pass PIL images, numpy arrays or tensors")


def _hub_files(repo_id: str, revision: str, filenames: tuple[str, ...]) -> Path:
    """Download (or find in the cache) files of a Hub repo; returns the snapshot folder."""

    return download(repo_id, revision, filenames)


def resolve(name_or_repo_or_path: str | Path) -> tuple[Path | None, str | None, str]:
    """(local folder, None, revision) or (None, repo id, revision) for a path, a local zoo name, a published
    zoo name or a Hub repo id (``org/name[@revision]``), tried in that order."""
    text = str(name_or_repo_or_path)
    path = Path(text).expanduser()
    if path.exists():
        folder = path.parent if path.is_file() else path
        if not (folder / CONFIG).is_file():
            raise LwzooError(f"'{folder}' is not an export folder (no {CONFIG}); run `lwzoo export` first")
        return folder, None, ""
    if text in local_models():
        return local_zoo_dir() / text, None, ""
    if text in ZOO:
        entry = ZOO[text]
        if not entry.published:  # no download or token can fetch weights that do not exist
            raise unpublished_error(entry)
        return None, entry.repo_id, entry.revision
    if "/" in text:
        repo, at, revision = text.partition("@")
        try:
            validate_repo_id(repo)
            if at and not revision:
                raise LwzooError("empty revision")
        except LwzooError:
            raise LwzooError(
                f"'{text}' is not a valid Hub repo id (ORG/NAME or ORG/NAME@REVISION), nor a local export folder; "
                "check the spelling or the path"
            ) from None
        return None, repo, revision or "main"
    get_entry(text)  # raises with close matches
    raise AssertionError


def load(
    name_or_repo_or_path: str | Path, backend: str = "torch", device: str | torch.device | None = None
) -> FeatureExtractor:
    """A feature extractor from a zoo name (``effnet_b0-smoothed``), a Hub repo id (``org/name``, or
    ``org/name@revision``) or a local export folder.

    Args:
        backend: ``"torch"`` (safetensors into timm) or ``"onnx"`` (onnxruntime on ``model.onnx``).
        device: for the torch backend; default CUDA when present, else the CPU.

    Hub files go through huggingface_hub's cache; with ``HF_HUB_OFFLINE=1`` only the cache is used.
    """
    if backend not in ("torch", "onnx"):
        raise LwzooError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    folder, repo_id, revision = resolve(name_or_repo_or_path)
    weights_name = WEIGHTS if backend == "torch" else ONNX
    if folder is None:
        folder = _hub_files(repo_id, revision, (CONFIG, weights_name))
    weights = folder / weights_name
    if not weights.is_file():
        raise LwzooError(f"'{folder}' has no {weights_name}" + ("; export with --onnx" if backend == "onnx" else ""))
    arch, preprocess, config = read_hub_config(folder)
    verify_checksum(weights, config)
    source = repo_id or str(folder)
    if backend == "onnx":
        try:
            session = onnx_session(weights)
        except Exception as e:  # onnxruntime raises its own types for unreadable graphs
            raise LwzooError(f"onnxruntime cannot load '{weights}': {str(e).splitlines()[0]}") from None
        return FeatureExtractor(arch, preprocess, "onnx", session, source, torch.device("cpu"))
    dev = resolve_device(device if device is not None else "auto")
    model = load_backbone(weights, arch).eval().to(dev, memory_format=torch.channels_last)
    model.requires_grad_(False)
    return FeatureExtractor(arch, preprocess, "torch", model, source, dev)
