import signal
import subprocess
import sys
import time
import typing
from collections import defaultdict

import numpy as np
import pytest
import typer
from PIL import Image
from typer.models import OptionInfo
from typer.testing import CliRunner

from lwzoo.checkpoint import load_checkpoint
from lwzoo.cli import common
from lwzoo.cli.app import app
from lwzoo.cli.pretrain import NEWEST_RUN
from lwzoo.metrics import read_metrics
from lwzoo.run_folder import CHECKPOINT

from .conftest import TINY, run_cli

SETS = [arg for pair in [*TINY, "optim.warmup_epochs=0.5"] for arg in ("--set", pair)]


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lwzoo: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_help_lists_the_commands_and_options():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "pretrain" in proc.stdout
    proc = run_cli("pretrain", "--help")
    for option in (
        "--recipe",
        "--set",
        "--data",
        "--epochs",
        "--batch-size",
        "--device",
        "--out",
        "--resume",
        "--seed",
    ):
        assert option in proc.stdout, option


def test_tiny_pretrain_through_the_cli(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "pretrain",
        "mobilenetv3_large",
        "--data",
        "builtin:val",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--out",
        str(out),
        *SETS,
    )
    assert proc.returncode == 0, proc.stderr
    assert "recipe:" in proc.stdout and "temperature:" in proc.stdout  # the resolved recipe is printed
    assert "built-in demo set" in proc.stdout and "--data DIR" in proc.stdout
    assert "done: 16 steps" in proc.stdout
    ckpt = load_checkpoint(out / CHECKPOINT)
    assert ckpt["step"] == 16 and ckpt["recipe"]["name"] == "demo"
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"]
    assert len(losses) == 4 and all(np.isfinite(losses))


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["pretrain", "mobilenetv3_large", "--data", "/no/such/folder"], ["does not exist"]),
        (["pretrain", "mobilenetv3_lrg"], ["unknown architecture", "mobilenetv3_large"]),
        (["pretrain", "mobilenetv3_large", "--set", "optim.lrr=0.1"], ["unknown recipe key 'optim.lrr'", "optim.lr"]),
        (["pretrain", "mobilenetv3_large", "--set", "optim.lr=fast"], ["'optim.lr' must be a number", "fast"]),
        (["pretrain", "mobilenetv3_large", "--set", "optim.lr"], ["key=value"]),
        (["pretrain", "mobilenetv3_large", "--recipe", "nope"], ["unknown recipe 'nope'"]),
        (["pretrain", "mobilenetv3_large", "--epochs", "0"], ["train.epochs", "at least 1"]),
        (["pretrain", "mobilenetv3_large", "--device", "cuda:0"], ["no GPU"]),
    ],
)
def test_bad_input_is_one_clean_line(args, fragments):
    assert_clean_error(run_cli(*args, "--device", "cpu") if "--device" not in args else run_cli(*args), *fragments)


def test_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_error(run_cli("pretrain", "mobilenetv3_large", "--data", str(tmp_path / "empty")), "no images found")


def test_resume_of_a_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "checkpoint-last.pt"
    bad.write_bytes(b"\x80\x04 not a checkpoint")
    assert_clean_error(run_cli("pretrain", "mobilenetv3_large", "--resume", str(bad)), "corrupt", str(bad))


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(np.full((12, 12, 3), i * 6, dtype=np.uint8)).save(data / cls / f"{i}.png")
    (data / "a" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    proc = run_cli(
        "pretrain",
        "mobilenetv3_large",
        "--data",
        str(data),
        "--recipe",
        "demo",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
        *SETS,
    )
    assert proc.returncode == 0, proc.stderr
    assert "lwzoo: warning: skipping unreadable image" in proc.stderr and "zz-broken.png" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "skipped 1 unreadable image" in proc.stdout
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["data"]["skipped"] == 1


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lwzoo",
            "pretrain",
            "mobilenetv3_large",
            "--data",
            "builtin:val",
            "--epochs",
            "50",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--out",
            str(out),
            *SETS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, "the run ended or stalled before logging"
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "continue with: lwzoo pretrain mobilenetv3_large --resume" in stdout
    ckpt = load_checkpoint(out / CHECKPOINT)
    assert 0 < ckpt["step"] < ckpt["total_steps"]


def test_bare_resume_continues_the_newest_run(tmp_path):
    first = run_cli(
        "pretrain",
        "mobilenetv3_large",
        "--data",
        "builtin:val",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--until-step",
        "3",
        *SETS,
    )
    assert first.returncode == 0, first.stderr
    assert "paused at step 3/16" in first.stdout
    second = run_cli("pretrain", "mobilenetv3_large", "--resume", "--until-step", "5", "--device", "cpu")
    assert second.returncode == 0, second.stderr
    assert "resume: from step 3" in second.stdout and "paused at step 5/16" in second.stdout


def parse_pretrain(*args: str) -> dict:
    """The values the real ``lwzoo pretrain`` command parses from ``args`` (nothing runs)."""
    command = typer.main.get_command(app).commands["pretrain"]
    return command.make_context("pretrain", list(args)).params


@pytest.mark.parametrize(
    "args,resume",
    [
        (["mobilenetv3_large", "--resume"], NEWEST_RUN),  # alone, last
        (["mobilenetv3_large", "--resume", "--seed", "1"], NEWEST_RUN),  # alone, an option follows
        (["mobilenetv3_large", "--resume", "-q"], NEWEST_RUN),
        (["--resume", "mobilenetv3_large"], NEWEST_RUN),  # alone, ARCH follows
        (["mobilenetv3_large", "--resume", "runs/a/b"], "runs/a/b"),
        (["mobilenetv3_large", "--resume", "ckpt.pt"], "ckpt.pt"),
        (["mobilenetv3_large", "--resume", "myrun"], "myrun"),  # a word that is no arch is a PATH
        (["mobilenetv3_large", "--resume=runs/a/b"], "runs/a/b"),
        (["mobilenetv3_large", "--resume", "runs/a/b", "--seed", "1"], "runs/a/b"),
        (["mobilenetv3_large"], None),
    ],
)
def test_resume_takes_an_optional_value(args, resume):
    params = parse_pretrain(*args)
    assert params["resume"] == resume and params["arch"] == "mobilenetv3_large"
    assert params["seed"] == (1 if "--seed" in args else 0)  # what follows a bare --resume is parsed as itself


def test_a_bare_resume_keeps_out():
    params = parse_pretrain("mobilenetv3_large", "--resume", "--out", "somewhere")
    assert params["resume"] == NEWEST_RUN and str(params["out"]) == "somewhere"


def test_resume_after_a_double_dash_is_no_option():
    with pytest.raises(typer.exceptions.TyperException, match="unexpected extra argument"):
        parse_pretrain("mobilenetv3_large", "--", "--resume")


def command_callbacks() -> dict[str, typing.Callable]:
    """Every command of the app by its full name (``"eval knn"``), and the function that implements it."""
    commands = {info.name: info.callback for info in app.registered_commands}
    for group in app.registered_groups:
        for info in group.typer_instance.registered_commands:
            commands[f"{group.name} {info.name}"] = info.callback
    return commands


def option_definitions(callback: typing.Callable) -> list[OptionInfo]:
    hints = typing.get_type_hints(callback, include_extras=True).values()
    return [meta for hint in hints for meta in getattr(hint, "__metadata__", ()) if isinstance(meta, OptionInfo)]


def long_flag(option: OptionInfo) -> str:
    """Its --name. In ``Annotated[..., typer.Option("--name", ...)]`` the first name sits in ``default``."""
    return next(decl for decl in (option.default, *option.param_decls) if str(decl).startswith("--"))


PRETRAINING = {"pretrain", "zoo build"}
SCORING = {"eval knn", "eval linear"}
SHARED = {
    "DeviceOpt": {*PRETRAINING, *SCORING, "embed", "sweep"},
    "OutOpt": {*PRETRAINING, *SCORING, "export", "publish", "sweep"},
    "QuietOpt": {*PRETRAINING, *SCORING, "export", "publish", "embed", "sweep"},
    "ForceOpt": {"export", "embed"},
    "ImagesOpt": {*PRETRAINING, "sweep"},
    "SetOpt": {*PRETRAINING, "sweep"},
    "EpochsOpt": {*PRETRAINING, "sweep"},
    "TrainBatchOpt": PRETRAINING,
    "SeedOpt": PRETRAINING,
    "UntilStepOpt": PRETRAINING,
    "LabelledDataOpt": SCORING,
    "ValDataOpt": {*SCORING, "zoo build", "sweep"},
    "EvalDataOpt": {"pretrain", "export"},
    "BatchOpt": {*SCORING, "embed"},
    "ImageSizeOpt": {*SCORING, "export"},
}


@pytest.mark.parametrize("alias", sorted(SHARED))
def test_a_shared_option_is_one_object_used_by_every_command_that_has_it(alias):
    option = getattr(common, alias).__metadata__[0]
    users = {name for name, callback in command_callbacks().items() if option in option_definitions(callback)}
    assert users == SHARED[alias]


def test_a_flag_is_defined_twice_only_where_it_means_two_things():
    """One definition per flag, except: --data and --batch-size (pretraining vs scoring, two aliases in common),
    eval linear's own --epochs and --seed (the probe's), embed's own --out (a file, required) and sweep's own
    --image-size (the training size, not the encoder's input)."""
    definitions = defaultdict(set)
    for callback in command_callbacks().values():
        for option in option_definitions(callback):
            definitions[long_flag(option)].add(id(option))
    twice = {flag: len(ids) for flag, ids in definitions.items() if len(ids) > 1}
    assert twice == {"--data": 2, "--batch-size": 2, "--epochs": 2, "--seed": 2, "--out": 2, "--image-size": 2}
    assert set(SHARED) == {name for name in vars(common) if name.endswith("Opt")}  # the table above lists them all


@pytest.mark.parametrize("command", ["", *sorted(command_callbacks()), "eval", "zoo"])
def test_every_help_renders(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: lwzoo" in result.output


def test_a_second_process_on_a_run_folder_is_refused(tmp_path):
    """Two pretrains with one --out, or two --resumes of one run, would overwrite each other's checkpoint and
    interleave metrics rows: the folder's lock lets the first run on and refuses the second in one line."""
    out = tmp_path / "run"
    args = ["pretrain", "mobilenetv3_large", "--data", "builtin:val", "--batch-size", "64", "--device", "cpu"]
    first = subprocess.Popen(
        [sys.executable, "-m", "lwzoo", *args, "--epochs", "50", "--out", str(out), *SETS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (out / CHECKPOINT).exists():  # the first epoch is saved: the run is well under way
            assert first.poll() is None and time.time() < deadline, "the first run ended or stalled"
            time.sleep(0.2)
        before = (out / CHECKPOINT).read_bytes()
        assert_clean_error(run_cli(*args, "--epochs", "50", "--out", str(out), *SETS), "in use by another", "--out")
        assert_clean_error(run_cli("pretrain", "mobilenetv3_large", "--resume", str(out)), "in use by another")
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130
    ckpt = load_checkpoint(out / CHECKPOINT)
    assert ckpt["step"] > 16 and (out / CHECKPOINT).read_bytes() != before
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one writer: no interleaved rows
    resumed = run_cli("pretrain", "mobilenetv3_large", "--resume", str(out), "--until-step", str(ckpt["step"] + 1))
    assert resumed.returncode == 0, resumed.stderr  # the lock died with its process


def test_output_to_a_file_is_plain_lines(tmp_path):
    """Redirected output (nohup, SLURM, CI) gets one line per log window and no carriage-return bar frames."""
    proc = run_cli(
        "pretrain", "mobilenetv3_large", "--data", "builtin:val", "--epochs", "1", "--batch-size", "64",
        "--device", "cpu", "--out", str(tmp_path / "run"), *SETS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout and "\r" not in proc.stderr
    windows = [line for line in proc.stdout.splitlines() if line.startswith("epoch 1/1: ") and "/16 step (" in line]
    assert len(windows) == 4, proc.stdout  # 16 steps, a line every 4 (train.log_every)
    assert windows[-1].startswith("epoch 1/1: 16/16 step (100%)") and "img_s " in windows[-1]
    assert "ETA" in windows[0] and "loss " in windows[0]
    assert "epoch 1/1: loss " in proc.stdout  # the epoch's own line
