"""``lwzoo zoo build NAME``: make a zoo entry's encoder on your own images and file it in the local zoo.

It runs the entry's own arch and recipe (on the built-in demo set, the demo recipe with the entry's
loss, as ``lwzoo pretrain`` does there, so a first try takes minutes): pretrain, then the kNN and
linear probes beside a random init when labelled data is given, then export, then a model card, and
files the result under NAME in the local zoo, where ``lwzoo.load(NAME)`` finds it first. The run
folder (``runs/zoo/NAME``) keeps what the build was asked for in ``build.json``, so running the same
command again continues an interrupted build instead of starting over.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import evaluate
from .checkpoint import load_checkpoint
from .config import parse_overrides
from .data import DEMO_RECIPE, is_builtin, scan_folder
from .errors import LwzooError
from .export import export
from .files import atomic_write_text
from .hub_folder import assemble
from .pretrain import PretrainResult, pretrain
from .progress import SILENT, Progress
from .run_folder import BUILD_JSON, CHECKPOINT, EXPORT, runs_root
from .zoo import ZooEntry, add_local, get_entry


@dataclass(frozen=True)
class BuildResult:
    """What a build left behind.

    Attributes:
        name: the zoo name.
        run_dir: the build's run folder (checkpoint, evaluations, export).
        pretrain: the pretraining call's result.
        local: the local zoo folder ``lwzoo.load(name)`` reads; None while pretraining is unfinished.
        evaluated: whether labelled data scored it (kNN and linear probe, beside random init).
    """

    name: str
    run_dir: Path
    pretrain: PretrainResult
    local: Path | None
    evaluated: bool


def build(
    name: str,
    data: str | Path | None = None,
    val_data: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    device: str = "auto",
    seed: int = 0,
    out: str | Path | None = None,
    until_step: int | None = None,
    progress: Progress = SILENT,
) -> BuildResult:
    """Build the zoo entry ``name`` on ``data`` and file it in the local zoo.

    Args:
        name: a zoo entry (``lwzoo zoo list``), e.g. ``effnet_b0-smoothed``.
        data: a folder of your images (class sub-folders optional), or None / ``builtin`` for the demo set,
            which trains with the demo recipe (32 px, minutes on a CPU) and the entry's loss.
        val_data: a labelled held-out folder. With it (and class sub-folders in ``data``) the encoder is
            scored by kNN and linear probe beside a random init, and the card cites the numbers. The
            built-in set is scored on its held-out split.
        epochs, batch_size, overrides: the budget, as for :func:`lwzoo.pretrain`; the entry's recipe otherwise.
        device, seed: as for :func:`lwzoo.pretrain`.
        out: the run folder. Default: ``runs/zoo/<name>``.
        until_step: stop pretraining at this step; the same command without it continues the build.
        progress: where progress goes (default: nowhere; the CLI passes a Console).
    """
    entry = get_entry(name)
    say = progress.say
    run_dir = Path(out) if out is not None else runs_root() / "zoo" / entry.name
    labelled = _check_eval_data(data, val_data)
    request = _request(entry, data, epochs, batch_size, overrides, seed)
    resume = _continue_or_start(run_dir, request)
    if resume:
        say(f"continuing the build of {entry.name} in {run_dir}")
        trained = pretrain(entry.arch, resume=run_dir, device=device, until_step=until_step, progress=progress)
    else:
        trained = pretrain(
            entry.arch,
            recipe=entry.recipe if not is_builtin(data) else DEMO_RECIPE,
            overrides=request["overrides"],
            data=data,
            epochs=epochs,
            batch_size=batch_size,
            device=device,
            out=run_dir,
            seed=seed,
            until_step=until_step,
            progress=progress,
        )
    if not trained.finished:
        say(f"the build of {entry.name} is paused; run the same command again to continue it")
        return BuildResult(entry.name, run_dir, trained, None, False)
    if labelled:
        for protocol in (evaluate.knn, evaluate.linear):
            protocol(run_dir, data=data, val_data=val_data, device=device, baseline=True, progress=progress)
    exported = export(run_dir, out=run_dir / EXPORT, force=True, progress=progress).out_dir
    local = _file_locally(entry, exported)
    say(f"built {entry.name}: {local}  (lwzoo.load({entry.name!r}) now loads it)")
    return BuildResult(entry.name, run_dir, trained, local, labelled)


def _check_eval_data(data: str | Path | None, val_data: str | Path | None) -> bool:
    """Whether the build can be evaluated; refuses, before any training, a request it could not honour."""
    if is_builtin(data):
        return True
    if val_data is None:
        return False
    _, labels, _ = scan_folder(data)
    if labels is None:
        raise LwzooError(
            f"--val-data needs class sub-folders in --data too (the probes fit their classifier on --data), and "
            f"'{data}' has none; arrange it as DIR/<class>/<image>, or build without --val-data"
        )
    return True


def _request(
    entry: ZooEntry,
    data: str | Path | None,
    epochs: int | None,
    batch_size: int | None,
    overrides: dict[str, Any] | list[str] | None,
    seed: int,
) -> dict[str, Any]:
    """What this build is asked for: the entry's variant and the user's budget, as plain data."""
    user = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    if is_builtin(data):
        data_spec = str(data) if data is not None else "builtin"
    else:
        data_spec = str(Path(data).expanduser().resolve())
    return {
        "entry": entry.name,
        "data": data_spec,
        "overrides": {**dict(entry.overrides), **user},
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
    }


def _continue_or_start(run_dir: Path, request: dict[str, Any]) -> bool:
    """True to resume the build in ``run_dir``; False to start one (recording ``request`` there)."""
    recorded = run_dir / BUILD_JSON
    if recorded.is_file() and (run_dir / CHECKPOINT).is_file():
        before = json.loads(recorded.read_text())
        if before != request:
            changed = sorted(k for k in request if before.get(k) != request[k])
            raise LwzooError(
                f"'{run_dir}' holds a build of {before.get('entry')} started with other {', '.join(changed)}; run the "
                "same command to continue it, or pass --out for a new build"
            )
        load_checkpoint(run_dir / CHECKPOINT)  # a damaged checkpoint is reported before anything runs
        return True
    if run_dir.is_dir() and (run_dir / CHECKPOINT).is_file():
        raise LwzooError(f"'{run_dir}' holds a run that `lwzoo zoo build` did not start; pass --out for the build")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(recorded, json.dumps(request, indent=1) + "\n")
    return False


def _file_locally(entry: ZooEntry, export_dir: Path) -> Path:
    """The export with its model card (the Hub folder's layout), filed in the local zoo under the entry's name."""
    tmp = export_dir.with_name(f".{entry.name}-card.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        assemble(export_dir, tmp, entry.repo_id, entry.name, entry.license, require_results=False, target=entry.target)
        return add_local(entry.name, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
