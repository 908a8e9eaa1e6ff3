"""onnxruntime sessions on lwzoo's ONNX graphs (input ``images``, output ``features``), for export's checks,
``lwzoo.load(backend="onnx")`` and embedding."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

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


def time_sessions(
    sessions: dict[str, Any], images: torch.Tensor, seconds: float = 3.0, max_rounds: int = 15
) -> tuple[dict[str, float], int]:
    """Median seconds per pass of ``images`` (N, 3, H, W) through each session, and the number of rounds.

    The sessions take turns, one pass each per round, so a machine's changing load falls on all of them alike;
    rounds stop after ``max_rounds`` or once ``seconds`` have passed (never before 3 rounds), after one warm-up
    pass each."""
    for session in sessions.values():
        run_onnx(session, images)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    start = time.perf_counter()
    for rounds in range(1, max_rounds + 1):
        for name, session in sessions.items():
            t0 = time.perf_counter()
            run_onnx(session, images)
            times[name].append(time.perf_counter() - t0)
        if rounds >= 3 and time.perf_counter() - start > seconds:
            break
    return {name: statistics.median(t) for name, t in times.items()}, rounds
