"""Smoothed InfoNCE (Lin, Ding, Cao, Zheng, "Establishing a stronger baseline for lightweight
contrastive models", ICME 2023, arXiv 2212.07158), with the authors' smoothing variants.

For a query q_i, its positive key k_i and a queue of K negatives n_1..n_K (all L2-normalised):

    z_i = [q_i . k_i, q_i . n_1, ..., q_i . n_K] / T                         logits, (1+K)
    y_i = (1 - alpha) e_0 + alpha sum_{r=1..m} w_r e_{j_i(r)}                  target, (1+K)
    L   = -1/N sum_i sum_c y_ic log softmax(z_i)_c

j_i(r) is the column of the queue key with the r-th largest q_i . n_j (chosen without gradient) and the
smoothing weights w_1..w_m sum to 1. ``smoothing`` names w (``loss.smoothing`` in a recipe):

    topk              w_r = 1/k for r = 1..k: the authors' strategy 1.
    uniform           1/K on every queue key: plain label smoothing over the negatives (an ablation; k unused).
    graded_topk       ranks 1..p1, p1+1..p2 and p2+1..k hold 1/2, 1/4 and 1/4, split evenly within each group:
                      w_r = 1/(2 p1), 1/(4 (p2 - p1)), 1/(4 (k - p2)). (p1, p2) = (k/5, floor(k/2)), i.e.
                      (1, 2), (2, 5), (4, 10), (6, 15) for k = 5, 10, 20, 30, the k the authors defined it
                      for; any other k is refused. Per key the weight falls from group to group.
    geometric_top10   w_r = rho^(r-1) (1 - rho) / (1 - rho^10) for r = 1..10, rho = 1/2 (each key half the
                      one before it). alpha is fixed at 0.4: 0.6 stays on the positive.
    nearest_negative  w_1 = 1, the nearest queue key alone; alpha is fixed at 0.5 (0.5 / 0.5). The same target
                      as topk with k 1 and alpha 0.5.
    grouped_top20     ranks 1-7, 8-14 and 15-20 hold 1/2, 1/3 and 1/6: w_r = 1/14, 1/21, 1/36.

From the authors' code as reported (issue 18): graded_topk's 1/2, 1/4, 1/4 and its k, geometric_top10's 0.6 and
10, nearest_negative's 0.5 / 0.5, grouped_top20's 20 in three groups. Their exact split points, ratio and group
masses were not available here: graded_topk's (p1, p2), rho and grouped_top20's sizes and masses are lwzoo's
choices, made so that a nearer key never gets less than a farther one.

The kinds with "top<m>" or "nearest" in their name fix m (:data:`FIXED_TOPK`); two fix alpha
(:data:`FIXED_ALPHA`), and a recipe must then set ``loss.alpha`` to that value, so the recipe saved with a run
says what ran. Whatever the kind, y is linear in alpha and alpha follows ``loss.alpha_schedule``: 0 through
warmup (a one-hot target) and only then the kind's mass. With alpha = 0 the target is one-hot and L is MoCo's
InfoNCE, ``F.cross_entropy(z, 0)``.

:func:`positive_fit` reads from the same logits whether the model fits its positives: the instance accuracy
and the positive's softmax mass.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SMOOTHING_KINDS = ("topk", "uniform", "graded_topk", "geometric_top10", "nearest_negative", "grouped_top20")
# graded_topk's split points (p1, p2) per k: the first group holds ranks 1..p1, the second p1+1..p2.
GRADED_SPLITS = {5: (1, 2), 10: (2, 5), 20: (4, 10), 30: (6, 15)}
GEOMETRIC_RATIO = 0.5  # geometric_top10: each key's weight over the one before it
FIXED_TOPK = {"geometric_top10": 10, "nearest_negative": 1, "grouped_top20": 20}
FIXED_ALPHA = {"geometric_top10": 0.4, "nearest_negative": 0.5}


def infonce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits ``[q.k, q.queue] / T``; q, k: (N, D), queue: (K, D) -> (N, 1+K)."""
    l_pos = (q * k).sum(dim=1, keepdim=True)  # N x 1
    l_neg = q @ queue.t()  # N x K
    return torch.cat([l_pos, l_neg], dim=1) / temperature  # N x (1+K)


def _groups(sizes: tuple[int, ...], masses: tuple[float, ...]) -> tuple[float, ...]:
    """Rank weights of consecutive groups, each group's mass split evenly over its keys."""
    return tuple(mass / size for size, mass in zip(sizes, masses, strict=True) for _ in range(size))


def smoothing_weights(smoothing: str, topk: int | None) -> tuple[float, ...] | None:
    """The weights w_1..w_m (module docstring) the r-th nearest queue key receives of alpha; they sum to 1.

    None for ``uniform`` (and for ``topk`` with ``topk=None``): alpha spread over all K keys. ``topk`` is the k
    of ``topk`` and ``graded_topk``; the other kinds ignore it.
    """
    if smoothing == "uniform" or (smoothing == "topk" and topk is None):
        return None
    if smoothing == "topk":
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        return (1.0 / topk,) * topk
    if smoothing == "graded_topk":
        if topk not in GRADED_SPLITS:
            raise ValueError(f"graded_topk is defined for topk in {sorted(GRADED_SPLITS)}, got {topk}")
        p1, p2 = GRADED_SPLITS[topk]
        return _groups((p1, p2 - p1, topk - p2), (1 / 2, 1 / 4, 1 / 4))
    if smoothing == "geometric_top10":
        rho, m = GEOMETRIC_RATIO, FIXED_TOPK[smoothing]
        return tuple(rho**r * (1 - rho) / (1 - rho**m) for r in range(m))
    if smoothing == "nearest_negative":
        return (1.0,)
    if smoothing == "grouped_top20":
        return _groups((7, 7, 6), (1 / 2, 1 / 3, 1 / 6))
    raise ValueError(f"smoothing must be one of {', '.join(map(repr, SMOOTHING_KINDS))}, got {smoothing!r}")


@torch.no_grad()
def smoothed_targets(logits: torch.Tensor, alpha: float, topk: int | None, smoothing: str = "topk") -> torch.Tensor:
    """The target distribution y for logits (N, 1+K) whose column 0 is the positive; rows sum to 1.

    ``smoothing`` and ``topk`` pick the weights (:func:`smoothing_weights`); ``topk=None`` with the default
    ``smoothing`` spreads alpha uniformly over all K negatives.
    """
    n, width = logits.shape
    weights = smoothing_weights(smoothing, topk)
    target = torch.zeros_like(logits, dtype=torch.float32)
    target[:, 0] = 1.0 - alpha
    if alpha == 0:
        return target
    if weights is None:
        target[:, 1:] = alpha / (width - 1)
        return target
    m = len(weights)
    if not 1 <= m <= width - 1:
        raise ValueError(f"topk must be in [1, K={width - 1}], got {m}")
    # logits are q.queue / T with T > 0, so their order is the cosine order; topk sorts, nearest first.
    idx = logits[:, 1:].topk(m, dim=1).indices + 1  # N x m, skipping the positive column
    if smoothing == "topk":  # one weight for all k: a scalar, as strategy 1 always had it
        return target.scatter_(1, idx, alpha / m)
    w = torch.tensor(weights, dtype=torch.float32, device=logits.device)  # m
    return target.scatter_(1, idx, (alpha * w).expand(n, m))


def smoothed_loss(logits: torch.Tensor, alpha: float, topk: int | None, smoothing: str = "topk") -> torch.Tensor:
    """Mean smoothed InfoNCE of logits (N, 1+K) already computed (:func:`infonce_logits`): a scalar."""
    if alpha == 0:
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
    target = smoothed_targets(logits, alpha, topk, smoothing)  # N x (1+K), no gradient
    return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()


@torch.no_grad()
def positive_fit(logits: torch.Tensor) -> torch.Tensor:
    """Whether the model fits its positives, from logits (N, 1+K) whose column 0 is the positive: a (2,) tensor

        instance accuracy  1/N sum_i [z_i0 > z_ij for every j >= 1]    (a tie is a miss)
        positive mass      1/N sum_i softmax(z_i)_0

    both in [0, 1]; chance is about 1/(1+K) for each.
    """
    accuracy = (logits[:, 0] > logits[:, 1:].max(dim=1).values).float().mean()
    mass = logits.float().softmax(dim=1)[:, 0].mean()
    return torch.stack([accuracy, mass])


def smoothed_infonce(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    alpha: float,
    topk: int | None,
    smoothing: str = "topk",
) -> torch.Tensor:
    """Mean smoothed InfoNCE loss (see the module docstring for the formula).

    Args:
        q: queries, (N, D), L2-normalised.
        k: positive keys, (N, D), L2-normalised, without gradient.
        queue: negative keys, (K, D), L2-normalised.
        temperature: T > 0.
        alpha: mass moved from the positive to the smoothing set, in [0, 1).
        topk: the k of ``topk`` and ``graded_topk``; ``None`` with ``topk`` smooths uniformly over all K.
        smoothing: one of :data:`SMOOTHING_KINDS`.

    Returns:
        The scalar mean loss over the N queries.
    """
    # fp32 whatever autocast produced: at T=0.1 bf16 logits lose the ranking of close negatives.
    logits = infonce_logits(q.float(), k.float(), queue.float(), temperature)  # N x (1+K)
    return smoothed_loss(logits, alpha, topk, smoothing)


class SmoothedInfoNCE(nn.Module):
    """:func:`smoothed_infonce` as a module holding T, k and the smoothing kind; alpha is passed per
    call because it follows a schedule.

    ``topk`` is the k of ``topk`` and ``graded_topk``; the other kinds fix their own (:data:`FIXED_TOPK`) or use
    all K (``uniform``), and :attr:`topk` holds the k in use (None for ``uniform``).

    Example:
        >>> criterion = SmoothedInfoNCE(temperature=0.1, topk=5)
        >>> loss = criterion(q, k, queue, alpha=0.1)
        >>> loss, fit = criterion.loss_and_fit(q, k, queue, alpha=0.1)  # fit: instance accuracy, positive mass
    """

    def __init__(self, temperature: float, topk: int = 5, smoothing: str = "topk") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if smoothing not in SMOOTHING_KINDS:
            raise ValueError(f"smoothing must be one of {', '.join(map(repr, SMOOTHING_KINDS))}, got {smoothing!r}")
        smoothing_weights(smoothing, topk)  # a k the kind has no weights for fails here, not at the first step
        self.temperature, self.smoothing = temperature, smoothing
        self.topk = topk if smoothing in ("topk", "graded_topk") else FIXED_TOPK.get(smoothing)

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
        _check_alpha(alpha)
        return smoothed_infonce(q, k, queue, self.temperature, alpha, self.topk, self.smoothing)

    def loss_and_fit(
        self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, alpha: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and :func:`positive_fit` (2,) of the same logits: the fit costs no extra forward."""
        _check_alpha(alpha)
        logits = infonce_logits(q.float(), k.float(), queue.float(), self.temperature)  # N x (1+K), fp32
        return smoothed_loss(logits, alpha, self.topk, self.smoothing), positive_fit(logits)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, topk={self.topk}, smoothing={self.smoothing!r}"


def _check_alpha(alpha: float) -> None:
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
