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

from .card import CURVE, card_results, plot_training_curve, render_card
from .errors import LwzooError
from .hub_folder import CONFIG, WEIGHTS
from .version import __version__
from .zoo import add_local

OPTIONAL = ("model.onnx", "recipe.yaml")  # copied when the export has them


@dataclass
class PublishResult:
    """What was assembled, and where it went."""

    folder: Path | None  # the assembled folder (kept for --dry-run; a temp folder otherwise)
    repo_id: str
    revision: str
    files: list[str]
    commit_url: str | None = None
    local: Path | None = None


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


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
    export_dir: Path, repo_id: str, dest: Path, load_name: str | None = None, license: str = "apache-2.0"
) -> list[str]:
    """Write the repository's files into ``dest``: README.md (the card), config.json,
    model.safetensors, model.onnx (when exported), recipe.yaml and the training curve."""
    for required in (CONFIG, WEIGHTS):
        if not (export_dir / required).is_file():
            raise LwzooError(f"'{export_dir}' has no {required}; publish an `lwzoo export` folder")
    card_results(export_dir)  # a card without real numbers is refused before anything is written
    dest.mkdir(parents=True, exist_ok=True)
    has_curve = plot_training_curve(export_dir / "metrics.jsonl", dest / CURVE)
    (dest / "README.md").write_text(render_card(export_dir, repo_id, load_name, license, CURVE if has_curve else None))
    for name in (CONFIG, WEIGHTS, *OPTIONAL):
        if (export_dir / name).is_file():
            shutil.copyfile(export_dir / name, dest / name)
    return sorted(p.name for p in dest.iterdir())


def _token() -> str:
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise LwzooError("no Hugging Face token: set HF_TOKEN, or log in with `hf auth login`")
    return token


def _is_network_error(e: BaseException) -> bool:
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, OSError) or bool(names & {"TransportError", "ConnectionError", "Timeout", "TimeoutException"})


def upload(folder: Path, repo_id: str, private: bool, revision: str | None, token: str) -> str:
    """Create the repo if needed and upload every file of ``folder`` in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in sorted(folder.iterdir())]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=f"Upload {repo_id.split('/')[-1]} (lwzoo {__version__})",
            revision=revision,
            repo_type="model",
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        reason = "the token was refused" if status in (401, 403) else str(e).splitlines()[0]
        raise LwzooError(
            f"the Hub at {endpoint} refused the upload to {repo_id} (HTTP {status}): {reason}".replace(token, "***")
        ) from None
    except Exception as e:
        if type(e).__name__ == "OfflineModeIsEnabled":
            raise LwzooError("HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it to publish") from None
        if _is_network_error(e):
            raise LwzooError(
                f"cannot reach the Hugging Face Hub at {endpoint} ({type(e).__name__}); "
                "check the network or HF_ENDPOINT"
            ) from None
        raise
    return info.commit_url


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
        dest = Path(out) if out is not None else export_dir / "hub"
        if dest.exists():
            shutil.rmtree(dest)
        files = assemble(export_dir, repo_id, dest, name, license)
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
        url = upload(Path(tmp), repo_id, private, revision, token)
    say(f"published: {url}")
    say(
        f"load it with lwzoo.load({repo_id!r}) or timm.create_model('hf-hub:{repo_id}', pretrained=True, num_classes=0)"
    )
    return PublishResult(None, repo_id, revision or "main", files, url)
