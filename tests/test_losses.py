import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lwzoo.losses import SmoothedInfoNCE, infonce_logits, smoothed_infonce, smoothed_targets


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
