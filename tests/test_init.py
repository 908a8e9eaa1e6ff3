"""``lwzoo pretrain --init SOURCE``: a new run's backbone starts from given weights, checked key by key, and the
source and its sha256 travel with the run into its checkpoint, recipe.yaml, evals.json, export and card."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from lwzoo import evaluate
from lwzoo.archs import create_backbone, get_arch
from lwzoo.checkpoint import load_checkpoint
from lwzoo.errors import LwzooError
from lwzoo.export import export
from lwzoo.files import RunLock
from lwzoo.hub_folder import CARD, CONFIG, EXPORT_REPORT, WEIGHTS, write_card
from lwzoo.init_weights import load_init
from lwzoo.pretrain import pretrain
from lwzoo.progress import Progress
from lwzoo.recipe import load_recipe
from lwzoo.run_folder import CHECKPOINT, EVALS, RECIPE

from .conftest import TINY

MNV3 = get_arch("mobilenetv3_large")


class Recorder(Progress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        self.lines.append(text)


def tiny_run(out, until_step=2, extra=(), **kwargs):
    """A step or two of 16 images at 16 px on the built-in held-out split, with a queue of 32 keys. Key momentum
    1 keeps the key encoder's parameters at their step-0 values, which the first test reads."""
    return pretrain(
        kwargs.pop("arch", "mobilenetv3_large"),
        data="builtin:val",
        out=out,
        device="cpu",
        batch_size=16,
        until_step=until_step,
        overrides=[*TINY, "moco.queue_size=32", "train.epochs=1", "optim.warmup_epochs=0.5", *extra],
        **kwargs,
    )


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backbone_of(model_state: dict, prefix: str = "backbone.") -> dict:
    return {k.removeprefix(prefix): v for k, v in model_state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A two-step run and its export (safetensors only): the weights the runs below start from."""
    root = tmp_path_factory.mktemp("source")
    run = tiny_run(root / "run", seed=7)
    exported = export(run.out_dir, out=root / "export", safetensors=True)
    return run.out_dir, exported.out_dir


@pytest.fixture(scope="module")
def adapted(source, tmp_path_factory):
    """One step of a run started from the export, key momentum 1, with what it said."""
    said = Recorder()
    out = tmp_path_factory.mktemp("adapted") / "run"
    result = tiny_run(out, until_step=1, extra=["moco.momentum=1.0"], init=str(source[1]), progress=said)
    return result, said


def test_step_zero_starts_both_encoders_from_the_export(source, adapted):
    """With key momentum 1 the key encoder keeps its step-0 parameters, which must be the export's exactly; the
    query backbone, one small warmup step on, must sit beside the export and far from a random init."""
    result, _ = adapted
    exported = load_file(str(source[1] / WEIGHTS))
    model = load_checkpoint(result.checkpoint)["model"]
    params = {name for name, _ in create_backbone(MNV3).named_parameters()}
    key = backbone_of(model, "key_encoder.0.")
    assert params and all(torch.equal(key[name], exported[name]) for name in params)

    query, random = backbone_of(model), create_backbone(MNV3).state_dict()
    near = sum((query[n] - exported[n]).abs().mean() for n in params)
    far = sum((random[n] - exported[n]).abs().mean() for n in params)
    assert near < 0.05 * far, (near, far)


def test_the_run_records_its_source_and_sha256(source, adapted):
    result, said = adapted
    expected = sha256(source[1] / WEIGHTS)
    record = load_checkpoint(result.checkpoint)["init"]
    assert record["sha256"] == expected and record["kind"] == "export" and record["source"] == str(source[1])
    assert record["arch"] == "mobilenetv3_large" and record["file"] == str((source[1] / WEIGHTS).resolve())
    assert yaml.safe_load((result.out_dir / RECIPE).read_text())["init"] == record
    header = "\n".join(said.lines)
    assert f"sha256 {expected}" in header and "projector, queue, optimizer and schedules start fresh" in header
    assert "moco.zero_init_residual is not applied" in header


def test_a_resumed_run_does_not_reinitialise(source, adapted, tmp_path):
    """One step, a resume, one more equal two straight steps: the resume kept the trained weights rather
    than loading the source again, and kept the record."""
    straight = tiny_run(tmp_path / "straight", until_step=2, extra=["moco.momentum=1.0"], init=str(source[1]))
    half = tmp_path / "half"
    shutil.copytree(adapted[0].out_dir, half, ignore=shutil.ignore_patterns(RunLock.NAME))
    said = Recorder()
    resumed = pretrain("mobilenetv3_large", resume=half, device="cpu", until_step=2, progress=said)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert resumed.step == 2
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), rtol=1e-5, atol=1e-6), k
    assert b["init"] == load_checkpoint(adapted[0].checkpoint)["init"]
    assert b["init"]["sha256"] == sha256(source[1] / WEIGHTS)
    assert yaml.safe_load((resumed.out_dir / RECIPE).read_text())["init"] == b["init"]
    assert any("resuming from its checkpoint" in line for line in said.lines)


def test_init_with_resume_is_refused(source):
    with pytest.raises(LwzooError, match="--init applies to a new run; --resume continues"):
        pretrain("mobilenetv3_large", resume=source[0], init=str(source[1]), device="cpu")


def test_a_source_of_another_arch_is_refused_before_a_run_folder_exists(source, tmp_path):
    with pytest.raises(LwzooError, match="holds mobilenetv3_large weights, not effnet_b0"):
        tiny_run(tmp_path / "run", arch="effnet_b0", init=str(source[1]))
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_source_gives_its_query_backbone(source):
    run_dir = source[0]
    init = load_init(run_dir, MNV3)
    ckpt_backbone = backbone_of(load_checkpoint(run_dir / CHECKPOINT)["model"])
    assert init.state.keys() == ckpt_backbone.keys()
    assert all(torch.equal(init.state[k], ckpt_backbone[k]) for k in ckpt_backbone)
    assert init.record["kind"] == "checkpoint" and init.record["sha256"] == sha256(run_dir / CHECKPOINT)
    assert init.dropped == ()


def test_a_timm_safetensors_with_a_head_loses_the_head_and_says_so(tmp_path):
    torch.manual_seed(3)
    model = timm.create_model(MNV3.timm_name, num_classes=1000)  # timm's layout for ImageNet weights
    path = tmp_path / "timm-weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    init = load_init(path, MNV3)
    assert sorted(init.dropped) == ["classifier.bias", "classifier.weight"]
    assert init.record["kind"] == "safetensors" and init.record["arch"] is None  # timm's file names no arch
    assert init.record["sha256"] == sha256(path)
    assert all(torch.equal(init.state[k], v) for k, v in model.state_dict().items() if not k.startswith("classifier"))
    said = Recorder()
    tiny_run(tmp_path / "run", until_step=1, init=str(path), progress=said)
    assert any("dropped the source's classifier head (classifier.bias, classifier.weight)" in x for x in said.lines)


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    state = create_backbone(MNV3).state_dict()
    state.pop("conv_stem.weight")
    state["extra.weight"] = torch.zeros(3)
    state["bn1.weight"] = torch.zeros(7)
    path = tmp_path / "odd.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(LwzooError) as error:
        load_init(path, MNV3)
    message = str(error.value)
    assert "missing backbone keys conv_stem.weight" in message and "unexpected keys extra.weight" in message
    assert "bn1.weight (7,) vs (16,)" in message and "\n" not in message


def test_provenance_reaches_export_config_card_and_evals(source, adapted, tmp_path):
    result, _ = adapted
    expected = sha256(source[1] / WEIGHTS)
    labelled = tmp_path / "labelled"
    for i in range(8):
        (labelled / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (30 * i, 200 - 20 * i, 90)).save(labelled / f"class{i % 2}" / f"{i}.png")
    evaluate.knn(result.out_dir, data=labelled, val_data=labelled, device="cpu")
    (row,) = json.loads((result.out_dir / EVALS).read_text())["results"]
    assert row["init"]["sha256"] == expected
    folder = export(result.out_dir, out=tmp_path / "export", safetensors=True).out_dir
    assert json.loads((folder / EXPORT_REPORT).read_text())["init"]["sha256"] == expected
    assert json.loads((folder / CONFIG).read_text())["lwzoo"]["training"]["init"]["sha256"] == expected
    assert yaml.safe_load((folder / RECIPE).read_text())["init"]["sha256"] == expected
    assert json.loads((folder / EVALS).read_text())["results"][0]["init"]["source"] == str(source[1])
    write_card(folder, "me/adapted", require_results=False)
    card = (folder / CARD).read_text()
    assert f"Initialised from `{source[1]}` (export, sha256 `{expected}`)" in card
    assert "| `init." not in card  # said once, in the training data section, not as recipe rows


def test_a_recipe_yaml_with_an_init_record_reads_as_its_recipe(adapted):
    """A run's recipe.yaml can seed another run: its init section is a record, not a training value."""
    recipe = load_recipe(adapted[0].out_dir / RECIPE)
    assert recipe.augment.image_size == 16 and recipe.to_dict() == load_checkpoint(adapted[0].checkpoint)["recipe"]


def test_timm_weights_offline_and_not_cached_name_the_file_and_the_fix(tmp_path):
    """The real CLI, offline, with an empty HF_HOME: one line naming the Hub file and how to get it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # no cache but HF_HOME's
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "LWZOO_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run(
        [sys.executable, "-m", "lwzoo", "pretrain", "mobilenetv3_large", "--init", "timm", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).parent,
    )
    os_env_cache = str(tmp_path / "hf-home" / "hub")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "timm/mobilenetv3_large_100.ra_in1k/model.safetensors" in lines[0] and os_env_cache in lines[0]
    assert "hf download timm/mobilenetv3_large_100.ra_in1k model.safetensors" in lines[0]
    assert not (tmp_path / "runs").exists()
