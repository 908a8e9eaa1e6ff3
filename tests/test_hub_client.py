"""lwzoo against a loopback Hub with huggingface_hub's real client: the LFS upload path, private
repositories, the token kept out of every file and message, and one-line errors for every way the Hub
(or the network, or this machine) can fail a publish or a load."""

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lwzoo
from lwzoo.errors import LwzooError
from lwzoo.hub_client import upload_folder
from lwzoo.publish import publish

from .conftest import run_cli
from .hub_server import FakeHub

REPO = "lwzoo-test/mnv3-hub"
LFS = ["model.onnx", "model.safetensors", "training_curve.png"]  # what the real Hub keeps in LFS
# the Hub folder's text files; the run's records and the export report joined the one layout (issue 17)
REGULAR = ["README.md", "config.json", "evals.json", "export.json", "metrics.jsonl", "recipe.yaml"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A loopback Hub with a fresh random token, this process connected to it with that token."""
    with FakeHub(tmp_path / "hub", token=f"hf_{secrets.token_hex(16)}") as hub:
        hub.connect(monkeypatch, hub.token)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield hub


@pytest.fixture
def backoff_sleeps(monkeypatch):
    """huggingface_hub retries 5xx answers and connection errors five times, sleeping 1+2+4+8+8 s in
    between. The retries are real; the sleeps are recorded instead of waited."""
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    return sleeps


def one_line(excinfo, *secret: str) -> str:
    """The message of a raised LwzooError, checked to be one line, with no chained traceback and no secret."""
    message = str(excinfo.value)
    assert "\n" not in message and excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    for s in secret:
        assert s not in message
    return message


def put_repo(hub: FakeHub, export_dir: Path, repo_id: str = REPO) -> None:
    """A repository on the loopback Hub holding an export's model files, without going through publish."""
    dest = hub.repo_dir(repo_id)
    dest.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(export_dir / name, dest / name)


def make_unreadable(path: Path) -> None:
    """Replace ``path`` by a file that exists but cannot be read, even by root (chmod 000 would not stop
    root): a link to the reading process's memory, whose address 0 is never mapped, so a read fails (EIO)."""
    path.unlink()
    path.symlink_to("/proc/self/mem")


# -- the LFS upload path ------------------------------------------------------------------------------------------


def test_publish_sends_binaries_through_lfs(evaluated_export, hub):
    publish(evaluated_export, REPO)
    assert hub.upload_modes == {**{n: "lfs" for n in LFS}, **{n: "regular" for n in REGULAR}}
    (commit,) = hub.commits
    assert sorted(commit["lfs_files"]) == LFS and sorted(commit["files"]) == sorted(LFS + REGULAR)
    for name in ("model.safetensors", "model.onnx"):
        data = (evaluated_export / name).read_bytes()
        oid = hashlib.sha256(data).hexdigest()
        assert hub.lfs_object(oid) == data  # the bytes that went up the presigned URL
        assert oid in hub.lfs_puts and oid in hub.lfs_verified
        assert (hub.repo_dir(REPO) / name).read_bytes() == data
    assert not any("xet" in path for _, path in hub.requests)
    assert all(method != "PUT" or "X-Amz-Signature=" in path for method, path in hub.requests)

    puts = len(hub.lfs_puts)  # the same weights again: the LFS batch says they are stored, nothing is re-sent
    publish(evaluated_export, "lwzoo-test/mnv3-hub-copy")
    assert len(hub.lfs_puts) == puts and sorted(hub.commits[-1]["lfs_files"]) == LFS
    stored = hub.repo_dir("lwzoo-test/mnv3-hub-copy") / "model.safetensors"
    assert stored.read_bytes() == (evaluated_export / "model.safetensors").read_bytes()


# -- private repositories -----------------------------------------------------------------------------------------


def test_a_private_repo_loads_with_the_token_only(evaluated_export, hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    publish(evaluated_export, REPO, private=True)
    publish(evaluated_export, "lwzoo-test/mnv3-public")
    assert hub.private == {REPO}

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))  # no stored login
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "anonymous-cache"))
    with pytest.raises(LwzooError) as e:
        lwzoo.load(REPO)
    assert f"no model repository '{REPO}' (or it is private: set HF_TOKEN)" in one_line(e, hub.token)
    assert lwzoo.load("lwzoo-test/mnv3-public").feature_dim == 1280  # the refusal is the privacy, not the Hub

    monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one")
    with pytest.raises(LwzooError) as e:
        lwzoo.load(REPO)
    assert "token was refused" in one_line(e, "hf_not_the_right_one")

    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "owner-cache"))
    fx = lwzoo.load(REPO)
    assert fx.feature_dim == 1280 and fx.source == REPO


# -- the token stays out of every file and message ----------------------------------------------------------------


def test_the_token_is_in_no_file_and_no_output(evaluated_export, tmp_path):
    """A private publish and a load, each in its own process as a user runs them, with every folder they
    may write to under tmp_path; then every byte there and every line they printed is searched."""
    export = tmp_path / "export"
    shutil.copytree(evaluated_export, export)
    env_dirs = {"HF_HOME": "hf-home", "HF_HUB_CACHE": "hf-cache", "LWZOO_CACHE": "lwzoo-cache", "TMPDIR": "tmp"}
    env = {key: str(tmp_path / name) for key, name in env_dirs.items()}
    for folder in env.values():
        Path(folder).mkdir()
    with FakeHub(tmp_path / "hub", token=f"hf_{secrets.token_hex(16)}") as hub:
        env.update(hub.client_env(hub.token))
        dry = run_cli("publish", str(export), "--repo-id", REPO, "--dry-run", "--out", str(tmp_path / "out"), env=env)
        pub = run_cli("publish", str(export), "--repo-id", REPO, "--private", env=env)
        assert dry.returncode == 0 and pub.returncode == 0, dry.stderr + pub.stderr
        load = subprocess.run(
            [sys.executable, "-c", f"import lwzoo; print(lwzoo.load({REPO!r}))"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **env},
            cwd=tmp_path,
        )
        assert load.returncode == 0, load.stderr
        assert hub.private == {REPO} and set(hub.auth_headers) == {f"Bearer {hub.token}"}  # it was sent, and used

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    for where in ("export", "out", "hf-cache", "hub"):
        assert any(tmp_path / where in p.parents for p in written), f"nothing written under {where}"
    token = hub.token.encode()
    assert [p for p in written if token in p.read_bytes() or hub.token in str(p)] == []
    for proc in (dry, pub, load):
        assert hub.token not in proc.stdout + proc.stderr


def test_a_token_the_server_echoes_is_masked(evaluated_export, hub):
    hub.faults["create"] = "echo-token"
    with pytest.raises(LwzooError) as e:
        publish(evaluated_export, REPO)
    assert "(HTTP 400)" in one_line(e, hub.token) and "Bearer ***" in str(e.value)


# -- one-line errors: the Hub's answers ---------------------------------------------------------------------------


def test_a_non_json_answer_is_one_line_from_the_cli(evaluated_export, tmp_path):
    with FakeHub(tmp_path / "hub") as hub:
        hub.faults["create"] = "not-json"
        proc = run_cli("publish", str(evaluated_export), "--repo-id", REPO, env=hub.client_env(hub.token))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("lwzoo: error: the server at") and "not answering as a Hugging Face Hub" in line
    assert "check HF_ENDPOINT" in line and hub.token not in proc.stderr + proc.stdout


@pytest.mark.parametrize("route", ["yaml", "preupload", "lfs-batch", "commit"])
def test_non_json_answers_on_every_upload_route(evaluated_export, hub, route):
    hub.faults[route] = "not-json"
    with pytest.raises(LwzooError) as e:
        publish(evaluated_export, REPO)
    assert "not answering as a Hugging Face Hub" in one_line(e, hub.token)
    assert hub.commits == []


def test_a_captive_portal_on_load(evaluated_export, hub):
    put_repo(hub, evaluated_export)
    hub.faults["resolve"] = "not-json"
    with pytest.raises(LwzooError) as e:
        lwzoo.load(REPO)
    message = one_line(e, hub.token)
    assert "not answering as a Hugging Face Hub" in message and "X-Repo-Commit" in message


@pytest.mark.parametrize(("route", "status"), [("create", 500), ("lfs-upload", 503), ("commit", 502)])
def test_server_errors_on_publish(evaluated_export, hub, backoff_sleeps, route, status):
    hub.faults[route] = status
    with pytest.raises(LwzooError) as e:
        publish(evaluated_export, REPO)
    message = one_line(e, hub.token)
    assert f"failed with HTTP {status} while uploading to {REPO}" in message and "try again later" in message
    assert hub.commits == []
    if route == "lfs-upload":  # the presigned PUT is retried before giving up
        assert backoff_sleeps and len([m for m, _ in hub.requests if m == "PUT"]) > len(LFS)


def test_a_server_error_on_load(evaluated_export, hub, backoff_sleeps):
    put_repo(hub, evaluated_export)
    hub.faults["resolve"] = 500
    with pytest.raises(LwzooError) as e:
        lwzoo.load(REPO)
    message = one_line(e, hub.token)
    assert f"failed with HTTP 500 while downloading {REPO}/config.json" in message and "try again later" in message
    heads = [path for method, path in hub.requests if method == "HEAD"]
    assert backoff_sleeps and len(heads) > 1  # huggingface_hub's retries were not turned off


def test_a_missing_revision(evaluated_export, hub):
    put_repo(hub, evaluated_export)
    with pytest.raises(LwzooError) as e:
        lwzoo.load(f"{REPO}@badrev")
    assert f"'{REPO}' has no revision 'badrev'" in one_line(e, hub.token)
    assert lwzoo.load(f"{REPO}@main").feature_dim == 1280


# -- one-line errors: the network and this machine ----------------------------------------------------------------


def test_ssl_errors_on_publish_and_load(evaluated_export, hub, monkeypatch, backoff_sleeps):
    """HTTPS to the plain-HTTP server fails the TLS handshake, as a wrong scheme or a proxy that re-signs does."""
    put_repo(hub, evaluated_export)
    monkeypatch.setenv("HF_ENDPOINT", hub.url.replace("http://", "https://"))
    with pytest.raises(LwzooError) as e:
        publish(evaluated_export, "lwzoo-test/other")
    message = one_line(e, hub.token)
    assert message.startswith("TLS/SSL failed with https://127.0.0.1") and "SSL_CERT_FILE" in message
    with pytest.raises(LwzooError) as e:
        lwzoo.load(REPO)
    assert one_line(e, hub.token).startswith("TLS/SSL failed with https://127.0.0.1")


def test_a_local_failure_is_not_called_a_network_one(evaluated_export, hub, tmp_path):
    folder = tmp_path / "assembled"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    (folder / "model.onnx").write_bytes(b"onnx")
    make_unreadable(folder / "model.onnx")
    with pytest.raises(LwzooError) as e:
        upload_folder(folder, REPO, "upload", hub.token)
    message = one_line(e, hub.token)
    assert "failed on this machine, not at the Hub" in message and "Input/output error" in message
    assert "cannot reach" not in message

    export = tmp_path / "export"
    shutil.copytree(evaluated_export, export)
    make_unreadable(export / "model.onnx")
    with pytest.raises(LwzooError) as e:
        publish(export, REPO)
    message = one_line(e, hub.token)
    assert f"cannot copy '{export / 'model.onnx'}'" in message and "cannot reach" not in message
    assert hub.requests == []  # refused before anything was sent
