"""The run folder, and the one place its file names are spelled.

``lwzoo pretrain`` writes one folder per run, by default ``runs/<arch>/<recipe>-<YYYYmmdd-HHMMSS>/``
(``$LWZOO_RUNS`` moves ``runs``), so later commands find the newest run without being told where it is::

    checkpoint-last.pt        the newest checkpoint (format: lwzoo.checkpoint), replaced atomically
    checkpoint-epoch0010.pt   copies kept every train.keep_every epochs
    recipe.yaml               the resolved recipe the run trains with
    metrics.jsonl             one JSON row per log window, epoch and kNN check (format: lwzoo.metrics)
    tensorboard/              the same rows for TensorBoard, when it is installed
    evals.json                every ``lwzoo eval`` of this run's weights, which export and the card cite
    eval-<protocol>.json      the latest result of each protocol
    export/                   ``lwzoo export``'s default output (layout: lwzoo.hub_folder)
    build.json                what ``lwzoo zoo build`` was asked for (its run folders only)
    .lock                     held while a process trains into the folder (lwzoo.files.RunLock)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from . import env
from .errors import LwzooError
from .files import atomic_write_text
from .recipe import INIT

CHECKPOINT = "checkpoint-last.pt"
RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
EVALS = "evals.json"
EXPORT = "export"
BUILD_JSON = "build.json"  # what `lwzoo zoo build` was asked for, in its run folder


def kept_checkpoint(epoch: int) -> str:
    return f"checkpoint-epoch{epoch:04d}.pt"


def eval_report(protocol: str) -> str:
    return f"eval-{protocol}.json"


def runs_root() -> Path:
    return env.runs_root()


def new_run_dir(arch: str, recipe_name: str) -> Path:
    """A fresh run folder name (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_root() / arch / f"{recipe_name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


def latest_checkpoint(arch: str | None = None) -> Path:
    """The newest ``checkpoint-last.pt`` under the runs folder (of ``arch`` when given)."""
    pattern = f"{arch}/*/{CHECKPOINT}" if arch else f"*/*/{CHECKPOINT}"
    found = sorted(runs_root().glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        where = runs_root() / (arch or "")
        raise LwzooError(
            f"no checkpoint found under '{where}'; "
            f"run `lwzoo pretrain {arch or 'ARCH'}` first or pass a checkpoint path"
        )
    return found[-1]


def read_evals(folder: Path) -> list[dict[str, Any]]:
    """The evaluations recorded in ``folder/evals.json`` (a run or export folder); none when it has no file."""
    path = folder / EVALS
    return json.loads(path.read_text())["results"] if path.is_file() else []


def write_evals(folder: Path, results: list[dict[str, Any]]) -> None:
    atomic_write_text(folder / EVALS, json.dumps({"results": results}, indent=1) + "\n")


def read_run_init(folder: Path) -> dict[str, Any] | None:
    """The ``init`` section of a run's (or export's) recipe.yaml: where its backbone started
    (``lwzoo pretrain --init``), or None for a random initialisation."""
    path = folder / RECIPE
    try:
        recorded = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None  # a damaged recipe.yaml is the run's problem to report, not the evaluation's
    return recorded.get(INIT) if isinstance(recorded, dict) else None


def record_eval(folder: Path, result: dict[str, Any]) -> None:
    """File one evaluation in ``folder/evals.json``, replacing an earlier one of the same protocol, data and
    weights (a rerun updates its row rather than adding a second). A run started from given weights has them
    recorded with the result (``init``), so the numbers say what the encoder started from."""

    def key(r: dict[str, Any]) -> tuple:
        return r["protocol"], r["train_data"], r["val_data"], r["identity"]

    init = read_run_init(folder)
    if init is not None:
        result = {**result, "init": init}
    write_evals(folder, [r for r in read_evals(folder) if key(r) != key(result)] + [result])
