import json

import pytest
import torch

from lwzoo.checkpoint import load_checkpoint
from lwzoo.errors import LwzooError
from lwzoo.metrics import read_metrics
from lwzoo.pretrain import pretrain
from lwzoo.progress import Progress
from lwzoo.run_folder import CHECKPOINT

from .conftest import TINY


class Recorder(Progress):
    """A Progress that keeps what the library said."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        self.lines.append(text)


def tiny(tmp_path, name, steps_per_run=None, **kwargs):
    kwargs.setdefault("overrides", [*TINY, "train.epochs=2"])
    kwargs.setdefault("batch_size", 64)
    kwargs.setdefault("data", "builtin:val")
    return pretrain(
        "mobilenetv3_large",
        out=tmp_path / name,
        device="cpu",
        until_step=steps_per_run,
        **kwargs,
    )


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """24 steps straight through (the two-epoch tiny recipe on 768 builtin images), shared below."""
    tmp = tmp_path_factory.mktemp("straight")
    result = pretrain(
        "mobilenetv3_large",
        data="builtin:val",
        out=tmp / "run",
        device="cpu",
        overrides=[*TINY, "train.epochs=2", "train.log_every=2"],
        batch_size=64,
    )
    return result


def test_checkpoint_holds_everything_later_stages_need(straight_run):
    ckpt = load_checkpoint(straight_run.checkpoint)
    assert straight_run.finished and ckpt["step"] == ckpt["total_steps"] == 32
    for key in ("model", "optimizer", "rng", "recipe", "arch", "timm_name", "lwzoo_version", "data", "seed", "epoch"):
        assert key in ckpt, key
    assert ckpt["arch"] == "mobilenetv3_large" and ckpt["timm_name"] == "mobilenetv3_large_100"
    assert ckpt["data"]["classes"] and ckpt["data"]["num_images"] == 1024
    assert "queue.keys" in ckpt["model"] and ckpt["model"]["queue.keys"].shape == (256, 128)
    assert ckpt["recipe"]["augment"]["image_size"] == 16
    assert (straight_run.out_dir / "recipe.yaml").is_file()


def test_loss_is_finite_and_falls(straight_run):
    rows = [r for r in read_metrics(straight_run.out_dir / "metrics.jsonl") if r["kind"] == "step"]
    losses = [r["loss"] for r in rows]
    assert len(rows) == 16 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    epochs = [r for r in read_metrics(straight_run.out_dir / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"lr", "alpha", "momentum", "images_per_s"} <= set(rows[0])


def test_resume_matches_an_uninterrupted_run(tmp_path):
    """N steps straight equal N/2 steps, a resume from the checkpoint, then N/2 more, mid-epoch."""
    overrides = [*TINY, "train.epochs=2", "loss.alpha=0.1", "optim.warmup_epochs=0.5"]
    straight = tiny(tmp_path, "straight", overrides=overrides)
    half = tiny(tmp_path, "resumed", steps_per_run=11, overrides=overrides)
    assert half.step == 11 and not half.finished
    assert load_checkpoint(half.checkpoint)["step"] == 11
    resumed = pretrain("mobilenetv3_large", resume=half.out_dir, device="cpu")
    assert resumed.step == straight.step == 32
    a = load_checkpoint(straight.checkpoint)["model"]
    b = load_checkpoint(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-5, atol=1e-6), key
    steps = [r["step"] for r in read_metrics(resumed.out_dir / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == sorted(set(steps))  # no step logged twice across the resume


def test_seeded_runs_are_reproducible(tmp_path):
    a = tiny(tmp_path, "a", steps_per_run=3)
    b = tiny(tmp_path, "b", steps_per_run=3)
    ma, mb = load_checkpoint(a.checkpoint)["model"], load_checkpoint(b.checkpoint)["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_an_existing_run_needs_resume(tmp_path):
    tiny(tmp_path, "run", steps_per_run=1)
    with pytest.raises(LwzooError, match="already holds a run; add --resume"):
        tiny(tmp_path, "run", steps_per_run=1)


def test_resume_refuses_a_changed_recipe(tmp_path):
    first = tiny(tmp_path, "run", steps_per_run=1)
    with pytest.raises(LwzooError, match="recipe saved in its checkpoint"):
        pretrain("mobilenetv3_large", resume=first.out_dir, epochs=5)


def test_resume_of_another_arch_is_an_error(tmp_path):
    first = tiny(tmp_path, "run", steps_per_run=1)
    with pytest.raises(LwzooError, match="is a mobilenetv3_large run"):
        pretrain("effnet_b0", resume=first.out_dir)


def test_batch_larger_than_data_is_an_error(tmp_path):
    with pytest.raises(LwzooError, match="larger than the 1024 images"):
        tiny(tmp_path, "run", batch_size=2048)


def test_metrics_rows_are_json_and_mirrored_to_tensorboard(straight_run):
    for line in (straight_run.out_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight_run.out_dir / "tensorboard"))
    events.Reload()
    assert "step/loss" in events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("epoch/loss")] == [16, 32]


def test_until_step_must_be_reachable(tmp_path):
    with pytest.raises(LwzooError, match="--until-step must be at least 1"):
        tiny(tmp_path, "zero", steps_per_run=0)
    assert not (tmp_path / "zero").exists()  # refused before the run folder was made
    first = tiny(tmp_path, "run", steps_per_run=3)
    with pytest.raises(LwzooError, match="not beyond the checkpoint's step 3"):
        pretrain("mobilenetv3_large", resume=first.out_dir, until_step=2, device="cpu")


def test_resume_of_a_run_that_never_saved_says_how_to_restart(tmp_path):
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "recipe.yaml").write_text("name: demo\n")
    with pytest.raises(LwzooError, match=r"has no checkpoint yet.*start it again without --resume"):
        pretrain("mobilenetv3_large", resume=dead, device="cpu")


def test_a_fresh_run_drops_a_dead_runs_rows_and_temp_files(tmp_path):
    """A run killed before its first save left metrics rows and a half-written checkpoint; a new run in the
    same folder starts clean."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"kind": "step", "step": 4, "loss": 99.0}) + "\n")
    dead_pid = 2**22 + 12345  # beyond Linux's default pid_max: no live process has it
    (out / f".checkpoint-last.pt.tmp{dead_pid}").write_bytes(b"half a checkpoint")
    result = tiny(tmp_path, "run", steps_per_run=4)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "step"] == [4] and rows[0]["loss"] != 99.0
    assert not list(out.glob(".*.tmp*")) and result.step == 4


def test_a_queue_larger_than_half_the_data_is_capped_and_recorded(tmp_path):
    result = tiny(tmp_path, "run", steps_per_run=1, overrides=[*TINY, "train.epochs=2", "moco.queue_size=4096"])
    recipe = load_checkpoint(result.checkpoint)["recipe"]
    assert recipe["moco"]["queue_size"] == 512  # the largest power of two <= 1024 images / 2
    assert "capped to 512 for 1,024 training images" in recipe["description"]
    assert load_checkpoint(result.checkpoint)["model"]["queue.keys"].shape == (512, 128)
    fits = tiny(tmp_path, "fits", steps_per_run=1, overrides=[*TINY, "train.epochs=2", "moco.queue_size=512"])
    assert load_checkpoint(fits.checkpoint)["recipe"]["moco"]["queue_size"] == 512


def test_fewer_epochs_than_the_warmup_scale_the_warmup(tmp_path, capsys):
    said = Recorder()
    result = pretrain(
        "mobilenetv3_large", data="builtin:val", out=tmp_path / "run", device="cpu", until_step=1, batch_size=64,
        epochs=2, recipe="mobilenetv3_large", overrides=[*TINY], progress=said,
    )  # fmt: skip
    recipe = load_checkpoint(result.checkpoint)["recipe"]
    assert recipe["optim"]["warmup_epochs"] == pytest.approx(5 * 2 / 200)
    assert "optim.warmup_epochs 5 scaled to 0.05" in "\n".join(said.lines)
    assert capsys.readouterr() == ("", "")  # the library itself prints nothing: its caller's Progress says it
    kept = tiny(tmp_path, "kept", steps_per_run=1, overrides=[*TINY, "train.epochs=2", "optim.warmup_epochs=1"])
    assert load_checkpoint(kept.checkpoint)["recipe"]["optim"]["warmup_epochs"] == 1  # the user's own value


def test_a_nan_loss_names_no_checkpoint_that_does_not_exist(tmp_path):
    # Normalising by mean 1e30 and std 1e-30 sends every pixel to -inf in float32: the loss is NaN at once.
    with pytest.raises(LwzooError, match=r"loss became nan at step \d+.*no checkpoint was saved"):
        tiny(
            tmp_path,
            "run",
            overrides=[
                *TINY,
                "train.epochs=2",
                "augment.mean=[1.0e30, 1.0e30, 1.0e30]",
                "augment.std=[1.0e-30, 1.0e-30, 1.0e-30]",
            ],
        )
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_resuming_a_finished_run_does_nothing_and_says_done(straight_run):
    before = straight_run.checkpoint.read_bytes()
    said = Recorder()
    again = pretrain("mobilenetv3_large", resume=straight_run.out_dir, device="cpu", progress=said)
    assert again.finished and again.step == 32 and "done already" in said.lines[-1]
    assert straight_run.checkpoint.read_bytes() == before
