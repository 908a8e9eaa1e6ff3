import itertools
import math
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lwzoo.engine import alpha_as_tensor
from lwzoo.errors import LwzooError
from lwzoo.losses import (
    FIXED_TOPK,
    GRADED_SPLITS,
    SMOOTHING_KINDS,
    SmoothedInfoNCE,
    infonce_logits,
    positive_fit,
    smoothed_infonce,
    smoothed_targets,
    smoothing_weights,
)
from lwzoo.recipe import LossCfg, load_recipe
from lwzoo.schedules import alpha_at


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def reference_targets(q: np.ndarray, queue: np.ndarray, alpha: float, topk: int | None) -> np.ndarray:
    """The paper's target, one query at a time, in float64 with numpy."""
    n, k = len(q), len(queue)
    y = np.zeros((n, 1 + k))
    for i in range(n):
        y[i, 0] = 1.0 - alpha
        sims = queue @ q[i]
        chosen = np.arange(k) if topk is None else np.argsort(-sims, kind="stable")[:topk]
        y[i, 1 + chosen] += alpha / len(chosen)
    return y


def reference_loss(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float, alpha: float, topk: int | None) -> float:
    """-1/N sum_i sum_c y_ic log softmax(z_i)_c, written out with a log-sum-exp per row."""
    y = reference_targets(q, queue, alpha, topk)
    total = 0.0
    for i in range(len(q)):
        z = np.concatenate([[q[i] @ k[i]], queue @ q[i]]) / t
        log_softmax = z - (z.max() + math.log(np.exp(z - z.max()).sum()))
        total -= float((y[i] * log_softmax).sum())
    return total / len(q)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.1, 0.3, 0.9])
@pytest.mark.parametrize("topk", [1, 5, 17, None])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.2, 1.0])
def test_matches_float64_reference(alpha, topk, temperature):
    q, k, queue = unit(8, 16, 0), unit(8, 16, 1), unit(40, 16, 2)
    got = smoothed_infonce(q, k, queue, temperature, alpha, topk).item()
    want = reference_loss(q.double().numpy(), k.double().numpy(), queue.double().numpy(), temperature, alpha, topk)
    assert got == pytest.approx(want, rel=2e-5, abs=1e-5)


def test_alpha_zero_is_cross_entropy():
    q, k, queue = unit(16, 32, 3), unit(16, 32, 4), unit(100, 32, 5)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], dim=1) / 0.1
    ce = F.cross_entropy(logits, torch.zeros(16, dtype=torch.long))
    assert torch.equal(smoothed_infonce(q, k, queue, 0.1, 0.0, 5), ce)
    # the target-weighted path agrees with cross-entropy as alpha -> 0
    assert smoothed_infonce(q, k, queue, 0.1, 1e-9, 5).item() == pytest.approx(ce.item(), rel=1e-6)


@pytest.mark.parametrize("alpha,topk", [(0.0, 5), (0.1, 1), (0.1, 5), (0.5, 64), (0.2, None)])
def test_target_rows_sum_to_one(alpha, topk):
    logits = infonce_logits(unit(32, 8, 6), unit(32, 8, 7), unit(64, 8, 8), 0.1)
    y = smoothed_targets(logits, alpha, topk)
    assert torch.allclose(y.sum(1), torch.ones(32), atol=1e-6)
    assert torch.allclose(y[:, 0], torch.full((32,), 1 - alpha))
    if topk is not None and alpha > 0:
        assert torch.all((y[:, 1:] > 0).sum(1) == topk)


def test_targets_pick_the_most_similar_queue_keys():
    q = unit(4, 8, 9)
    queue = unit(20, 8, 10)
    queue[7] = q[0]  # the most similar key for query 0 is entry 7
    y = smoothed_targets(infonce_logits(q, unit(4, 8, 11), queue, 0.2), 0.1, 1)
    assert y[0, 1 + 7] == pytest.approx(0.1)


def test_no_gradient_through_neighbour_selection():
    """The gradient is that of -sum(y log softmax(z)) with y held constant."""
    q = unit(6, 12, 12).requires_grad_(True)
    k, queue = unit(6, 12, 13), unit(30, 12, 14)
    loss = smoothed_infonce(q, k, queue, 0.1, 0.2, 4)
    (grad,) = torch.autograd.grad(loss, q)

    q64 = q.detach().double().requires_grad_(True)
    y = torch.from_numpy(reference_targets(q64.detach().numpy(), queue.double().numpy(), 0.2, 4))
    z = torch.cat([(q64 * k.double()).sum(1, keepdim=True), q64 @ queue.double().t()], 1) / 0.1
    ref_loss = -(y * z.log_softmax(1)).sum(1).mean()
    (ref_grad,) = torch.autograd.grad(ref_loss, q64)
    assert torch.allclose(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)
    assert not smoothed_targets(z, 0.2, 4).requires_grad


def test_gradient_reaches_the_query_only():
    q = unit(4, 8, 15).requires_grad_(True)
    k = unit(4, 8, 16).requires_grad_(True)
    queue = unit(10, 8, 17).requires_grad_(True)
    smoothed_infonce(q, k.detach(), queue.detach(), 0.2, 0.1, 3).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None


def test_module_validates_and_forwards():
    with pytest.raises(ValueError, match="temperature"):
        SmoothedInfoNCE(temperature=0)
    with pytest.raises(ValueError, match="smoothing"):
        SmoothedInfoNCE(0.1, smoothing="gaussian")
    crit = SmoothedInfoNCE(0.1, topk=3)
    q, k, queue = unit(4, 8, 18), unit(4, 8, 19), unit(10, 8, 20)
    assert crit(q, k, queue, alpha=0.2) == smoothed_infonce(q, k, queue, 0.1, 0.2, 3)
    with pytest.raises(ValueError, match="alpha"):
        crit(q, k, queue, alpha=1.0)
    uniform = SmoothedInfoNCE(0.1, smoothing="uniform")
    assert uniform(q, k, queue, alpha=0.2) == smoothed_infonce(q, k, queue, 0.1, 0.2, None)


def test_topk_larger_than_queue_is_an_error():
    with pytest.raises(ValueError, match="topk"):
        smoothed_infonce(unit(2, 4, 0), unit(2, 4, 1), unit(3, 4, 2), 0.1, 0.1, 5)


# The authors' other smoothing kinds (lwzoo/losses.py's docstring gives each formula).
KINDS_WITH_K = [
    ("topk", 5),
    ("graded_topk", 5),
    ("graded_topk", 10),
    ("graded_topk", 20),
    ("graded_topk", 30),
    ("geometric_top10", 10),
    ("nearest_negative", 1),
    ("grouped_top20", 20),
]


def reference_rank_weights(kind: str, k: int) -> list[float]:
    """w_1..w_m, the share of alpha the r-th nearest queue key gets, from the docstring's formulas (rule, not table)."""
    if kind == "topk":
        return [1 / k] * k
    if kind == "graded_topk":
        p1, p2 = k // 5, k // 2
        return [
            1 / (2 * p1) if r <= p1 else 1 / (4 * (p2 - p1)) if r <= p2 else 1 / (4 * (k - p2)) for r in range(1, k + 1)
        ]
    if kind == "geometric_top10":
        return [0.5 ** (r - 1) * 0.5 / (1 - 0.5**10) for r in range(1, 11)]
    if kind == "nearest_negative":
        return [1.0]
    if kind == "grouped_top20":
        return [1 / 14] * 7 + [1 / 21] * 7 + [1 / 36] * 6
    raise AssertionError(kind)


def reference_kind_targets(q: np.ndarray, queue: np.ndarray, alpha: float, kind: str, k: int) -> list[list[float]]:
    """y row by row, in float64 with plain loops: the r-th most similar queue key gets alpha * w_r."""
    w = reference_rank_weights(kind, k)
    rows = []
    for i in range(len(q)):
        sims = [float(sum(a * b for a, b in zip(q[i], n, strict=True))) for n in queue]
        order = sorted(range(len(queue)), key=lambda j: -sims[j])
        row = [1.0 - alpha] + [0.0] * len(queue)
        for r, j in enumerate(order[: len(w)]):
            row[1 + j] += alpha * w[r]
        rows.append(row)
    return rows


def reference_kind_loss(q, k, queue, t: float, y: list[list[float]]) -> float:
    total = 0.0
    for i in range(len(q)):
        z = [float(q[i] @ k[i]) / t] + [float(n @ q[i]) / t for n in queue]
        top = max(z)
        log_norm = top + math.log(sum(math.exp(v - top) for v in z))
        total -= sum(yc * (zc - log_norm) for yc, zc in zip(y[i], z, strict=True))
    return total / len(q)


@pytest.mark.parametrize("kind,k", KINDS_WITH_K)
@pytest.mark.parametrize("alpha", [0.1, 0.4, 0.5])
def test_each_kind_matches_float64_reference(kind, k, alpha):
    q, pos, queue = unit(6, 16, 21), unit(6, 16, 22), unit(40, 16, 23)
    q64, pos64, queue64 = q.double().numpy(), pos.double().numpy(), queue.double().numpy()
    want_y = reference_kind_targets(q64, queue64, alpha, kind, k)
    got_y = smoothed_targets(infonce_logits(q, pos, queue, 0.1), alpha, k, kind)
    assert torch.allclose(got_y.double(), torch.tensor(want_y, dtype=torch.float64), rtol=0, atol=1e-7)
    got = smoothed_infonce(q, pos, queue, 0.1, alpha, k, kind).item()
    assert got == pytest.approx(reference_kind_loss(q64, pos64, queue64, 0.1, want_y), rel=2e-5, abs=1e-5)


def test_kind_weights_written_out():
    """The docstring's numbers, by hand: graded k 10 splits at ranks 2 and 5, geometric halves from 0.2002."""
    assert smoothing_weights("graded_topk", 10) == pytest.approx([1 / 4] * 2 + [1 / 12] * 3 + [1 / 20] * 5)
    assert smoothing_weights("graded_topk", 5) == pytest.approx([1 / 2, 1 / 4, 1 / 12, 1 / 12, 1 / 12])
    geometric = smoothing_weights("geometric_top10", None)
    assert 0.4 * geometric[0] == pytest.approx(0.2 * 1024 / 1023) and geometric[1] == pytest.approx(geometric[0] / 2)
    assert smoothing_weights("grouped_top20", 3) == pytest.approx([1 / 14] * 7 + [1 / 21] * 7 + [1 / 36] * 6)
    assert smoothing_weights("nearest_negative", 99) == (1.0,) and smoothing_weights("uniform", 5) is None
    assert sorted(GRADED_SPLITS) == [5, 10, 20, 30]


@pytest.mark.parametrize("kind,k", KINDS_WITH_K)
def test_kind_weights_sum_to_one_and_fall_with_rank(kind, k):
    w = smoothing_weights(kind, k)
    assert sum(w) == pytest.approx(1.0, abs=1e-12) and len(w) == FIXED_TOPK.get(kind, k)
    assert all(a >= b for a, b in itertools.pairwise(w))  # a nearer key never gets less than a farther one
    if kind in ("graded_topk", "grouped_top20"):
        assert len(set(w)) == 3  # three groups, each key's weight below the group before's


def test_nearest_negative_is_topk_one_at_half():
    logits = infonce_logits(unit(8, 8, 24), unit(8, 8, 25), unit(30, 8, 26), 0.1)
    assert torch.equal(smoothed_targets(logits, 0.5, None, "nearest_negative"), smoothed_targets(logits, 0.5, 1))


def test_graded_topk_outside_its_table_is_an_error():
    with pytest.raises(ValueError, match=r"graded_topk is defined for topk in \[5, 10, 20, 30\], got 7"):
        SmoothedInfoNCE(0.1, topk=7, smoothing="graded_topk")
    with pytest.raises(ValueError, match="smoothing must be one of"):
        smoothed_targets(torch.zeros(2, 5), 0.1, 3, "gaussian")


@pytest.mark.parametrize("kind,k", KINDS_WITH_K + [("uniform", 5)])
def test_module_forwards_every_kind_and_its_fit_reuses_the_logits(kind, k):
    crit = SmoothedInfoNCE(0.2, topk=k, smoothing=kind)
    q, pos, queue = unit(5, 8, 27), unit(5, 8, 28), unit(32, 8, 29)
    want = smoothed_infonce(q, pos, queue, 0.2, 0.3, None if kind == "uniform" else k, kind)
    assert crit(q, pos, queue, alpha=0.3) == want
    loss, fit = crit.loss_and_fit(q, pos, queue, alpha=0.3)
    assert loss == want and torch.equal(fit, positive_fit(infonce_logits(q, pos, queue, 0.2)))
    assert crit.topk == (None if kind == "uniform" else k) and kind in repr(crit)


@pytest.mark.parametrize("kind,k", KINDS_WITH_K)
def test_compiled_steps_loss_is_linear_in_alpha_for_every_kind(kind, k):
    """alpha_as_tensor's lerp between alpha 0 and 1 is the loss at alpha, for each kind's target."""
    crit = SmoothedInfoNCE(0.1, topk=k, smoothing=kind)
    q, pos, queue = unit(6, 8, 30), unit(6, 8, 31), unit(32, 8, 32)
    for alpha in (0.0, 0.25, 0.4, 0.5):
        loss, fit = alpha_as_tensor(crit)(q, pos, queue, torch.tensor(alpha))
        eager_loss, eager_fit = crit.loss_and_fit(q, pos, queue, alpha)
        assert loss.item() == pytest.approx(eager_loss.item(), rel=1e-6) and torch.equal(fit, eager_fit)


def test_recipe_smoothing_literal_lists_every_kind():
    assert typing.get_args(typing.get_type_hints(LossCfg)["smoothing"]) == SMOOTHING_KINDS


@pytest.mark.parametrize(
    "overrides,key,fix",
    [
        ({"loss.smoothing": "geometric_top10"}, "loss.topk", "--set loss.topk=10 --set loss.alpha=0.4"),
        ({"loss.smoothing": "geometric_top10", "loss.topk": 10}, "loss.alpha", "--set loss.alpha=0.4"),
        ({"loss.smoothing": "geometric_top10", "loss.topk": 10, "loss.alpha": 0.0}, "loss.alpha", "loss.alpha=0.4"),
        ({"loss.smoothing": "nearest_negative", "loss.alpha": 0.5}, "loss.topk", "--set loss.topk=1"),
        ({"loss.smoothing": "nearest_negative", "loss.topk": 1}, "loss.alpha", "--set loss.alpha=0.5"),
        ({"loss.smoothing": "grouped_top20"}, "loss.topk", "--set loss.topk=20"),
        ({"loss.smoothing": "graded_topk", "loss.topk": 7}, "loss.topk", "one of 5, 10, 20, 30"),
    ],
)
def test_recipe_refuses_a_value_the_kind_would_not_use(overrides, key, fix):
    with pytest.raises(LwzooError) as e:
        load_recipe("mobilenetv3_large", overrides)
    message = str(e.value)
    assert "\n" not in message and f"'{key}' is" in message and fix in message
    assert overrides["loss.smoothing"] in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss.smoothing": "graded_topk", "loss.topk": 30},
        {"loss.smoothing": "geometric_top10", "loss.topk": 10, "loss.alpha": 0.4},
        {"loss.smoothing": "nearest_negative", "loss.topk": 1, "loss.alpha": 0.5},
        {"loss.smoothing": "grouped_top20", "loss.topk": 20, "loss.alpha": 0.3},
        {"loss.smoothing": "uniform", "loss.topk": 7},  # uniform ignores k, as it always has
    ],
)
def test_recipe_accepts_each_kind_with_its_own_values(overrides):
    loss = load_recipe("mobilenetv3_large", overrides).loss
    assert {f"loss.{k}": v for k, v in vars(loss).items() if f"loss.{k}" in overrides} == overrides


def test_fixed_mass_kinds_are_off_through_warmup():
    """geometric_top10 fixes 0.6 on the positive only once alpha's schedule lets it: 1.0 through warmup."""
    r = load_recipe("mobilenetv3_large", {"loss.smoothing": "geometric_top10", "loss.topk": 10, "loss.alpha": 0.4})
    logits = infonce_logits(unit(4, 8, 33), unit(4, 8, 34), unit(20, 8, 35), 0.2)
    for step, positive in ((0, 1.0), (99, 1.0), (100, 0.6), (500, 0.6)):
        alpha = alpha_at(step, 1000, 100, r.loss.alpha, r.loss.alpha_schedule)
        y = smoothed_targets(logits, alpha, r.loss.topk, r.loss.smoothing)
        assert torch.allclose(y[:, 0], torch.full((4,), positive)) and torch.allclose(y.sum(1), torch.ones(4))
