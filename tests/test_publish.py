import shutil

import pytest

from lwzoo.errors import LwzooError
from lwzoo.publish import publish

from .conftest import run_cli
from .hub_server import FakeHub

# The Hub folder's one layout: the export's files (weights, ONNX, config, the run's records, the export report)
# plus the card and its training curve.
FILES = [
    "README.md",
    "config.json",
    "evals.json",
    "export.json",
    "metrics.jsonl",
    "model.onnx",
    "model.safetensors",
    "recipe.yaml",
    "training_curve.png",
]


def test_dry_run_assembles_the_exact_file_set(evaluated_export, tmp_path):
    proc = run_cli(
        "publish",
        str(evaluated_export),
        "--repo-id",
        "lwzoo-test/mnv3-demo",
        "--dry-run",
        "--out",
        str(tmp_path / "hub"),
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == FILES
    for name in FILES:
        assert name in proc.stdout
    assert "nothing was uploaded" in proc.stdout
    assert (tmp_path / "hub" / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_without_metrics_is_refused(evaluated_export, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(evaluated_export, bare)
    (bare / "evals.json").unlink()
    with pytest.raises(LwzooError, match="no evaluation results"):
        publish(bare, "lwzoo-test/x", dry_run=True)


@pytest.mark.parametrize("repo_id", ["justaname", "a/b/c", "bad name/model", "org/--x"])
def test_invalid_repo_ids(evaluated_export, repo_id):
    with pytest.raises(LwzooError, match="--repo-id"):
        publish(evaluated_export, repo_id, dry_run=True)


def test_no_token_is_a_clear_error(evaluated_export, tmp_path):
    proc = run_cli(
        "publish",
        str(evaluated_export),
        "--repo-id",
        "lwzoo-test/x",
        env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf-home")},
    )
    assert proc.returncode != 0 and "no Hugging Face token" in proc.stderr and "Traceback" not in proc.stderr


def test_no_network_is_a_clear_error(evaluated_export):
    proc = run_cli(
        "publish",
        str(evaluated_export),
        "--repo-id",
        "lwzoo-test/x",
        env={"HF_TOKEN": "hf_secret_value", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": ""},
    )
    assert proc.returncode != 0 and "cannot reach the Hugging Face Hub" in proc.stderr
    assert "hf_secret_value" not in proc.stderr + proc.stdout


def test_upload_is_one_commit_of_the_assembled_files(evaluated_export, tmp_path, monkeypatch):
    """The real huggingface_hub client against a loopback Hub; the operations it was handed are checked too."""
    from huggingface_hub import CommitOperationAdd, HfApi

    handed = []
    real_create_commit = HfApi.create_commit

    def spy(self, repo_id, operations, **kwargs):
        handed.append(list(operations))
        return real_create_commit(self, repo_id, operations, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", spy)
    with FakeHub(tmp_path / "hub") as hub:
        hub.connect(monkeypatch, token=hub.token)
        result = publish(evaluated_export, "lwzoo-test/mnv3-demo")
        assert len(hub.commits) == 1 and len(handed) == 1
        (ops,) = handed
        assert all(isinstance(op, CommitOperationAdd) for op in ops)
        assert sorted(op.path_in_repo for op in ops) == FILES
        commit = hub.commits[0]
        assert sorted(commit["files"]) == FILES and "lwzoo" in commit["header"]["summary"]
        stored = hub.repo_dir("lwzoo-test/mnv3-demo")
        assert (stored / "model.safetensors").read_bytes() == (evaluated_export / "model.safetensors").read_bytes()
        assert result.commit_url.startswith(hub.url) and set(hub.auth_headers) == {f"Bearer {hub.token}"}
        assert sorted(commit["lfs_files"]) == ["model.onnx", "model.safetensors", "training_curve.png"]


def test_upload_to_a_branch_and_a_refused_token(evaluated_export, tmp_path):
    with FakeHub(tmp_path / "hub") as hub:
        ok = run_cli(
            "publish",
            str(evaluated_export),
            "--repo-id",
            "lwzoo-test/mnv3",
            "--revision",
            "v1",
            env=hub.client_env(token=hub.token),
        )
        assert ok.returncode == 0, ok.stderr
        assert hub.token not in ok.stdout + ok.stderr
        assert hub.commits[-1]["revision"] == "v1" and (hub.repo_dir("lwzoo-test/mnv3", "v1") / "README.md").is_file()
        bad = run_cli(
            "publish",
            str(evaluated_export),
            "--repo-id",
            "lwzoo-test/mnv3",
            env=hub.client_env(token="hf_wrong_secret"),
        )
        assert bad.returncode != 0 and "token was refused" in bad.stderr
        assert "hf_wrong_secret" not in bad.stderr + bad.stdout


def test_publish_local_fills_the_local_zoo(evaluated_export):
    import lwzoo

    result = publish(evaluated_export, "lwzoo-test/demo-local", local=True)
    assert result.local.name == "demo-local" and "demo-local" in {m.name for m in lwzoo.list_models()}
    proc = run_cli("zoo", "list")
    assert "demo-local" in proc.stdout and "effnet_b0-smoothed" in proc.stdout
    assert lwzoo.load("demo-local")(
        lwzoo.load("demo-local").preprocess([__import__("numpy").zeros((40, 40, 3), "uint8")])
    ).shape == (1, 1280)


def test_offline_mode_refuses_to_upload(evaluated_export):
    proc = run_cli(
        "publish", str(evaluated_export), "--repo-id", "lwzoo-test/x", env={"HF_TOKEN": "hf_x", "HF_HUB_OFFLINE": "1"}
    )
    assert proc.returncode != 0 and "HF_HUB_OFFLINE is set" in proc.stderr


def test_a_damaged_model_file_is_refused_and_the_last_folder_kept(evaluated_export, tmp_path, monkeypatch):
    export = tmp_path / "export"
    shutil.copytree(evaluated_export, export)
    out = tmp_path / "hub"
    publish(export, "lwzoo-test/mnv3-demo", dry_run=True, out=out)
    assembled = {p.name: p.read_bytes() for p in out.iterdir()}
    data = bytearray((export / "model.safetensors").read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last weight: still a readable safetensors file
    (export / "model.safetensors").write_bytes(bytes(data))
    proc = run_cli("publish", str(export), "--repo-id", "lwzoo-test/mnv3-demo", "--dry-run", "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"'{export / 'model.safetensors'}' does not match the sha256 its config.json records" in line
    assert "export the run again" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == assembled  # the last good folder is untouched

    (export / "model.safetensors").write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 0x01]))  # repaired
    onnx = bytearray((export / "model.onnx").read_bytes())
    onnx[len(onnx) // 2] ^= 0x01
    (export / "model.onnx").write_bytes(bytes(onnx))
    with FakeHub(tmp_path / "fake-hub") as hub:
        hub.connect(monkeypatch, token=hub.token)
        with pytest.raises(LwzooError, match=r"model\.onnx' does not match the sha256"):
            publish(export, "lwzoo-test/mnv3-demo")
        assert hub.requests == []  # refused before anything was sent
