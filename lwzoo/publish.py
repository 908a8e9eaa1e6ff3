"""``lwzoo publish``: an export folder to a Hugging Face Hub model repository, with its model card,
in one commit; or into the local zoo.

The token comes from ``HF_TOKEN`` or the huggingface login and is never printed, written or put in
an error message. ``HF_ENDPOINT`` points at another Hub (or a test server).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .card import CURVE, card_results, plot_training_curve, render_card
from .errors import LwzooError
from .files import check_writable_dir, replace_dir
from .hub_client import hub_endpoint, upload_folder
from .hub_folder import CONFIG, WEIGHTS, read_hub_config, verify_checksum
from .version import __version__
from .zoo import add_local

OPTIONAL = ("model.onnx", "recipe.yaml")  # copied when the export has them
MODEL_FILES = (WEIGHTS, "model.onnx")  # checked against the sha256 config.json records before they leave
HUB_FILES = frozenset({"README.md", CONFIG, WEIGHTS, *OPTIONAL, CURVE})  # everything assemble() writes


@dataclass
class PublishResult:
    """What was assembled, and where it went."""

    folder: Path | None  # the assembled folder (kept for --dry-run; a temp folder otherwise)
    repo_id: str
    revision: str
    files: list[str]
    commit_url: str | None = None
    local: Path | None = None


def validate_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if repo_id.count("/") != 1:
        raise LwzooError(f"--repo-id '{repo_id}' must be ORG/NAME (a user or organisation, then the model name)")
    try:
        hf_validate(repo_id)
    except HFValidationError as e:
        raise LwzooError(f"--repo-id '{repo_id}' is not a valid Hub repository id: {e}") from None


def assemble(
    export_dir: Path,
    repo_id: str,
    dest: Path,
    load_name: str | None = None,
    license: str = "apache-2.0",
    require_results: bool = True,
    target: str | None = None,
) -> list[str]:
    """Write the repository's files into ``dest``: README.md (the card), config.json,
    model.safetensors, model.onnx (when exported), recipe.yaml and the training curve.

    Every model file copied is checked against the sha256 the export's config.json records, as
    :func:`lwzoo.load` checks it, so a damaged or edited export is refused before anything leaves.
    ``require_results`` and ``target`` are :func:`lwzoo.card.render_card`'s (a local zoo build may be
    unevaluated; a card for the Hub may not)."""
    for required in (CONFIG, WEIGHTS):
        if not (export_dir / required).is_file():
            raise LwzooError(f"'{export_dir}' has no {required}; publish an `lwzoo export` folder")
    try:
        if require_results:
            card_results(export_dir)  # a card without real numbers is refused before anything is written
        _, _, config = read_hub_config(export_dir)
        dest.mkdir(parents=True, exist_ok=True)
        has_curve = plot_training_curve(export_dir / "metrics.jsonl", dest / CURVE)
        curve = CURVE if has_curve else None
        card = render_card(export_dir, repo_id, load_name, license, curve, require_results, target)
        (dest / "README.md").write_text(card)
    except OSError as e:  # this machine's files, not the Hub: say which and what happened
        raise LwzooError(
            f"cannot assemble the repository from '{export_dir}' in '{dest}': {e.strerror or e}"
            + (f" ('{e.filename}')" if e.filename else "")
            + "; check those folders (permissions, free space)"
        ) from None
    for name in (CONFIG, WEIGHTS, *OPTIONAL):
        if (export_dir / name).is_file():
            _copy(export_dir / name, dest / name, config)
    return sorted(p.name for p in dest.iterdir())


def _copy(src: Path, dst: Path, config: dict[str, Any]) -> None:
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


def _assemble_in_place(export_dir: Path, repo_id: str, dest: Path, name: str, license: str) -> list[str]:
    """:func:`assemble` into a temp folder beside ``dest`` that replaces it once complete: a refused or
    failed assembly leaves the last good folder as it was. ``dest`` may only be new, empty, or a folder
    this function assembled before: a folder of anything else is refused, never deleted."""
    if dest.is_file():
        raise LwzooError(f"--out '{dest}' is a file; the assembled repository is a folder, so choose another --out")
    if dest.is_dir():
        foreign = sorted(p.name for p in dest.iterdir() if p.name not in HUB_FILES)
        if foreign or (any(dest.iterdir()) and not (dest / "README.md").is_file()):
            what = ", ".join(foreign[:3]) or "no card"
            raise LwzooError(
                f"'{dest}' holds files that are not an assembled lwzoo repository ({what}), and would be replaced; "
                "choose another --out"
            )
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        files = assemble(export_dir, repo_id, tmp, name, license)
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


def _token() -> str:
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise LwzooError("no Hugging Face token: set HF_TOKEN, or log in with `hf auth login`")
    return token


def publish(
    export_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    local: bool = False,
    out: str | Path | None = None,
    license: str = "apache-2.0",
    verbose: bool = True,
) -> PublishResult:
    """Publish an export folder as a Hub repository (both lwzoo and timm load it).

    Args:
        export_dir: an ``lwzoo export`` folder, with evaluation results recorded (``lwzoo eval``).
        repo_id: ``ORG/NAME`` on the Hub; its NAME is the local zoo name with ``local``.
        private: create the repository private.
        revision: the branch to commit to (created if missing). Default: main.
        dry_run: write the assembled folder (``out``, default ``<export>/hub``), print what would be
            uploaded, upload nothing.
        local: add the assembled folder to the local zoo instead of uploading (works offline).
        out: where ``dry_run`` writes the folder.
        license: the card's licence.
        verbose: print what happens.
    """
    say = print if verbose else (lambda *_: None)
    export_dir = Path(export_dir)
    validate_repo_id(repo_id)
    name = repo_id.split("/")[-1]
    if dry_run or local:
        dest = check_writable_dir(Path(out) if out is not None else export_dir / "hub", "assembled folder")
        files = _assemble_in_place(export_dir, repo_id, dest, name, license)
        result = PublishResult(dest, repo_id, revision or "main", files)
        if local:
            result.local = add_local(name, dest)
            say(f"added to the local zoo as '{name}': {result.local}  (lwzoo.load({name!r}))")
        if dry_run:
            say(f"dry run: would upload to {hub_endpoint()}/{repo_id} (revision {revision or 'main'}) in one commit:")
            for f in files:
                say(f"  {f:<22} {(dest / f).stat().st_size / 1e6:8.2f} MB")
            say(f"assembled in {dest}; nothing was uploaded")
        return result

    token = _token()
    with tempfile.TemporaryDirectory(prefix="lwzoo-publish-") as tmp:
        files = assemble(export_dir, repo_id, Path(tmp), name, license)
        say(f"uploading {len(files)} files to {hub_endpoint()}/{repo_id} ...")
        message = f"Upload {name} (lwzoo {__version__})"
        url = upload_folder(Path(tmp), repo_id, message, token, private=private, revision=revision)
    say(f"published: {url}")
    say(
        f"load it with lwzoo.load({repo_id!r}) or timm.create_model('hf-hub:{repo_id}', pretrained=True, num_classes=0)"
    )
    return PublishResult(None, repo_id, revision or "main", files, url)
