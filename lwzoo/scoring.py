"""Scoring frozen features: weighted kNN class scores, the linear probe and accuracies. Shared by ``lwzoo eval``,
the pretraining kNN monitor and export's int8 check, so each scores the same way.

The linear probe is multinomial logistic regression with an L2 penalty on standardised features z:

    min_{W, b}  -1/N sum_n log softmax(W z_n + b)_{y_n} + wd/2 ||W||^2        W: (C, D), b: (C,)

It is convex, so full-batch L-BFGS reaches the optimum with no learning rate or epoch count to tune; only wd is
a choice, made on a held-out fifth of the training features (never the val set).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

KNN_K = 20
KNN_TEMPERATURE = 0.07


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk: int = 2048,
) -> torch.Tensor:
    """Class scores (Q, C) by weighted kNN: ``score_c = sum_{j in top-k, y_j = c} exp(cos(q, x_j) / T)``."""
    train = F.normalize(train_features.float(), dim=1)  # N x D
    k = min(k, len(train))
    scores = torch.zeros(len(query_features), num_classes)
    for start in range(0, len(query_features), chunk):
        q = F.normalize(query_features[start : start + chunk].float(), dim=1)  # Q x D
        sims, idx = (q @ train.t()).topk(k, dim=1)  # Q x k
        scores[start : start + chunk].scatter_add_(1, train_labels[idx], (sims / temperature).exp())
    return scores


def accuracies(scores: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> tuple[float, float | None, dict]:
    """Top-1, top-5 (with 5 or more classes) and per-class top-1, in %."""
    pred = scores.argmax(1)
    top1 = (pred == labels).float().mean().item() * 100
    top5 = None
    if len(classes) >= 5:
        top5 = (scores.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean().item() * 100
    per_class = {
        name: ((pred[labels == c] == c).float().mean().item() * 100 if (labels == c).any() else math.nan)
        for c, name in enumerate(classes)
    }
    return top1, top5, per_class


# ---- the linear probe ---------------------------------------------------------------------------------------------

WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # the L2 grid the probe starts from
WEIGHT_DECAY_RANGE = (1e-8, 1e2)  # past a winning edge the grid grows a decade at a time, within these bounds
GRAD_TOL = 1e-4  # max |gradient| where the float32 solve stops, near where float32 rounding stalls its line search
SEARCH_GRAD_TOL = 1e-3  # the weight-decay search's solves stop at this, or lower (SEARCH_GRAD_DROP)
# A warm start at the next decade down begins with max |gradient| ~ 0.9 wd max|W|, which can already be under
# SEARCH_GRAD_TOL: such a solve would not move and the decade would score as a copy of the last one. So each
# warm-started search solve cuts its starting gradient tenfold (down to GRAD_TOL, the final solve's own).
SEARCH_GRAD_DROP = 0.1
FINE_GRAD_TOL = 1e-6  # max |gradient| of the optional float64 finish


class LinearProbe(nn.Module):
    """``logits = W (x - mu) / sigma + b``: a linear layer on features standardised with training
    statistics (a fixed affine map, so the probe stays linear in the features)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std.clamp_min(1e-6))
        self.linear = nn.Linear(len(mean), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.std)


def standardise(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``z = (x - mu) / sigma`` in float32 (N, D), with the per-feature mean and std (D,) it used."""
    features = features.float()
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    return (features - mean) / std, mean, std


def _objective(z: torch.Tensor, labels: torch.Tensor, weight_decay: float):
    """``(W, b) -> (loss, dL/dW, dL/db)`` of the probe's objective on standardised features z (N, D).

    The gradient is analytic, ``dL/dW = (P - Y)^T z / N + wd W`` and ``dL/db = 1^T (P - Y) / N`` with P the
    softmax and Y the one-hot labels (N, C), so no autograd graph holds a copy of z. The matmuls run in z's
    dtype; the softmax and the mean run in float64, so the loss resolves the small decreases near the optimum.
    """
    rows = torch.arange(len(labels))

    def value_and_grad(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp = torch.addmm(bias, z, weight.t()).double().log_softmax(1)  # N x C
        loss = -logp[rows, labels].mean() + 0.5 * weight_decay * weight.double().square().sum()
        residual = logp.exp_()
        residual[rows, labels] -= 1  # P - Y
        residual = residual.div_(len(labels)).to(z.dtype)  # N x C
        return loss, residual.t() @ z + weight_decay * weight, residual.sum(0)

    return value_and_grad


def _lbfgs(
    z: torch.Tensor, labels: torch.Tensor, weight_decay: float, weight: torch.Tensor, bias: torch.Tensor, tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch L-BFGS from (weight, bias) in z's dtype, until max |gradient| <= tol or progress stalls."""
    weight, bias = weight.to(z.dtype).clone(), bias.to(z.dtype).clone()
    value_and_grad = _objective(z, labels, weight_decay)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=1000,  # a safety net: the tolerances stop it first
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=tol,
        tolerance_change=1e-9 if z.dtype == torch.float32 else 1e-12,  # a stall: float32 logits blur the loss
    )

    def closure() -> torch.Tensor:
        loss, weight.grad, bias.grad = value_and_grad(weight, bias)
        return loss

    opt.step(closure)
    return weight, bias


def solve_probe(
    z: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    fine: bool = False,
    tol: float = GRAD_TOL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe's optimum (W (C, D), b (C,)) on standardised features z (N, D), from ``start`` (default zeros).

    Solved in float32 to max |gradient| <= ``tol``, then, with ``fine``, finished in float64 to FINE_GRAD_TOL:
    in float32 the loss cannot resolve the decreases of smaller gradients and the line search stalls. The probe
    lwzoo reports is the float32 solve: on CIFAR-10 the float64 finish cost 10x the time of the whole float32 fit
    and moved top-1 by 0.08 points (benchmarks/RESULTS.md, eval_cifar).
    """
    if start is None:
        start = (z.new_zeros(num_classes, z.shape[1]), z.new_zeros(num_classes))
    weight, bias = _lbfgs(z.float(), labels, weight_decay, *start, tol=tol)
    if fine:
        weight, bias = _lbfgs(z.double(), labels, weight_decay, weight, bias, tol=FINE_GRAD_TOL)
    return weight.float(), bias.float()


def _probe(mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> LinearProbe:
    probe = LinearProbe(mean, std, len(bias))
    with torch.no_grad():
        probe.linear.weight.copy_(weight)
        probe.linear.bias.copy_(bias)
    return probe.eval()


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float, fine: bool = False
) -> LinearProbe:
    """The probe ``mean CE + wd/2 ||W||^2`` at its optimum on features (N, D), by :func:`solve_probe`."""
    z, mean, std = standardise(features)
    return _probe(mean, std, *solve_probe(z, labels, num_classes, weight_decay, fine=fine))


def _next_decade(wd: float, up: bool) -> float:
    return float(f"{wd * 10 if up else wd / 10:.6g}")


def _search_tolerance(
    z: torch.Tensor, labels: torch.Tensor, weight_decay: float, start: tuple[torch.Tensor, torch.Tensor] | None
) -> float:
    """Where a search solve from ``start`` stops: SEARCH_GRAD_TOL, or a tenth of its starting max |gradient| if
    lower (never under GRAD_TOL), so a warm-started solve always moves towards its own optimum."""
    if start is None:
        return SEARCH_GRAD_TOL
    _, grad_w, grad_b = _objective(z, labels, weight_decay)(*start)
    start_grad = max(grad_w.abs().max().item(), grad_b.abs().max().item())
    return min(SEARCH_GRAD_TOL, max(GRAD_TOL, SEARCH_GRAD_DROP * start_grad))


def _search_weight_decay(
    z: torch.Tensor, labels: torch.Tensor, num_classes: int, grid: tuple[float, ...], seed: int
) -> tuple[float, dict[float, float], dict[float, tuple[torch.Tensor, torch.Tensor]]]:
    """The weight decay with the best accuracy on a fixed held-out fifth of z (ties go to the larger), the
    accuracy of each one tried (ascending) and its solution on the other four fifths.

    The grid is solved from strong to weak regularisation, each solve starting from the previous optimum, and
    the descent stops at the first decade that scores below an earlier one: held-out accuracy is taken to be
    unimodal in the weight decay, and the weakest decades are the slowest to solve (40,000 CIFAR-10 features
    of 1,280 dims, warm-started: 28 s of CPU at 1e-2, 60 s at 1e-3, 147 s at 1e-4). While the winner is the
    smallest or largest value tried, the grid grows a decade past it (within WEIGHT_DECAY_RANGE), starting
    from the winner's optimum, so a winner at an edge is never a cut-off.
    """
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    held, fit = perm[: len(perm) // 5], perm[len(perm) // 5 :]
    z_fit, y_fit, z_held, y_held = z[fit], labels[fit], z[held], labels[held]
    solutions: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    accs: dict[float, float] = {}

    def visit(wd: float, start: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        tol = _search_tolerance(z_fit, y_fit, wd, start)
        solutions[wd] = solve_probe(z_fit, y_fit, num_classes, wd, start, tol=tol)
        weight, bias = solutions[wd]
        accs[wd] = (torch.addmm(bias, z_held, weight.t()).argmax(1) == y_held).float().mean().item() * 100

    for wd in sorted(grid, reverse=True):
        visit(wd, solutions[min(solutions)] if solutions else None)
        if accs[wd] < max(accs.values()):
            break  # past the peak
    while True:
        tried = sorted(accs)
        best = max(tried, key=lambda wd: (accs[wd], wd))
        nxt = _next_decade(best, up=best == tried[-1])
        if best not in (tried[0], tried[-1]) or not WEIGHT_DECAY_RANGE[0] <= nxt <= WEIGHT_DECAY_RANGE[1]:
            break
        visit(nxt, solutions[best])
    return best, dict(sorted(accs.items())), solutions


def select_weight_decay(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    grid: tuple[float, ...] = WEIGHT_DECAYS,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The L2 weight with the best accuracy on a fixed fifth of the training features (never the val set), and
    the held-out accuracy of every weight tried: ``grid``, grown past its edge while an edge wins."""
    best, accs, _ = _search_weight_decay(standardise(features)[0], labels, num_classes, grid, seed)
    return best, accs


def linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float | None = None,
    seed: int = 0,
) -> tuple[LinearProbe, float, dict[float, float]]:
    """The probe fitted on all of features (N, D), its weight decay and the held-out accuracy of each one tried.

    Without ``weight_decay`` it is chosen as :func:`select_weight_decay` does, and the fit on all N starts from
    the chosen weight's optimum on four fifths of them. Features are standardised once, for both.
    """
    z, mean, std = standardise(features)
    start, accs = None, {}
    if weight_decay is None:
        weight_decay, accs, solutions = _search_weight_decay(z, labels, num_classes, WEIGHT_DECAYS, seed)
        start = solutions[weight_decay]
    return _probe(mean, std, *solve_probe(z, labels, num_classes, weight_decay, start)), weight_decay, accs
