"""The weights a new pretraining run starts from (``lwzoo pretrain ARCH --init SOURCE``).

A source resolves to the backbone's weights in timm's own key names and a record of where they came from:

    timm                  timm's ImageNet weights for the arch: the file timm's pretrained_cfg names on the Hub,
                          from the Hugging Face cache (downloaded into it when online), loaded by timm itself
    FILE.safetensors      a state dict in timm's key names (timm's own files, or an export's model.safetensors)
    EXPORT_DIR, ZOO_NAME  an ``lwzoo export`` folder, or a name in the local zoo (its model.safetensors,
                          checked against the sha256 its config.json records)
    CHECKPOINT, RUN_DIR   an ``lwzoo pretrain`` checkpoint: its query encoder's backbone

The weights are checked against a fresh backbone of the arch: another arch, a missing key, an unexpected key
or a tensor of another shape is refused with the keys named. A classifier head (a source with ``num_classes``
> 0, such as timm's ImageNet weights) is dropped, and :attr:`InitWeights.dropped` says which keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from . import env
from .archs import Arch, create_backbone, get_arch
from .checkpoint import load_checkpoint
from .errors import LwzooError
from .hub_client import download
from .hub_folder import CONFIG, WEIGHTS, read_hub_config, sha256_file, verify_checksum
from .run_folder import CHECKPOINT
from .zoo import ZOO, local_models, local_zoo_dir, unpublished_error

TIMM = "timm"
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from its Hub repos, in its order
_SHOWN = 5  # keys named in an error, of however many


@dataclass(frozen=True)
class InitWeights:
    """A backbone's starting weights and where they came from.

    Attributes:
        state: the backbone's state dict in timm's key names, head removed.
        record: ``{"source": as given, "kind": timm|safetensors|export|zoo|checkpoint, "file": the file the
            weights were read from, "sha256": that file's sha256, "arch": the source's lwzoo arch (None for a
            safetensors file that does not name one)}``; saved in the
            run's checkpoint and recipe.yaml, and carried into exports, evals.json and the model card.
        dropped: the source's head keys, which a backbone (``num_classes=0``) has no place for.
    """

    state: dict[str, torch.Tensor]
    record: dict[str, Any]
    dropped: tuple[str, ...] = field(default=())


def load_init(source: str | Path, arch: Arch) -> InitWeights:
    """Resolve ``source`` (see the module docstring) into checked weights for ``arch``'s backbone."""
    text = str(source)
    if text == TIMM:
        state, record = _from_timm(arch)
    else:
        state, record = _from_path_or_zoo(text)
    record = {"source": text, **record}
    if record["arch"] is not None and record["arch"] != arch.name:
        raise LwzooError(
            f"--init '{text}' holds {record['arch']} weights, not {arch.name}; pretrain {record['arch']} from it "
            f"(lwzoo pretrain {record['arch']} --init {text}), or give a {arch.name} source"
        )
    kept, dropped = check_backbone_keys(state, arch, text)
    return InitWeights(kept, record, dropped)


def _from_path_or_zoo(text: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        return _from_safetensors(path)
    if path.is_file():
        return _from_checkpoint(path)
    if path.is_dir() and (path / CHECKPOINT).is_file():
        return _from_checkpoint(path / CHECKPOINT)
    if path.is_dir() and (path / CONFIG).is_file():
        return _from_export(path, "export")
    if path.is_dir():
        raise LwzooError(
            f"--init '{text}' is a folder but neither an lwzoo export (no {CONFIG}) nor a run folder (no "
            f"{CHECKPOINT}); give an export folder, a checkpoint, a .safetensors file, a zoo name or 'timm'"
        )
    if text in local_models():
        return _from_export(local_zoo_dir() / text, "zoo")
    if text in ZOO:
        entry = ZOO[text]
        if not entry.published:
            raise unpublished_error(entry)
        return _from_export(download(entry.repo_id, entry.revision, (CONFIG, WEIGHTS)), "zoo")
    raise LwzooError(
        f"--init '{text}' is not 'timm', a file or folder that exists, nor a zoo name (`lwzoo zoo list`); give an "
        "export folder, a checkpoint or run folder, a .safetensors file in timm's key names, a zoo name or 'timm'"
    )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise LwzooError(f"--init '{path}' is not a readable safetensors file ({e}); give a safetensors file") from None


def _from_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A safetensors file. An lwzoo export's names its arch in its metadata; timm's own files do not, and then
    the key check alone tells another architecture apart."""
    state, metadata = _read_safetensors(path)
    arch = metadata.get("arch") or metadata.get("timm_name")
    name = get_arch(arch).name if arch else None
    return state, {"kind": "safetensors", "file": str(path.resolve()), "sha256": sha256_file(path), "arch": name}


def _from_export(folder: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An export folder (or a local zoo entry, or a Hub snapshot of one): model.safetensors, checked against the
    sha256 its config.json records, as lwzoo.load checks it."""
    arch, _, config = read_hub_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise LwzooError(f"--init '{folder}' has no {WEIGHTS}; export the run with safetensors (lwzoo export)")
    verify_checksum(weights, config)
    state, _ = _read_safetensors(weights)
    sha256 = config["lwzoo"]["files"][WEIGHTS]  # verify_checksum just matched the file to it
    return state, {"kind": kind, "file": str(weights.resolve()), "sha256": sha256, "arch": arch.name}


def _from_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A pretraining checkpoint's query-encoder backbone (``backbone.*`` of MoCo's state dict)."""
    try:
        ckpt = load_checkpoint(path)
    except LwzooError as e:  # a file that is neither safetensors nor a checkpoint lands here too
        kinds = "a checkpoint, a .safetensors file, an export folder, a zoo name or 'timm'"
        raise LwzooError(f"--init: {e} (--init takes {kinds})") from None
    state = {k.removeprefix("backbone."): v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    arch = get_arch(ckpt["arch"]).name
    return state, {"kind": "checkpoint", "file": str(path.resolve()), "sha256": sha256_file(path), "arch": arch}


def _from_timm(arch: Arch) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """timm's pretrained weights for the arch, loaded by ``timm.create_model(pretrained=True)`` from the file
    in the Hugging Face cache (``HF_HUB_CACHE``, or ``HF_HOME``'s), downloaded into it first when online."""
    cfg = timm.models.get_pretrained_cfg(arch.timm_name)
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        raise LwzooError(f"timm has no Hub weights for {arch.timm_name}; give an export, checkpoint or safetensors")
    weights = _cached_timm_file(repo) or _download_timm_file(repo)
    model = timm.create_model(arch.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    record = {"kind": TIMM, "file": f"{repo}/{weights.name}", "sha256": sha256_file(weights), "arch": arch.name}
    return model.state_dict(), record


def _cached_timm_file(repo: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for name in TIMM_FILES:
        found = try_to_load_from_cache(repo, name, cache_dir=env.hub_cache())
        if isinstance(found, str):
            return Path(found)
    return None


def _download_timm_file(repo: str) -> Path:
    if env.hub_offline():
        raise LwzooError(
            f"--init timm: the Hub file {repo}/{TIMM_FILES[0]} is not in the Hugging Face cache ({env.hub_cache()}) "
            f"and HF_HUB_OFFLINE is set; fetch it where there is network with `hf download {repo} {TIMM_FILES[0]}` "
            "and copy that cache here (or point HF_HOME or HF_HUB_CACHE at a cache that has it), or unset "
            "HF_HUB_OFFLINE to download it"
        )
    return download(repo, "main", (TIMM_FILES[0],)) / TIMM_FILES[0]


def head_keys(arch: Arch, keys: list[str]) -> list[str]:
    """The keys of ``keys`` that belong to the arch's classifier head (timm's ``pretrained_cfg.classifier``)."""
    cfg = timm.models.get_pretrained_cfg(arch.timm_name)
    heads = getattr(cfg, "classifier", None) or "classifier"
    prefixes = tuple(f"{h}." for h in ([heads] if isinstance(heads, str) else heads))
    return [k for k in keys if k.startswith(prefixes)]


def check_backbone_keys(
    state: dict[str, torch.Tensor], arch: Arch, source: str
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """``state`` without its head, after checking it against a fresh backbone of ``arch`` key by key and shape by
    shape; returns it and the dropped head keys. BatchNorm's ``num_batches_tracked`` may be absent (torch fills
    it in), as it is from some timm files."""
    expected = create_backbone(arch).state_dict()
    dropped = tuple(head_keys(arch, [k for k in state if k not in expected]))
    unexpected = [k for k in state if k not in expected and k not in dropped]
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what} {_some(keys)}"
        for what, keys in (("missing backbone keys", missing), ("unexpected keys", unexpected), ("shapes", shapes))
        if keys
    ]
    if problems:
        raise LwzooError(
            f"--init '{source}' does not fit {arch.name} ({arch.timm_name}): {'; '.join(problems)}; give weights of "
            f"a {arch.timm_name} backbone in timm's key names"
        )
    return {k: v for k, v in state.items() if k not in dropped}, dropped


def _some(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOWN else shown


def record_line(record: dict[str, Any]) -> str:
    """One line saying where a run's weights started, for the run header and the model card."""
    return f"{record['source']} ({record['kind']}, {record['file']}, sha256 {record['sha256']})"
