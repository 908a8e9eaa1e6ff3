"""kNN scores, the linear probe and accuracies against independent float64 references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lwzoo.scoring import (
    WEIGHT_DECAY_RANGE,
    WEIGHT_DECAYS,
    _search_weight_decay,
    accuracies,
    fit_linear_probe,
    knn_predict,
    linear_probe,
    select_weight_decay,
    solve_probe,
    standardise,
)


def test_knn_scores_match_a_float64_loop():
    g = torch.Generator().manual_seed(0)
    train, labels = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    query = torch.randn(7, 6, generator=g)
    scores = knn_predict(train, labels, query, 3, k=5, temperature=0.1, chunk=3)  # chunking must not matter
    t = train.double() / train.double().norm(dim=1, keepdim=True)
    for i, q in enumerate(query.double()):
        sims = t @ (q / q.norm())
        top = sims.argsort(descending=True)[:5]
        expected = [sum(math.exp(sims[j].item() / 0.1) for j in top if labels[j] == c) for c in range(3)]
        assert torch.allclose(scores[i].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-4)


def test_accuracies_on_a_constructed_case():
    scores = torch.tensor(
        [[9, 1, 2, 3, 4, 0], [0, 9, 8, 1, 2, 3], [5, 6, 7, 1, 0, 9], [1, 2, 3, 4, 9, 5]], dtype=torch.float32
    )
    labels = torch.tensor([0, 2, 5, 0])
    top1, top5, per_class = accuracies(scores, labels, [f"c{i}" for i in range(6)])
    assert top1 == 50.0  # rows 0 and 2
    assert top5 == 75.0  # row 3's class 0 has the lowest score: outside its top 5
    assert per_class["c0"] == 50.0 and per_class["c2"] == 0.0 and per_class["c5"] == 100.0
    assert math.isnan(per_class["c3"])  # no image of c3
    assert accuracies(scores[:, :3], labels.clamp(max=2), ["a", "b", "c"])[1] is None  # top-5 needs 5 classes


# ---- the linear probe -------------------------------------------------------------------------------------------


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(6, 64, generator=g) * 4
    labels = torch.arange(6).repeat_interleave(100)
    features = centres[labels] + torch.randn(600, 64, generator=g)
    wd, accs = select_weight_decay(features, labels, 6)
    probe = fit_linear_probe(features, labels, 6, wd)
    test_labels = torch.arange(6).repeat_interleave(30)
    test = centres[test_labels] + torch.randn(180, 64, generator=g)
    with torch.no_grad():
        top1, top5, per_class = accuracies(probe(test), test_labels, list("abcdef"))
    assert top1 >= 99.0 and top5 == 100.0 and min(per_class.values()) >= 95.0
    assert set(WEIGHT_DECAYS) <= set(accs) and wd in accs  # the grid, grown while an end of it wins


def test_linear_probe_is_the_regularised_optimum():
    """At the L-BFGS solution the gradient of mean CE + wd/2 ||W||^2 vanishes."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(200, 8, generator=g), torch.randint(0, 3, (200,), generator=g)
    probe = fit_linear_probe(x, y, 3, weight_decay=1e-2)
    probe.linear.requires_grad_(True)
    loss = F.cross_entropy(probe(x), y) + 0.5 * 1e-2 * probe.linear.weight.square().sum()
    grads = torch.autograd.grad(loss, list(probe.linear.parameters()))
    assert max(gr.abs().max().item() for gr in grads) < 1e-4


def newton_probe(
    x: np.ndarray, y: np.ndarray, num_classes: int, wd: float, standardise: bool = True
) -> tuple[np.ndarray, np.ndarray, float]:
    """The probe's optimum by damped Newton in float64 numpy, run until the gradient is at rounding level: a
    different algorithm, precision and library from lwzoo's. Returns W (C, D), b (C,) and the loss."""
    z = (x - x.mean(0)) / x.std(0, ddof=1) if standardise else x
    n, d = z.shape
    z1 = np.hstack([z, np.ones((n, 1))])  # N x (D+1): the bias is the last column of theta
    onehot = np.eye(num_classes)[y]
    penalty = np.ones((num_classes, d + 1))
    penalty[:, -1] = 0  # the bias is not penalised

    def loss_grad_hess(theta):
        logits = z1 @ theta.T
        logp = logits - logits.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        p = np.exp(logp)
        loss = -(onehot * logp).sum() / n + 0.5 * wd * (penalty * theta**2).sum()
        grad = (p - onehot).T @ z1 / n + wd * penalty * theta
        hess = np.zeros((num_classes, d + 1, num_classes, d + 1))
        for i in range(n):  # sum_n (diag(p_n) - p_n p_n^T) (x) z1_n z1_n^T / N
            hess += np.einsum("ab,c,e->acbe", np.diag(p[i]) - np.outer(p[i], p[i]), z1[i], z1[i]) / n
        hess = hess.reshape(grad.size, grad.size) + np.diag(wd * penalty.ravel())
        return loss, grad, hess

    theta = np.zeros((num_classes, d + 1))
    for _ in range(100):
        loss, grad, hess = loss_grad_hess(theta)
        if np.abs(grad).max() < 1e-13:
            break
        step = (np.linalg.pinv(hess) @ grad.ravel()).reshape(theta.shape)  # pinv: softmax's shared shift of b
        t = 1.0
        while loss_grad_hess(theta - t * step)[0] > loss and t > 1e-8:
            t /= 2
        theta = theta - t * step
    return theta[:, :-1], theta[:, -1], loss


def probe_loss(probe, x: torch.Tensor, y: torch.Tensor, wd: float) -> float:
    """The probe's objective at its own weights, in float64."""
    w, b = probe.linear.weight.detach().double(), probe.linear.bias.detach().double()
    logits = F.linear((x.double() - probe.mean.double()) / probe.std.double(), w, b)
    return (F.cross_entropy(logits, y) + 0.5 * wd * w.square().sum()).item()


@pytest.mark.parametrize("wd", [1e-3, 1e-1])
def test_linear_probe_matches_a_float64_newton_solve(wd):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 6, generator=g) * torch.tensor([1.0, 5.0, 0.2, 1.0, 30.0, 1.0]) + 2.0
    y = torch.bucketize(x[:, 0] + x[:, 1] / 5 + torch.randn(300, generator=g), torch.tensor([1.5, 3.3]))  # 3 classes
    want_w, want_b, want_loss = newton_probe(x.double().numpy(), y.numpy(), 3, wd)
    probe = fit_linear_probe(x, y, 3, wd, fine=True)
    # The float64 finish stops at max |gradient| <= 1e-6: within ~1e-5 of the optimum (measured), 1e-4 allowed.
    np.testing.assert_allclose(probe.linear.weight.detach().double().numpy(), want_w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probe.linear.bias.detach().double().numpy(), want_b - want_b.mean(), atol=1e-4)
    assert probe_loss(probe, x, y, wd) == pytest.approx(want_loss, rel=1e-6)
    # The float32 solve alone (the probe lwzoo reports) stops at max |gradient| <= 1e-4.
    z, _, _ = standardise(x)
    w32, b32 = solve_probe(z, y, 3, wd)
    np.testing.assert_allclose(w32.double().numpy(), want_w, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(b32.double().numpy(), want_b - want_b.mean(), atol=1e-3)


def test_linear_probe_warm_start_reaches_the_same_optimum():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(400, 10, generator=g), torch.randint(0, 4, (400,), generator=g)
    z, _, _ = standardise(x)
    # to the float64 optimum, a warm start lands where a cold one does
    cold = solve_probe(z, y, 4, 1e-3, fine=True)
    warm = solve_probe(z, y, 4, 1e-3, start=solve_probe(z, y, 4, 1e-1), fine=True)
    for a, b in zip(cold, warm, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the float32 solves alone (max |gradient| <= 1e-4) agree to the float32 solve's accuracy (as against Newton)
    warm32 = solve_probe(z, y, 4, 1e-3, start=solve_probe(z, y, 4, 1e-1))
    for a, b in zip(solve_probe(z, y, 4, 1e-3), warm32, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)


def test_weight_decay_search_solves_move_to_their_own_optimum():
    """A warm start one decade down begins with max |gradient| ~ 0.9 wd max|W|, here under 1e-3: each search
    solve must still get nearer its own optimum (float64 Newton on the same fit split) than it started."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(400, 8, generator=g)
    y = (x[:, 0] + 0.7 * x[:, 1] + 2.0 * torch.randn(400, generator=g) > 0).long()  # max |W*| ~ 0.34
    z, _, _ = standardise(x)
    _, _, solutions = _search_weight_decay(z, y, 2, (1e-2, 1e-3, 1e-4), seed=0)
    fit = torch.randperm(400, generator=torch.Generator().manual_seed(0))[400 // 5 :]  # as the search splits
    optimum = {
        wd: newton_probe(z[fit].double().numpy(), y[fit].numpy(), 2, wd, standardise=False)[0] for wd in solutions
    }
    decades = sorted(solutions, reverse=True)
    assert 1e-4 in decades  # the weakest decade was solved (held-out accuracy ties, so the descent went on)
    for start, wd in zip(decades[:-1], decades[1:], strict=True):
        error = np.abs(solutions[wd][0].double().numpy() - optimum[wd]).max()
        moved = np.abs(optimum[start] - optimum[wd]).max()
        assert error < 0.5 * moved, (wd, error, moved)


def correlated_noise_features(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart only by x0 - x1: x0 = s + e, x1 = e with s = +-1 and a shared e ~ N(0, 3^2).

    The class means differ in x0 alone, so a strongly regularised probe (W ~ the mean difference) is near
    chance (about 63%), while a weakly regularised one learns x0 - x1 and separates the classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    e = 3 * torch.randn(n, generator=g)
    return torch.stack([2.0 * y - 1 + e, e], dim=1), y


def test_weight_decay_grid_grows_past_a_winning_edge():
    x, y = correlated_noise_features(1000, seed=5)
    wd, accs = select_weight_decay(x, y, 2, grid=(10.0, 100.0))
    tried = sorted(accs)
    assert tried[-2:] == [10.0, 100.0] and len(tried) > 2, accs  # grown downwards, a decade at a time
    assert all(b / a == pytest.approx(10) for a, b in zip(tried[:-1], tried[1:], strict=True)), tried
    assert wd < 10.0 and tried[0] < wd < tried[-1], accs  # the winner is inside the grown grid
    assert accs[wd] > accs[100.0] + 20, accs


def test_weight_decay_grid_grows_upwards_within_its_bound():
    # A weak signal spread over 150 features, 200 images to fit: the less the probe trusts single features
    # (the larger wd, the nearer W to the class-mean difference), the better, up to a point.
    g = torch.Generator().manual_seed(1)
    y = torch.arange(2).repeat(125)
    x = torch.randn(250, 150, generator=g) + 0.15 * (2 * y[:, None] - 1)
    wd, accs = select_weight_decay(x, y, 2, grid=(1e-5, 1e-4))
    tried = sorted(accs)
    assert tried[:2] == [1e-5, 1e-4] and tried[-1] > 1e-4 and tried[-1] <= WEIGHT_DECAY_RANGE[1], accs
    assert tried[0] < wd < tried[-1] and accs[wd] > accs[1e-5] + 5, accs
    _, at_bound = select_weight_decay(x, y, 2, grid=(WEIGHT_DECAY_RANGE[1],))
    assert list(at_bound) == [WEIGHT_DECAY_RANGE[1]]  # a winning edge at the bound stays the edge


def test_weight_decay_search_stops_one_decade_past_the_peak():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(2).repeat(125)
    x = torch.randn(250, 150, generator=g) + 0.15 * (2 * y[:, None] - 1)  # as above: strong weight decay wins
    _, accs = select_weight_decay(x, y, 2)
    grid = sorted(WEIGHT_DECAYS, reverse=True)
    descent = [wd for wd in grid if wd in accs]
    assert descent == grid[: len(descent)] and len(descent) < len(grid), accs  # the weakest decades: never solved
    held = [accs[wd] for wd in descent]
    assert held[-1] < max(held[:-1]) and held[:-1] == sorted(held[:-1]), accs  # it stopped at the first fall


def test_linear_probe_chooses_its_weight_decay_on_training_features_only():
    """linear_probe sees only training features; the held-out fifth is a fixed function of the seed."""
    x, y = correlated_noise_features(500, seed=7)
    probe, wd, accs = linear_probe(x, y, 2, seed=0)
    assert (wd, accs) == select_weight_decay(x, y, 2, seed=0)
    assert (probe(x).argmax(1) == y).float().mean() > 0.95
    _, wd_given, accs_given = linear_probe(x, y, 2, weight_decay=0.5)
    assert wd_given == 0.5 and accs_given == {}
