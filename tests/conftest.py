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


@pytest.fixture(scope="session")
def evaluated_export(tmp_path_factory):
    """A two-step run at 32 px, evaluated (kNN with baseline, linear) and exported: real files, real
    recorded metrics, in a few seconds."""
    from lwzoo import evaluate
    from lwzoo.export import export
    from lwzoo.pretrain import pretrain

    root = tmp_path_factory.mktemp("published")
    run = root / "run"
    pretrain(
        "mobilenetv3_large",
        data="builtin:val",
        out=run,
        until_step=2,
        device="cpu",
        overrides=["train.epochs=1", "optim.warmup_epochs=0.5", "train.log_every=1"],
        batch_size=64,
    )
    evaluate.knn(run, device="cpu", baseline=True)
    evaluate.linear(run, device="cpu")
    return export(run).out_dir
