"""lwzoo's one door to the Hugging Face Hub: the endpoint, the upload of a folder in one commit, the
download of files through huggingface_hub's cache, and the one translation of what huggingface_hub and
httpx2 raise into a one-line :class:`LwzooError` that says what went wrong and how to fix it.

The token is never put in a message: every message is checked against the tokens in play.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import env
from .env import hub_endpoint
from .errors import LwzooError

# What huggingface_hub says when a Hub answer has the wrong shape (lfs.py, _commit_api.py).
_MALFORMED = ("improperly formatted", "Malformed response")
_NETWORK_ERRORS = {"TransportError", "TooManyRedirects", "ConnectionError", "Timeout", "TimeoutError"}


def upload_folder(
    folder: Path, repo_id: str, commit_message: str, token: str, private: bool = False, revision: str | None = None
) -> str:
    """Create ``repo_id`` if needed (private if asked; an existing repo keeps its visibility), create the
    branch ``revision`` if needed, and upload every file of ``folder`` in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub_endpoint(), token=token)
    with hub_errors(f"uploading to {repo_id}", repo_id, revision, token, write=True):
        operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in sorted(folder.iterdir())]
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    return info.commit_url


def download(repo_id: str, revision: str, filenames: tuple[str, ...]) -> Path:
    """Download (or find in the cache) files of a Hub repo; returns the snapshot folder.

    With ``HF_HUB_OFFLINE=1`` only the cache (``HF_HUB_CACHE``) is read."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline, cache_dir = env.hub_offline(), env.hub_cache()
    paths = []
    for name in filenames:
        try:
            with hub_errors(f"downloading {repo_id}/{name}", repo_id, revision, filename=name):
                path = hf_hub_download(
                    repo_id,
                    name,
                    revision=revision,
                    cache_dir=cache_dir,
                    endpoint=hub_endpoint(),
                    local_files_only=offline,
                )
        except LocalEntryNotFoundError:  # a cache miss that no request was made for; hub_errors words the others
            why = "HF_HUB_OFFLINE is set" if offline else f"{hub_endpoint()} was not asked"
            raise LwzooError(
                f"{repo_id}/{name} is not in the Hugging Face cache ({cache_dir}) and {why}; "
                "download it once with network, or use a local export folder"
            ) from None
        paths.append(Path(path))
    return paths[0].parent


@contextmanager
def hub_errors(
    doing: str,
    repo_id: str,
    revision: str | None = None,
    token: str | None = None,
    filename: str | None = None,
    write: bool = False,
) -> Iterator[None]:
    """Run a Hub call; what huggingface_hub or httpx2 raises leaves as one LwzooError line.

    ``doing`` completes "... while {doing}"; ``write`` says the token needs write access. Exceptions it
    cannot name (bugs) pass unchanged, and so does the cache miss of an offline download (no cause),
    which :func:`download` words."""
    try:
        yield
    except LwzooError:
        raise
    except Exception as e:
        message = hub_error_message(e, doing, repo_id, revision, filename, write)
        if message is None:
            raise
        raise LwzooError(_redact(message, token)) from None


def hub_error_message(
    e: BaseException,
    doing: str,
    repo_id: str,
    revision: str | None = None,
    filename: str | None = None,
    write: bool = False,
) -> str | None:
    """One line for an exception raised by a Hub call, phrased with its fix; None for one it cannot name."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        FileMetadataError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    if isinstance(e, LocalEntryNotFoundError) and e.__cause__ is None:
        return None  # a cache miss with downloads off: the caller knows the cache and says so
    # huggingface_hub wraps the real cause: a failed HEAD in LocalEntryNotFoundError, an LFS upload in RuntimeError.
    if isinstance(e, (LocalEntryNotFoundError, RuntimeError)) and e.__cause__ is not None:
        return hub_error_message(e.__cause__, doing, repo_id, revision, filename, write)
    if isinstance(e, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set, so nothing can be sent to the Hub ({doing}); unset it to go online"
    if isinstance(e, RevisionNotFoundError):
        return (
            f"'{repo_id}' has no revision '{revision}' on {endpoint}; "
            f"use a branch, tag or commit it has ('{repo_id}@main' is the default)"
        )
    if isinstance(e, RepositoryNotFoundError):
        return f"the Hub at {endpoint} has no model repository '{repo_id}' (or it is private: set HF_TOKEN)"
    if isinstance(e, EntryNotFoundError):  # the Hub's 404 for a file; the local cache miss was handled above
        return f"'{repo_id}' has no {filename}; it was not published by lwzoo, or without that file"
    if isinstance(e, HfHubHTTPError):
        return _http_status_message(e, doing, repo_id, endpoint, write)
    if _is_ssl_error(e):
        return (
            f"TLS/SSL failed with {endpoint} while {doing} ({_first_line(_ssl_reason(e))}); check that HF_ENDPOINT "
            "has the right scheme (http or https), and behind a proxy that re-signs TLS, point SSL_CERT_FILE at "
            "its CA bundle"
        )
    if _is_network_error(e):
        return (
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(e).__name__}) while {doing}; "
            "check the network, any proxy (HTTPS_PROXY), or HF_ENDPOINT"
        )
    if isinstance(e, (json.JSONDecodeError, FileMetadataError)) or (
        isinstance(e, ValueError) and any(m in str(e) for m in _MALFORMED)
    ):
        what = "an answer that is not JSON" if isinstance(e, json.JSONDecodeError) else _first_sentence(str(e))
        return (
            f"the server at {endpoint} is not answering as a Hugging Face Hub while {doing} ({what}); "
            "check HF_ENDPOINT, and any proxy or captive portal (a sign-in page) between you and the Hub"
        )
    if isinstance(e, OSError):  # what is left is this machine's own: a file, a folder, the disk
        where = f" ('{e.filename}')" if e.filename else ""
        return (
            f"{doing} failed on this machine, not at the Hub: {e.strerror or e}{where}; "
            "check that path (permissions, free space) and try again"
        )
    return None


def _http_status_message(e, doing: str, repo_id: str, endpoint: str, write: bool) -> str:
    status = e.response.status_code if e.response is not None else 0
    said = _first_line(e.server_message or (e.response.reason_phrase if e.response is not None else ""))
    if status in (401, 403):
        return (
            f"the token was refused by the Hub at {endpoint} (HTTP {status}) while {doing}; set HF_TOKEN (or run "
            f"`hf auth login`) with a valid token that has {'write' if write else 'read'} access to '{repo_id}'"
        )
    if status == 429:
        return f"the Hub at {endpoint} is rate-limiting this machine (HTTP 429) while {doing}; wait a while and retry"
    if status >= 500:
        return (
            f"the Hub at {endpoint} failed with HTTP {status} while {doing} ({said}); "
            "this is the Hub's side: try again later"
        )
    return f"the Hub at {endpoint} refused {doing} (HTTP {status}): {said}"


def _chain(e: BaseException) -> Iterator[BaseException]:
    """``e`` and the exceptions it was raised from or during."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _is_ssl_error(e: BaseException) -> bool:
    """A TLS failure: httpx2 raises ConnectError from the ssl.SSLError (a handshake with a plain-HTTP
    server, an unknown certificate authority, an expired certificate)."""
    return any(isinstance(c, ssl.SSLError) for c in _chain(e))


def _ssl_reason(e: BaseException) -> str:
    return next((str(c) for c in _chain(e) if isinstance(c, ssl.SSLError)), str(e))


def _is_network_error(e: BaseException) -> bool:
    """A failure to talk to the server: httpx2's transport errors (httpx's or requests' in other
    huggingface_hub versions, hence the class names) and the socket errors under them. Not any OSError:
    a file this machine cannot read is not the network's fault."""
    return bool({c.__name__ for c in type(e).__mro__} & _NETWORK_ERRORS)


def _first_sentence(text: str) -> str:
    return _first_line(text).split(". ")[0].rstrip(".")


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "no details")


def _redact(message: str, token: str | None) -> str:
    """The message on one line, with every token in play (the one passed, HF_TOKEN, the login's) as ***."""
    import huggingface_hub.errors
    from huggingface_hub import get_token

    no_login = getattr(huggingface_hub.errors, "OIDCError", ())  # huggingface_hub 2.x only
    try:
        login = get_token()
    except no_login:  # HF_OIDC_RESOURCE set and its exchange failing: there is no token to hide
        login = None
    for secret in {token, env.hub_token_env(), login}:
        if secret:
            message = message.replace(secret, "***")
    return " ".join(message.splitlines())


def validate_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if repo_id.count("/") != 1:
        raise LwzooError(f"--repo-id '{repo_id}' must be ORG/NAME (a user or organisation, then the model name)")
    try:
        hf_validate(repo_id)
    except HFValidationError as e:
        raise LwzooError(f"--repo-id '{repo_id}' is not a valid Hub repository id: {e}") from None
