"""Whether the model fits its positives: the instance accuracy and the positive's softmax mass the training step
reads from the loss's own logits (lwzoo.losses.positive_fit), through the step, the log window and the run."""

import io
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lwzoo.engine import moco_step
from lwzoo.losses import SmoothedInfoNCE, positive_fit
from lwzoo.metrics import read_metrics
from lwzoo.moco import MoCo, QueryEncoder
from lwzoo.pretrain import pretrain
from lwzoo.progress import Console

from .conftest import TINY


def reference_fit(logits: list[list[float]]) -> tuple[float, float]:
    """(instance accuracy, positive mass) with plain float64 loops: a hit is a positive strictly above every key."""
    hits, mass = 0, 0.0
    for z in logits:
        hits += all(z[0] > v for v in z[1:])
        top = max(z)
        mass += math.exp(z[0] - top) / sum(math.exp(v - top) for v in z)
    return hits / len(logits), mass / len(logits)


def reference_fit_of(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> tuple[float, float]:
    q, k, queue = q.double(), k.double(), queue.double()
    return reference_fit([[float(q[i] @ k[i]) / t] + [float(q[i] @ n) / t for n in queue] for i in range(len(q))])


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_positive_fit_on_a_constructed_case():
    """Six queries, two of them hits: a clear win, a win by 1e-3; a loss, a tie, all-equal logits, a far loss."""
    logits = [
        [5.0, 1.0, -2.0, 0.5, 3.0],  # hit
        [2.0, 2.5, 0.0, 1.0, -1.0],  # one key above the positive
        [3.0, 3.0, 1.0, 0.0, 2.0],  # a tie is not "outscores every key"
        [1.001, 1.0, 0.999, -3.0, 0.0],  # hit by 1e-3
        [0.7, 0.7, 0.7, 0.7, 0.7],  # all equal: a miss, mass 1/5
        [-9.0, 0.0, 1.0, 2.0, 3.0],  # far below
    ]
    got = positive_fit(torch.tensor(logits, dtype=torch.float32))
    want_acc, want_mass = reference_fit(logits)
    assert want_acc == pytest.approx(2 / 6)
    assert got.shape == (2,) and got[0].item() == pytest.approx(want_acc, abs=1e-7)
    assert got[1].item() == pytest.approx(want_mass, rel=1e-6)


def test_loss_and_fit_read_the_loss_logits():
    """The fit of the criterion's call is the float64 fit of q.k / T against q.queue / T."""
    q, k, queue = unit(16, 8, 1), unit(16, 8, 2), unit(24, 8, 3)
    k[:5] = q[:5]  # five queries meet their own embedding as the positive: cos 1, above any other key
    crit = SmoothedInfoNCE(0.2, topk=5)
    loss, fit = crit.loss_and_fit(q, k, queue, alpha=0.1)
    acc, mass = reference_fit_of(q, k, queue, 0.2)
    assert acc >= 5 / 16 and fit[0].item() == pytest.approx(acc, abs=1e-7)
    assert fit[1].item() == pytest.approx(mass, rel=1e-5)
    assert loss == crit(q, k, queue, alpha=0.1)


class Recorder:
    """A criterion that records what it was called with and what the real one returned."""

    def __init__(self, criterion: SmoothedInfoNCE) -> None:
        self.criterion, self.calls = criterion, []

    def __call__(self, q, k, queue, alpha):
        loss, fit = self.criterion.loss_and_fit(q, k, queue, alpha)
        self.calls.append((q.detach().clone(), k.clone(), queue.clone(), loss.detach(), fit))
        return loss, fit


def tiny_moco() -> MoCo:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return MoCo(backbone, feature_dim=8, dim=8, mlp_hidden=16, queue_size=32, key_bn_splits=2)


@pytest.mark.parametrize("symmetric", [True, False])
def test_the_step_averages_the_fit_over_both_directions(symmetric):
    model = tiny_moco()
    query = QueryEncoder(model.backbone, model.projector)
    x1, x2 = torch.randn(2, 12, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    record = Recorder(SmoothedInfoNCE(0.1, topk=3))
    loss, fit, keys = moco_step(model, query, record, x1, x2, 0.1, symmetric)
    assert len(record.calls) == 1 + symmetric and len(keys) == 12 * (1 + symmetric)
    references = [
        torch.tensor(reference_fit_of(q, k, queue, 0.1), dtype=torch.float64) for q, k, queue, _, _ in record.calls
    ]
    for (*_, call_fit), reference in zip(record.calls, references, strict=True):
        assert torch.allclose(call_fit.double(), reference, rtol=1e-5, atol=1e-7)
    assert torch.allclose(fit.double(), sum(references) / len(references), rtol=1e-5, atol=1e-7)
    assert loss.item() == pytest.approx(sum(call[3].item() for call in record.calls), rel=1e-6)


# Both views are the whole image (no crop, colour, blur or flip), the key encoder is an exact copy of the query
# encoder at step 1 with its BatchNorm over the whole batch, and the queue starts as random unit vectors: at step 1
# each query meets its own embedding as the positive (cos 1, up to float rounding) against 256 random keys (cos
# below ~0.5 in 128 dimensions), so every one of the 2 x 64 queries is a hit: instance accuracy exactly 1.
SAME_VIEWS = [
    "augment.crop_scale=[1.0, 1.0]",
    "augment.crop_ratio=[1.0, 1.0]",
    "augment.jitter_p=0.0",
    "augment.grayscale_p=0.0",
    "augment.blur_p=0.0",
    "augment.flip_p=0.0",
    "moco.key_bn_splits=1",
    "moco.queue_init=random",
    "moco.symmetric=true",
]


def fit_run(tmp_path, name: str, log_every: int, progress=None):
    out = tmp_path / name
    kwargs = {"progress": progress} if progress is not None else {}
    pretrain(
        "mobilenetv3_large",
        data="builtin:val",
        out=out,
        device="cpu",
        batch_size=64,
        until_step=4,
        overrides=[*TINY, *SAME_VIEWS, "train.epochs=1", "optim.warmup_epochs=0.5", f"train.log_every={log_every}"],
        **kwargs,
    )
    return [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"], out


@pytest.mark.slow
def test_a_run_logs_the_fit_per_window_to_metrics_tensorboard_and_the_progress_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LWZOO_PROGRESS", "lines")
    shown = io.StringIO()
    every_step, out = fit_run(tmp_path, "every_step", 1, Console(shown, counter_file=shown))
    assert [r["step"] for r in every_step] == [1, 2, 3, 4]
    for row in every_step:
        assert 0 <= row["instance_acc"] <= 1 and 0 < row["positive_mass"] <= 1, row
        # a step's accuracy is the mean of two directions' hits over 64 queries each: a multiple of 1/128
        assert row["instance_acc"] * 128 == pytest.approx(round(row["instance_acc"] * 128), abs=1e-4), row
    assert every_step[0]["instance_acc"] == 1.0  # the constructed first step: every positive wins
    # its positive holds exp(1/T) against 256 keys of cos < 0.5 at most: over 1 / (1 + 256 exp(-0.5/T)) = 0.32
    assert every_step[0]["positive_mass"] > 1 / (1 + 256 * math.exp(-0.5 / 0.2))

    # A window's row is the mean of its steps: the same run logged every 2 steps (runs are deterministic per seed).
    pairs, _ = fit_run(tmp_path, "pairs", 2)
    assert [r["step"] for r in pairs] == [2, 4]
    for row, (a, b) in zip(pairs, [every_step[0:2], every_step[2:4]], strict=True):
        for key in ("instance_acc", "positive_mass", "loss"):
            assert row[key] == pytest.approx((a[key] + b[key]) / 2, rel=1e-5), key

    lines = [line for line in shown.getvalue().splitlines() if "inst_acc" in line]
    assert len(lines) == 4 and "inst_acc 100.0%" in lines[0] and "pos_mass 0." in lines[0], shown.getvalue()[-2000:]
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = {tag: [e.value for e in events.Scalars(tag)] for tag in ("step/instance_acc", "step/positive_mass")}
    assert logged["step/instance_acc"] == pytest.approx([r["instance_acc"] for r in every_step])
    assert logged["step/positive_mass"] == pytest.approx([r["positive_mass"] for r in every_step])
