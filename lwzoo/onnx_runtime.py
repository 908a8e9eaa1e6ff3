"""onnxruntime sessions on lwzoo's ONNX graphs (input ``images``, output ``features``), for export's checks,
``lwzoo.load(backend="onnx")`` and embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, images: torch.Tensor, batch: int | None = None) -> np.ndarray:
    """Features of float images (N, 3, H, W) from an onnxruntime session, in batches (1 for fixed-batch graphs)."""
    x = images.float().contiguous().numpy()
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else (batch or len(x))
    return np.concatenate([session.run(["features"], {"images": x[i : i + step]})[0] for i in range(0, len(x), step)])
