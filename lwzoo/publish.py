"""``lwzoo publish``: write the Hub folder (an export plus its model card, :func:`lwzoo.hub_folder.assemble`),
then upload it in one commit, or file it in the local zoo.

The token comes from ``HF_TOKEN`` or the huggingface login and is never printed, written or put in
an error message. ``HF_ENDPOINT`` points at another Hub (or a test server).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import env
from .errors import LwzooError
from .files import check_writable_dir, replace_dir
from .hub_client import hub_endpoint, upload_folder, validate_repo_id
from .hub_folder import ASSEMBLED, CARD, FILES, assemble
from .progress import SILENT, Progress
from .version import __version__
from .zoo import add_local


@dataclass
class PublishResult:
    """What was assembled, and where it went."""

    folder: Path | None  # the assembled folder (kept for --dry-run; a temp folder otherwise)
    repo_id: str
    revision: str
    files: list[str]
    commit_url: str | None = None
    local: Path | None = None


def _assemble_in_place(export_dir: Path, repo_id: str, dest: Path, name: str, license: str) -> list[str]:
    """:func:`assemble` into a temp folder beside ``dest`` that replaces it once complete: a refused or
    failed assembly leaves the last good folder as it was. ``dest`` may only be new, empty, or a folder
    this function assembled before: a folder of anything else is refused, never deleted."""
    if dest.is_file():
        raise LwzooError(f"--out '{dest}' is a file; the assembled repository is a folder, so choose another --out")
    if dest.is_dir():
        foreign = sorted(p.name for p in dest.iterdir() if p.name not in FILES)
        if foreign or (any(dest.iterdir()) and not (dest / CARD).is_file()):
            what = ", ".join(foreign[:3]) or "no card"
            raise LwzooError(
                f"'{dest}' holds files that are not an assembled lwzoo repository ({what}), and would be replaced; "
                "choose another --out"
            )
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        files = assemble(export_dir, tmp, repo_id, name, license)
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


def _token() -> str:
    from huggingface_hub import get_token

    token = env.hub_token_env() or get_token()
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
    progress: Progress = SILENT,
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
        progress: where what happens is said (default: nowhere; the CLI passes a Console).
    """
    say = progress.say
    export_dir = Path(export_dir)
    validate_repo_id(repo_id)
    name = repo_id.split("/")[-1]
    if dry_run or local:
        dest = check_writable_dir(Path(out) if out is not None else export_dir / ASSEMBLED, "assembled folder")
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
        files = assemble(export_dir, Path(tmp), repo_id, name, license)
        say(f"uploading {len(files)} files to {hub_endpoint()}/{repo_id} ...")
        message = f"Upload {name} (lwzoo {__version__})"
        url = upload_folder(Path(tmp), repo_id, message, token, private=private, revision=revision)
    say(f"published: {url}")
    say(
        f"load it with lwzoo.load({repo_id!r}) or timm.create_model('hf-hub:{repo_id}', pretrained=True, num_classes=0)"
    )
    return PublishResult(None, repo_id, revision or "main", files, url)
