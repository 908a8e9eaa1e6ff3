"""Which device a command runs on, from what the user typed."""

from __future__ import annotations

import torch

from .errors import LwzooError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LwzooError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LwzooError(f"--device {device} asked for CUDA, but this PyTorch sees no GPU; use --device cpu")
    return dev
