import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from lwzoo import evaluate
from lwzoo.builtin_data import CLASSES
from lwzoo.checkpoint import atomic_save, load_checkpoint
from lwzoo.data import load_images
from lwzoo.errors import LwzooError
from lwzoo.scoring import WEIGHT_DECAYS, accuracies, knn_predict

from .conftest import run_cli


def reference_knn(train, train_y, query, num_classes, k, t):
    """Brute force in float64: every cosine, a full sort, votes one by one."""
    train = train.double().numpy()
    query = query.double().numpy()
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    scores = np.zeros((len(query), num_classes))
    for i, q in enumerate(query):
        sims = train @ q
        for j in np.argsort(-sims, kind="stable")[:k]:
            scores[i, train_y[j]] += np.exp(sims[j] / t)
    return scores


@pytest.mark.parametrize("k,t", [(1, 0.07), (5, 0.1), (20, 0.07), (200, 0.5)])
def test_knn_matches_float64_brute_force(k, t):
    g = torch.Generator().manual_seed(0)
    train, query = torch.randn(150, 12, generator=g), torch.randn(40, 12, generator=g)
    labels = torch.randint(0, 4, (150,), generator=g)
    got = knn_predict(train, labels, query, 4, k=k, temperature=t, chunk=16).double().numpy()
    want = reference_knn(train, labels.numpy(), query, 4, min(k, 150), t)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_top5_only_with_five_classes():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    top1, top5, per_class = accuracies(scores, torch.tensor([0, 2]), ["a", "b", "c"])
    assert (
        top1 == 50.0
        and top5 is None
        and per_class == {"a": 100.0, "b": pytest.approx(float("nan"), nan_ok=True), "c": 0.0}
    )


class ForwardCounter:
    """Counts forward calls of timm backbones through PyTorch's global module hook."""

    def __init__(self, cls_name: str) -> None:
        self.cls_name, self.calls = cls_name, 0

    def __enter__(self):
        self.handle = nn.modules.module.register_module_forward_hook(self.hook)
        return self

    def hook(self, module, args, output):
        if type(module).__name__ == self.cls_name:
            self.calls += 1

    def __exit__(self, *exc):
        self.handle.remove()


def test_second_run_reuses_the_feature_cache(tmp_path):
    def run(spec):
        with ForwardCounter("MobileNetV3") as counter:
            result = evaluate.knn(spec, out=tmp_path, device="cpu")
        return result, counter.calls

    a, first_calls = run("random:mobilenetv3_large")
    assert first_calls == 8 + 4  # built-in train (2,048) and val (1,024) in batches of 256
    b, second_calls = run("random:mobilenetv3_large")
    assert second_calls == 0 and b.features_cached and not a.features_cached
    assert a.top1 == b.top1
    _, other_calls = run("random:mobilenetv3_large:1")
    assert other_calls == 12  # another encoder: nothing reused


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The default demo, exactly as `lwzoo pretrain mobilenetv3_large` runs it (~3 minutes on 2 cores)."""
    from lwzoo.pretrain import pretrain

    return pretrain("mobilenetv3_large", out=tmp_path_factory.mktemp("demo") / "run", device="cpu")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Two steps of a real run: a checkpoint to evaluate, in seconds."""
    from lwzoo.pretrain import pretrain

    return pretrain(
        "mobilenetv3_large", data="builtin:val", out=tmp_path_factory.mktemp("short") / "run", device="cpu",
        until_step=2, batch_size=64, overrides=["train.epochs=1", "optim.warmup_epochs=0.5"],
    )  # fmt: skip


@pytest.mark.slow  # the whole demo (~6 min on 2 cores): `pytest -m slow`
def test_demo_pretraining_beats_random_init(demo_run, tmp_path):
    trained = evaluate.knn(demo_run.out_dir, device="cpu")
    baseline = evaluate.knn("random:mobilenetv3_large", out=tmp_path, device="cpu")
    # measured: 74.2 against 48.7 (benchmarks/RESULTS.md); 10 points is far outside seed noise
    assert trained.top1 > baseline.top1 + 10, (trained.top1, baseline.top1)
    trained_lin = evaluate.linear(demo_run.out_dir, device="cpu")
    baseline_lin = evaluate.linear("random:mobilenetv3_large", out=tmp_path, device="cpu")
    assert trained_lin.top1 > baseline_lin.top1 + 5, (trained_lin.top1, baseline_lin.top1)


def test_results_are_written_and_filed_beside_the_checkpoint(short_run):
    proc = run_cli("eval", "knn", str(short_run.out_dir), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "top-1" in proc.stdout and "top-5" in proc.stdout and "crosshatch" in proc.stdout
    result = json.loads((short_run.out_dir / "eval-knn.json").read_text())
    assert result["protocol"] == "knn" and result["num_val"] == 1024 and len(result["per_class"]) == 10
    registry = json.loads((short_run.out_dir / "evals.json").read_text())
    assert [r["protocol"] for r in registry["results"]].count("knn") == 1
    assert registry["results"][-1]["identity"] == result["identity"]


def test_cli_quiet_and_baseline(tmp_path):
    proc = run_cli(
        "eval",
        "knn",
        "random:mobilenetv3_large:1",
        "--data",
        "builtin:val",
        "--val-data",
        "builtin:val",
        "--baseline",
        "--quiet",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "img/s" not in proc.stderr
    result = json.loads((tmp_path / "eval-knn.json").read_text())
    assert result["baseline"]["encoder"] == "random:mobilenetv3_large" and result["encoder"].endswith(":1")


def test_augmented_probe_runs(tmp_path):
    r = evaluate.linear(
        "random:mobilenetv3_large",
        data="builtin:val",
        val_data="builtin:val",
        augment=True,
        epochs=1,
        out=tmp_path,
        device="cpu",
    )
    assert r.protocol == "linear-augment" and r.num_val == 1024 and r.settings["epochs"] == 1
    # One epoch (4 SGD steps) leaves this probe near chance (measured 11-15% over seeds, batch sizes and lrs), so
    # what is checked is that the reported numbers are one scoring of the 1,024 held-out images: top-1 a whole
    # number of them, the class-count-weighted mean of the per-class accuracies, and inside top-5.
    counts = load_images("builtin:val", 8).labels.bincount(minlength=len(CLASSES))
    weighted = sum(r.per_class[name] * int(n) for name, n in zip(CLASSES, counts, strict=True)) / 1024
    assert r.top1 == pytest.approx(weighted, abs=1e-4) and (r.top1 * 1024 / 100).is_integer()
    assert r.top5 is not None and r.top1 <= r.top5
    assert json.loads((tmp_path / "eval-linear-augment.json").read_text())["top1"] == r.top1


def test_linear_probe_weight_decay_is_chosen_without_the_val_set(tmp_path):
    """The held-out fifth comes from --data: scoring another val set changes what is scored, never the choice."""

    def run(val_data, out):
        return evaluate.linear(
            "random:mobilenetv3_large", data="builtin:val", val_data=val_data, out=tmp_path / out, device="cpu"
        )

    a, b = run("builtin:val", "a"), run("builtin:train", "b")
    assert (a.num_val, b.num_val) == (1024, 2048)
    assert a.settings["held_out_accuracy"] == b.settings["held_out_accuracy"]
    assert a.settings["weight_decay"] == b.settings["weight_decay"] in a.settings["held_out_accuracy"]
    tried = sorted(a.settings["held_out_accuracy"])  # from the grid's strongest, a decade at a time
    steps = [h / w for w, h in zip(tried[:-1], tried[1:], strict=True)]
    assert max(WEIGHT_DECAYS) in tried and steps == pytest.approx([10] * len(steps)), tried
    recorded = json.loads((tmp_path / "a" / "eval-linear.json").read_text())["settings"]  # the searched grid, filed
    assert recorded["weight_decay"] == a.settings["weight_decay"]
    assert {float(wd): acc for wd, acc in recorded["held_out_accuracy"].items()} == a.settings["held_out_accuracy"]


def labelled_folder(root, classes, per_class=6):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), (20 * i) % 256, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_data_without_class_folders_is_an_error(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    with pytest.raises(LwzooError, match="no class sub-folders"):
        evaluate.knn("random:resnet18", data=flat, val_data=flat)


def test_different_class_sets_are_an_error(tmp_path):
    train = labelled_folder(tmp_path / "train", ["cat", "dog"])
    val = labelled_folder(tmp_path / "val", ["cat", "fox"])
    with pytest.raises(LwzooError, match=r"different classes .*'dog'.*'fox'"):
        evaluate.knn("random:resnet18", data=train, val_data=val)


def test_data_without_val_data_is_an_error(tmp_path):
    train = labelled_folder(tmp_path / "train", ["cat", "dog"])
    with pytest.raises(LwzooError, match="--val-data is needed"):
        evaluate.knn("random:resnet18", data=train)


def test_checkpoint_of_an_unknown_arch_is_an_error(tmp_path, short_run):
    ckpt = load_checkpoint(short_run.checkpoint)
    ckpt["arch"] = "vit_giant"
    atomic_save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(LwzooError, match="unknown architecture 'vit_giant'"):
        evaluate.knn(tmp_path / "odd.pt")


def test_timm_weights_missing_locally_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(LwzooError, match="not in the local Hugging Face cache"):
        evaluate.knn("timm:mobilenetv3_large")


def test_timm_weights_from_a_local_cache(tmp_path, monkeypatch):
    """A Hugging Face cache laid out as huggingface_hub writes it, holding (random) weights in timm's names."""
    import timm
    from safetensors.torch import save_file

    cfg = timm.models.get_pretrained_cfg("resnet18")
    snapshot = tmp_path / "hub" / f"models--{cfg.hf_hub_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    torch.manual_seed(0)
    weights = timm.create_model("resnet18", num_classes=1000).state_dict()
    save_file(weights, snapshot / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    r = evaluate.knn("timm:resnet18", data="builtin:val", out=tmp_path / "out", image_size=32, device="cpu")
    assert r.arch == "resnet18" and r.settings["crop_pct"] == cfg.crop_pct and r.settings["image_size"] == 32


def test_pretrain_eval_every_logs_knn(tmp_path):
    from lwzoo.metrics import read_metrics
    from lwzoo.pretrain import pretrain

    from .conftest import TINY

    result = pretrain(
        "mobilenetv3_large",
        data="builtin:val",
        overrides=[*TINY, "train.epochs=2", "optim.warmup_epochs=0.5"],
        batch_size=128,
        eval_every=1,
        out=tmp_path / "run",
        device="cpu",
    )
    evals = [r for r in read_metrics(result.out_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2]
    assert all((r["knn_top1"] * 1024 / 100).is_integer() for r in evals)  # whole images of builtin:val's 1,024
    # The last score is what `lwzoo eval knn` (same k, T and data) gives the saved checkpoint. Its feature cache
    # holds float16, which can flip a near-tie or two (measured: 1 image apart), hence 0.5 points (5 images).
    final = evaluate.knn(result.out_dir, data="builtin:val", val_data="builtin:val", device="cpu")
    assert abs(evals[-1]["knn_top1"] - final.top1) <= 0.5, (evals[-1], final.top1)


def test_eval_every_without_labelled_held_out_data_is_an_error(tmp_path):
    from lwzoo.pretrain import pretrain

    data = labelled_folder(tmp_path / "train", ["cat", "dog"], per_class=40)
    with pytest.raises(LwzooError, match="--eval-every needs --eval-data"):
        pretrain("mobilenetv3_large", data=data, eval_every=1, device="cpu")
