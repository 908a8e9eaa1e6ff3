"""The Hub folder: the one writer (and reader) of the model folders lwzoo exports, publishes and files in its
local zoo, and the one place their file names are spelled.

``lwzoo export`` writes an export folder; ``lwzoo publish`` and ``lwzoo zoo build`` add the model card to a
copy of it (:func:`assemble`) and upload that copy or file it locally, so every model folder has one layout::

    model.safetensors     the backbone in timm's own key names (timm loads it with strict=True)
    config.json           timm's Hub config (architecture, num_classes 0, pretrained_cfg with lwzoo's
                          evaluation preprocessing) and an ``lwzoo`` section: training provenance and the
                          sha256 of every model file
    model.onnx            fp32 ONNX, input ``images`` (N, 3, H, W), output ``features``
    model.int8.onnx       int8 ONNX (onnxruntime quantisation), when exported with int8
    recipe.yaml           the recipe it was trained with         } the run's records, under the run
    metrics.jsonl         its training log                       } folder's names (lwzoo.run_folder),
    evals.json            the evaluations of exactly these weights } copied at export
    export.json           export's report: files, parity against torch, int8 checks
    README.md             the model card (added by assemble)
    training_curve.png    loss and kNN accuracy over training (added by assemble, when there is a log)

Reading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import timm
import torch.nn as nn
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .archs import Arch, get_arch
from .card import plot_training_curve, render_card
from .errors import LwzooError
from .files import atomic_write_text, public_mode
from .metrics import read_metrics
from .preprocess import Preprocess
from .run_folder import EVALS, METRICS, RECIPE, read_evals, write_evals

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ONNX = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
EXPORT_REPORT = "export.json"
CARD = "README.md"
CURVE = "training_curve.png"
MODEL_FILES = (WEIGHTS, ONNX, ONNX_INT8)  # checksummed in config.json, verified before they are used or leave
EXPORT_FILES = (CONFIG, *MODEL_FILES, RECIPE, METRICS, EVALS, EXPORT_REPORT)  # what `lwzoo export` writes
FILES = frozenset({*EXPORT_FILES, CARD, CURVE})  # everything a Hub folder may hold
ASSEMBLED = "hub"  # the folder `lwzoo publish --dry-run` assembles inside an export by default
# Facts about the architecture that timm's own pretrained_cfg carries; its tag, licence, hub id
# and source URL belong to timm's ImageNet weights and are not copied.
_ARCH_FIELDS = ("pool_size", "first_conv", "classifier", "fixed_input_size")


def hub_config(arch: Arch, preprocess: Preprocess, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config.json`` as ``timm.create_model('hf-hub:...')`` reads it."""
    timm_cfg = timm.models.get_pretrained_cfg(arch.timm_name)
    arch_facts = {k: getattr(timm_cfg, k) for k in _ARCH_FIELDS if timm_cfg is not None and hasattr(timm_cfg, k)}
    return {
        "architecture": arch.timm_name,
        "num_classes": 0,
        "num_features": arch.feature_dim,
        "pretrained_cfg": {**arch_facts, **preprocess.timm_cfg(), "num_classes": 0},
        "lwzoo": {"arch": arch.name, **(extra or {})},
    }


def write_model(
    dest: Path,
    backbone: nn.Module,
    arch: Arch,
    preprocess: Preprocess,
    metadata: dict[str, str],
    training: dict[str, Any] | None = None,
    safetensors: bool = True,
) -> None:
    """Write ``config.json`` and, with ``safetensors``, ``model.safetensors`` (with string ``metadata``) into
    ``dest``; ``training`` (data, seed, steps, recipe) goes into config.json's ``lwzoo`` section."""
    dest.mkdir(parents=True, exist_ok=True)
    if safetensors:
        state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
        save_file(state, str(dest / WEIGHTS), metadata={k: str(v) for k, v in metadata.items()})
        public_mode(dest / WEIGHTS)  # safetensors writes 0600; every other file of the folder is 0644
    extra = {"lwzoo_version": metadata.get("lwzoo_version"), "training": training or {}}
    (dest / CONFIG).write_text(json.dumps(hub_config(arch, preprocess, extra), indent=2) + "\n")


def copy_run_records(run_dir: Path, dest: Path, identity: str, recipe_yaml: str | None) -> None:
    """The run's recipe, training log and the evaluations of exactly these weights (``identity``), so the
    folder cites only results of the model it holds."""
    if recipe_yaml is not None:
        atomic_write_text(dest / RECIPE, recipe_yaml)
    if (run_dir / METRICS).is_file():
        shutil.copyfile(run_dir / METRICS, dest / METRICS)
    if (run_dir / EVALS).is_file():
        write_evals(dest, [e for e in read_evals(run_dir) if e["identity"] == identity])


def write_export_report(dest: Path, report: dict[str, Any]) -> None:
    atomic_write_text(dest / EXPORT_REPORT, json.dumps(report, indent=1) + "\n")


def read_export_report(folder: Path) -> dict[str, Any]:
    """A folder's ``export.json``; empty when it has none (a folder not written by ``lwzoo export``)."""
    try:
        return json.loads((folder / EXPORT_REPORT).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise LwzooError(f"'{folder / EXPORT_REPORT}' is unreadable ({e}); export the model again") from None


def file_sizes(folder: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(folder.iterdir()) if f.is_file()}


def is_export_dir(folder: Path) -> bool:
    """Whether ``folder`` is a folder ``lwzoo export`` wrote (it has the export report and an lwzoo config)."""
    try:
        return (folder / EXPORT_REPORT).is_file() and "lwzoo" in json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return False


def record_checksums(folder: Path, names: tuple[str, ...] = MODEL_FILES) -> None:
    """Write the sha256 of the model files into ``config.json`` (``lwzoo.files``), so a loader can
    tell a tampered or damaged download from the file that was published."""
    config = json.loads((folder / CONFIG).read_text())
    config["lwzoo"]["files"] = {n: sha256_file(folder / n) for n in names if (folder / n).is_file()}
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def verify_checksum(path: Path, config: dict[str, Any]) -> None:
    """Raise LwzooError unless ``path`` has the sha256 ``config.json`` recorded for its name."""
    expected = config.get("lwzoo", {}).get("files", {}).get(path.name)
    if expected is None:
        raise LwzooError(f"{CONFIG} records no checksum for {path.name}; export and publish it again with lwzoo")
    if sha256_file(path) != expected:
        raise LwzooError(
            f"'{path}' does not match the sha256 in {CONFIG}: the file was changed or damaged. "
            "Delete it (for a Hub download, its entry in the Hugging Face cache) and load again"
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_hub_config(folder: Path) -> tuple[Arch, Preprocess, dict[str, Any]]:
    """The arch and preprocessing a Hub folder's ``config.json`` declares."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text())
        cfg = config["pretrained_cfg"]
        arch = get_arch(config.get("lwzoo", {}).get("arch") or config["architecture"])
        preprocess = Preprocess(
            int(cfg["input_size"][-1]),
            float(cfg["crop_pct"]),
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
            cfg.get("interpolation", "bicubic"),
        )
    except FileNotFoundError:
        raise LwzooError(f"'{folder}' has no {CONFIG}; export the model again with `lwzoo export`") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise LwzooError(f"'{path}' is not a valid timm/lwzoo config ({type(e).__name__}: {e})") from None
    return arch, preprocess, config


def load_backbone(weights: Path, arch: Arch) -> nn.Module:
    """A timm backbone with the weights of a safetensors file, loaded strictly."""
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise LwzooError(f"'{weights}' is not a readable safetensors file ({e}); export it again") from None
    model = timm.create_model(arch.timm_name, pretrained=False, num_classes=0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise LwzooError(f"'{weights}' does not fit {arch.timm_name}: {str(e).splitlines()[0]}") from None
    return model


# ---- the card, and the folder that leaves ------------------------------------------------------------------------


def recorded_results(folder: Path, required: bool) -> list[dict[str, Any]]:
    """The evaluations a folder records; with ``required``, none is an error telling how to make them."""
    results = read_evals(folder)
    if required and not results:
        raise LwzooError(
            f"the export '{folder}' has no evaluation results, and a card must cite real numbers: run "
            "`lwzoo eval knn CKPT --baseline` (and `lwzoo eval linear CKPT --baseline`), then export again"
        )
    return results


def write_card(
    folder: Path,
    repo_id: str,
    load_name: str | None = None,
    license: str = "apache-2.0",
    require_results: bool = True,
    target: str | None = None,
) -> None:
    """Write ``README.md`` (the model card) and the training curve into a folder that holds an export's files.

    Every number on the card is read from the folder's ``evals.json``. ``require_results=False`` lets a local zoo
    build without labelled data have a card that says it was not evaluated; ``target`` is what the paper reports
    for the recipe, printed as a target and never as this model's result."""
    arch, preprocess, config = read_hub_config(folder)
    results = recorded_results(folder, require_results)
    recipe = yaml.safe_load((folder / RECIPE).read_text()) if (folder / RECIPE).is_file() else {}
    rows = read_metrics(folder / METRICS) if (folder / METRICS).is_file() else []
    curve = CURVE if plot_training_curve(rows, folder / CURVE) else None
    has_onnx = (folder / ONNX).is_file()
    int8 = read_export_report(folder).get("int8")
    card = render_card(
        arch, preprocess, config, results, recipe, repo_id, load_name, license, curve, target, has_onnx, int8
    )
    atomic_write_text(folder / CARD, card)


def assemble(
    export_dir: Path,
    dest: Path,
    repo_id: str,
    load_name: str | None = None,
    license: str = "apache-2.0",
    require_results: bool = True,
    target: str | None = None,
) -> list[str]:
    """Copy an export's files into ``dest`` and add the model card: the folder a Hub repository or the local
    zoo holds. Returns the file names.

    Every model file copied is checked against the sha256 the export's config.json records, as
    :func:`lwzoo.load` checks it, so a damaged or edited export is refused before anything leaves."""
    for required in (CONFIG, WEIGHTS):
        if not (export_dir / required).is_file():
            raise LwzooError(f"'{export_dir}' has no {required}; publish an `lwzoo export` folder")
    recorded_results(export_dir, require_results)  # a card without real numbers is refused before anything is written
    _, _, config = read_hub_config(export_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in EXPORT_FILES:
            if (export_dir / name).is_file():
                _copy_verified(export_dir / name, dest / name, config)
        write_card(dest, repo_id, load_name, license, require_results, target)
    except OSError as e:  # this machine's files, not the Hub: say which and what happened
        raise LwzooError(
            f"cannot assemble the repository from '{export_dir}' in '{dest}': {e.strerror or e}"
            + (f" ('{e.filename}')" if e.filename else "")
            + "; check those folders (permissions, free space)"
        ) from None
    return sorted(p.name for p in dest.iterdir())


def _copy_verified(src: Path, dst: Path, config: dict[str, Any]) -> None:
    """Copy one file of the export; a model file must then be the one the export recorded (sha256 in
    ``config.json``)."""
    try:
        shutil.copyfile(src, dst)
    except OSError as e:
        raise LwzooError(
            f"cannot copy '{src}' into the repository ({e.strerror or e}); check that file's permissions "
            f"and the free space under '{dst.parent}'"
        ) from None
    if dst.name not in MODEL_FILES:
        return
    try:
        verify_checksum(dst, config)
    except LwzooError:
        if dst.name not in config.get("lwzoo", {}).get("files", {}):
            raise  # "records no checksum ...; export and publish it again"
        raise LwzooError(
            f"'{src}' does not match the sha256 its {CONFIG} records: the file changed after `lwzoo export` "
            "(edited or damaged); export the run again and publish the new folder"
        ) from None
