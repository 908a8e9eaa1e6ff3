"""The catalogue of bad inputs: each runs through the real CLI entry point and must exit non-zero with one
``lwzoo: error:`` line, no traceback, and no earlier artefact changed.

Cases run in this process (``lwzoo.cli.main``), so seventy of them cost seconds, not seventy interpreter starts;
an exception escaping ``main`` is a traceback a user would have seen, and fails the case. The workspace holds a
real run, a real export and the user's own files, and is hashed before and after every case.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lwzoo.cli import main
from lwzoo.files import RunLock
from lwzoo.run_folder import CHECKPOINT

from .hub_server import FakeHub


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # {name} placeholders are paths in the workspace
    fragments: tuple[str, ...]  # each must appear in the error line
    env: dict[str, str] = field(default_factory=dict)
    lock: str | None = None  # a workspace folder whose run lock another process holds meanwhile
    hub: dict[str, str] | None = None  # run against a loopback Hub answering these faults per route


PRETRAIN = ("pretrain", "mobilenetv3_large", "--device", "cpu")
EMBED_OUT = ("--out", "{fresh}/features.npz")
CASES = [
    # -- data loss ---------------------------------------------------------------------------------------------
    Case("export-force-over-a-run-folder", ("export", "{run}", "--out", "{run}", "--force"), ("replaces only",)),
    Case("export-force-over-user-files", ("export", "{run}", "--out", "{user}", "--force"), ("is not one",)),
    Case("export-force-over-a-file", ("export", "{run}", "--out", "{file}", "--force"), ("is a file",)),
    Case("export-over-an-export", ("export", "{run}", "--out", "{export}"), ("already exists", "--force")),
    Case(
        "export-force-over-an-export-with-user-files",
        ("export", "{run}", "--out", "{export_plus}", "--force"),
        ("did not write (notes.txt)",),
    ),
    Case("pretrain-into-a-folder-in-use", (*PRETRAIN, "--out", "{run}"), ("in use by another",), lock="run"),
    Case("resume-of-a-run-in-use", (*PRETRAIN, "--resume", "{run}"), ("in use by another",), lock="run"),
    # -- tracebacks before -------------------------------------------------------------------------------------
    Case("export-under-a-file", ("export", "{run}", "--out", "{file}/sub"), ("is a file",)),
    Case("export-under-proc", ("export", "{run}", "--out", "/proc/lwzoo-export"), ("cannot write the export",)),
    Case(
        "embed-unknown-device",
        ("embed", "{export}", "{images}", *EMBED_OUT, "--backend", "torch", "--device", "foo"),
        ("unknown device 'foo'",),
    ),
    Case(
        "embed-cuda-without-a-gpu",
        ("embed", "{export}", "{images}", *EMBED_OUT, "--backend", "torch", "--device", "cuda"),
        ("no GPU",),
    ),
    # -- wrong or impossible advice before ---------------------------------------------------------------------
    Case("infinite-lr", (*PRETRAIN, "--set", "optim.lr=inf"), ("'optim.lr' must be a finite number",)),
    Case("nan-lr", (*PRETRAIN, "--set", "optim.lr=.nan"), ("'optim.lr' must be a finite number",)),
    Case("absurd-lr", (*PRETRAIN, "--set", "optim.lr=1000"), ("'optim.lr' is 1000.0", "(0, 10]")),
    Case("tiny-temperature", (*PRETRAIN, "--set", "moco.temperature=1e-30"), ("'moco.temperature'", "0.01")),
    Case("until-step-0", (*PRETRAIN, "--until-step", "0"), ("--until-step must be at least 1",)),
    Case("resume-before-the-first-save", (*PRETRAIN, "--resume", "{unsaved}"), ("no checkpoint yet", "without")),
    Case("invalid-repo-id", ("embed", "bad//repo", "{images}", *EMBED_OUT), ("not a valid Hub repo id",)),
    Case(
        "unpublished-zoo-name",
        ("embed", "effnet_b0-smoothed", "{images}", *EMBED_OUT),
        ("not published", "lwzoo zoo build effnet_b0-smoothed --data DIR"),
    ),
    # -- silent damage before ----------------------------------------------------------------------------------
    Case("eval-of-a-damaged-export", ("eval", "knn", "{export_bad_sha}"), ("does not match the sha256",)),
    Case(
        "dry-run-of-a-damaged-export",
        ("publish", "{export_bad_sha}", "--repo-id", "me/x", "--dry-run", "--out", "{fresh}/hub"),
        ("sha256",),
    ),
    # -- leftovers before --------------------------------------------------------------------------------------
    Case(
        "malformed-recipe-yaml",
        (*PRETRAIN, "--recipe", "{bad_yaml}"),
        ("is not valid YAML: line 3, column 6", "flow mapping from line 2"),
    ),
    # -- the other raw tracebacks ----------------------------------------------------------------------
    Case("eval-of-a-checkpoint-missing-a-key", ("eval", "knn", "{ckpt_missing}"), ("is missing 'model'",)),
    Case("export-of-a-checkpoint-missing-a-key", ("export", "{ckpt_missing}"), ("is missing 'model'",)),
    Case("resume-of-a-checkpoint-missing-a-key", (*PRETRAIN, "--resume", "{ckpt_missing}"), ("is missing 'model'",)),
    # -- every other raise site a user reaches -----------------------------------------------------------------
    Case("unknown-arch", ("pretrain", "mobilenetv3_lrg"), ("unknown architecture", "mobilenetv3_large")),
    Case("unknown-recipe-key", (*PRETRAIN, "--set", "optim.lrr=0.1"), ("unknown recipe key 'optim.lrr'",)),
    Case("recipe-value-of-the-wrong-type", (*PRETRAIN, "--set", "optim.lr=fast"), ("must be a number",)),
    Case("set-without-a-value", (*PRETRAIN, "--set", "optim.lr"), ("key=value",)),
    Case("unknown-recipe", (*PRETRAIN, "--recipe", "nope"), ("unknown recipe 'nope'",)),
    Case("zero-epochs", (*PRETRAIN, "--epochs", "0"), ("train.epochs", "at least 1")),
    Case("missing-data-folder", (*PRETRAIN, "--data", "{fresh}/nothing"), ("does not exist",)),
    Case("data-is-a-file", (*PRETRAIN, "--data", "{file}"), ("is a file",)),
    Case("empty-data-folder", (*PRETRAIN, "--data", "{empty}"), ("no images found",)),
    Case("batch-larger-than-data", (*PRETRAIN, "--batch-size", "4096"), ("larger than the 2048 images",)),
    Case("cuda-without-a-gpu", ("pretrain", "mobilenetv3_large", "--device", "cuda"), ("no GPU",)),
    Case("unknown-device", ("pretrain", "mobilenetv3_large", "--device", "tpu"), ("unknown device",)),
    Case("resume-with-a-new-recipe", (*PRETRAIN, "--resume", "{run}", "--epochs", "3"), ("--resume continues",)),
    Case("resume-of-another-arch", ("pretrain", "effnet_b0", "--resume", "{run}"), ("is a mobilenetv3_large run",)),
    Case("a-new-run-over-a-run", (*PRETRAIN, "--out", "{run}"), ("already holds a run", "--resume")),
    Case("resume-of-a-corrupt-checkpoint", (*PRETRAIN, "--resume", "{corrupt}"), ("corrupt",)),
    Case("eval-every-0", (*PRETRAIN, "--eval-every", "0"), ("--eval-every must be at least 1",)),
    Case("eval-every-needs-eval-data", (*PRETRAIN, "--data", "{user}", "--eval-every", "1"), ("--eval-data",)),
    Case("knn-with-k-0", ("eval", "knn", "{run}", "--k", "0"), ("k >= 1",)),
    Case("random-init-of-an-unknown-arch", ("eval", "knn", "random:nope"), ("unknown architecture 'nope'",)),
    Case("random-init-seed-not-an-int", ("eval", "knn", "random:mobilenetv3_large:x"), ("must be an integer",)),
    Case(
        "eval-on-unlabelled-data", ("eval", "knn", "{run}", "--data", "{user}", "--val-data", "{user}"), ("no class",)
    ),
    Case(
        "eval-on-mismatched-classes",
        ("eval", "knn", "{run}", "--data", "{labelled_a}", "--val-data", "{labelled_b}"),
        ("different classes",),
    ),
    Case("eval-without-val-data", ("eval", "linear", "{run}", "--data", "{labelled_a}"), ("--val-data is needed",)),
    Case("eval-of-a-missing-checkpoint", ("eval", "knn", "{fresh}/nope.pt"), ("does not exist",)),
    Case("timm-weights-not-cached", ("eval", "knn", "timm:mobilenetv3_large"), ("not in the local Hugging Face",)),
    Case("export-of-a-random-init", ("export", "random:mobilenetv3_large"), ("takes a pretraining checkpoint",)),
    Case("export-opset-out-of-range", ("export", "{run}", "--out", "{fresh}/e", "--opset", "99"), ("opset 99",)),
    Case("unknown-export-profile", ("export", "{run}", "--out", "{fresh}/e", "--profile", "nope"), ("unknown",)),
    Case(
        "export-image-size-too-small", ("export", "{run}", "--out", "{fresh}/e", "--image-size", "4"), ("at least 8",)
    ),
    Case("export-bad-zoo-name", ("export", "{run}", "--out", "{fresh}/e", "--name", "a/b"), ("plain name",)),
    Case("publish-repo-id-without-org", ("publish", "{export}", "--repo-id", "justaname"), ("ORG/NAME",)),
    Case("publish-invalid-repo-id", ("publish", "{export}", "--repo-id", "a/b/c", "--dry-run"), ("--repo-id",)),
    Case("publish-of-a-run-folder", ("publish", "{run}", "--repo-id", "me/x", "--dry-run"), ("has no config.json",)),
    Case(
        "dry-run-into-user-files",
        ("publish", "{export}", "--repo-id", "me/x", "--dry-run", "--out", "{user}"),
        ("not an assembled lwzoo repository", "holiday-0.jpg"),
    ),
    Case(
        "dry-run-into-a-file",
        ("publish", "{export}", "--repo-id", "me/x", "--dry-run", "--out", "{file}"),
        ("is a file",),
    ),
    Case(
        "publish-without-evaluations",
        ("publish", "{export_no_evals}", "--repo-id", "me/x", "--dry-run", "--out", "{fresh}/hub"),
        ("no evaluation results",),
    ),
    Case(
        "zoo-build-of-an-unknown-name", ("zoo", "build", "effnet_b0-smoothd"), ("not in the zoo", "effnet_b0-smoothed")
    ),
    Case(
        "zoo-build-val-data-without-labels",
        ("zoo", "build", "effnet_b0-smoothed", "--data", "{user}", "--val-data", "{labelled_a}"),
        ("--val-data needs class sub-folders",),
    ),
    Case(
        "publish-to-a-server-answering-html",
        ("publish", "{export}", "--repo-id", "me/x"),
        ("not answering as a Hugging Face Hub", "HF_ENDPOINT"),
        hub={"create": "not-json"},
    ),
    Case(
        "embed-of-a-missing-revision",
        ("embed", "me/encoder@badrev", "{images}", *EMBED_OUT),
        ("has no revision 'badrev'",),
        hub={},
    ),
    Case("unknown-recipe-shown", ("recipes", "nope"), ("unknown recipe 'nope'",)),
    Case("embed-of-a-missing-folder", ("embed", "{export}", "{fresh}/nothing", *EMBED_OUT), ("does not exist",)),
    Case("embed-to-a-non-npz-file", ("embed", "{export}", "{images}", "--out", "{fresh}/f.csv"), (".npz",)),
    Case("embed-over-an-existing-file", ("embed", "{export}", "{images}", "--out", "{file}"), ("--force",)),
    # -- pretrain --init (issue 20) ----------------------------------------------------------------------------
    Case("init-with-resume", (*PRETRAIN, "--resume", "{run}", "--init", "{export}"), ("--init applies to a new run",)),
    Case(
        "init-of-another-arch",
        ("pretrain", "effnet_b0", "--device", "cpu", "--init", "{export}"),
        ("holds mobilenetv3_large weights, not effnet_b0",),
    ),
    Case(
        "init-timm-offline-not-cached",
        (*PRETRAIN, "--init", "timm"),
        ("timm/mobilenetv3_large_100.ra_in1k/model.safetensors", "hf download", "HF_HUB_OFFLINE"),
    ),
    Case("init-of-a-folder-of-photos", (*PRETRAIN, "--init", "{user}"), ("neither an lwzoo export",)),
    Case("init-of-a-missing-source", (*PRETRAIN, "--init", "{fresh}/nope"), ("a file or folder that exists",)),
    Case("init-of-an-unbuilt-zoo-name", (*PRETRAIN, "--init", "mobilenetv3_large-smoothed"), ("not published",)),
    Case("init-of-a-damaged-export", (*PRETRAIN, "--init", "{export_bad_sha}"), ("does not match the sha256",)),
    Case("init-of-a-file-that-is-not-weights", (*PRETRAIN, "--init", "{file}"), ("corrupt or not a PyTorch file",)),
]


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 30, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def workspace(evaluated_export, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("catalogue")
    run = evaluated_export.parent
    places = {"run": run, "export": evaluated_export}
    places["user"] = root / "my-photos"
    for i in range(3):
        _image(places["user"] / f"holiday-{i}.jpg", 60 * i)
    (places["user"] / "notes.txt").write_text("the user's own notes")
    places["images"] = places["user"]
    places["file"] = root / "a-file.npz"
    places["file"].write_bytes(b"someone's data")
    places["empty"] = root / "empty"
    places["empty"].mkdir()
    for name, classes in (("labelled_a", ("cats", "dogs")), ("labelled_b", ("cars", "dogs"))):
        for c in classes:
            for i in range(3):
                _image(root / name / c / f"{i}.png", 30 * i)
        places[name] = root / name
    places["export_plus"] = root / "export-plus"
    shutil.copytree(evaluated_export, places["export_plus"])
    (places["export_plus"] / "notes.txt").write_text("kept here by the user")
    places["export_bad_sha"] = root / "export-bad-sha"
    shutil.copytree(evaluated_export, places["export_bad_sha"])
    weights = bytearray((places["export_bad_sha"] / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (places["export_bad_sha"] / "model.safetensors").write_bytes(bytes(weights))
    places["export_no_evals"] = root / "export-no-evals"
    shutil.copytree(evaluated_export, places["export_no_evals"])
    (places["export_no_evals"] / "evals.json").write_text(json.dumps({"results": []}))
    places["unsaved"] = root / "unsaved-run"
    places["unsaved"].mkdir()
    (places["unsaved"] / "metrics.jsonl").write_text('{"kind": "step", "step": 8, "loss": 5.0}\n')
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    del ckpt["model"]
    places["ckpt_missing"] = root / "missing-key" / CHECKPOINT
    places["ckpt_missing"].parent.mkdir()
    torch.save(ckpt, places["ckpt_missing"])
    places["corrupt"] = root / "corrupt" / CHECKPOINT
    places["corrupt"].parent.mkdir()
    places["corrupt"].write_bytes(b"PK\x03\x04 a truncated zip")
    places["bad_yaml"] = root / "bad.yaml"
    places["bad_yaml"].write_text("base: demo\noptim: {lr: 0.1\ntrain:\n  epochs: 2\n")
    places["root"] = root
    return places


def _snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file (lock files aside: taking a lock is not changing an artefact)."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != RunLock.NAME:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_the_catalogue_holds_every_case_once():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clean_line_and_changes_nothing(case, workspace, tmp_path, monkeypatch, capfd):
    places = {**{k: str(v) for k, v in workspace.items()}, "fresh": str(tmp_path)}
    args = [a.format(**places) for a in case.args]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(**places))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # empty: nothing is ever cached here
    before = _snapshot(workspace["root"], workspace["run"])
    with ExitStack() as stack:
        if case.lock:
            stack.enter_context(RunLock(workspace[case.lock]))
        if case.hub is not None:
            hub = stack.enter_context(FakeHub(tmp_path / "hub"))
            hub.faults.update(case.hub)
            hub.connect(monkeypatch, hub.token)
            (hub.repo_dir("me/encoder")).mkdir(parents=True)
        with pytest.raises(SystemExit) as exited:
            main(args)
    out, err = capfd.readouterr()
    assert exited.value.code not in (0, None), (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lwzoo: error: "), err
    assert "Traceback" not in err + out
    for fragment in case.fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert _snapshot(workspace["root"], workspace["run"]) == before, "an earlier artefact changed"
