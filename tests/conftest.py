import os
import subprocess
import sys
from pathlib import Path

import pytest

# Small enough for a CPU test run: 16 px views, a short queue, a few dozen steps.
TINY = [
    "augment.image_size=16",
    "data.decode_size=16",
    "moco.queue_size=256",
    "moco.mlp_hidden=256",
    "train.log_every=4",
]


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Keep runs and caches out of the repository and the user's home."""
    monkeypatch.setenv("LWZOO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LWZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "lwzoo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).parent,
    )
