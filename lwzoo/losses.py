"""Smoothed InfoNCE (Lin, Ding, Cao, Zheng, "Establishing a stronger baseline for lightweight
contrastive models", ICME 2023, arXiv 2212.07158).

For a query q_i, its positive key k_i and a queue of K negatives n_1..n_K (all L2-normalised):

    z_i = [q_i . k_i, q_i . n_1, ..., q_i . n_K] / T                         logits, (1+K)
    y_i = (1 - alpha) e_0 + alpha/k * sum_{j in S_i} e_j                        target, (1+K)
    L   = -1/N sum_i sum_c y_ic log softmax(z_i)_c

S_i holds the k queue entries with the largest q_i . n_j, chosen without gradient ("topk"), or all
K entries ("uniform", plain label smoothing over the negatives, kept as an ablation). With
alpha = 0 the target is one-hot and L is MoCo's InfoNCE, ``F.cross_entropy(z, 0)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def infonce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits ``[q.k, q.queue] / T``; q, k: (N, D), queue: (K, D) -> (N, 1+K)."""
    l_pos = (q * k).sum(dim=1, keepdim=True)  # N x 1
    l_neg = q @ queue.t()  # N x K
    return torch.cat([l_pos, l_neg], dim=1) / temperature  # N x (1+K)


@torch.no_grad()
def smoothed_targets(logits: torch.Tensor, alpha: float, topk: int | None) -> torch.Tensor:
    """The target distribution y for logits (N, 1+K) whose column 0 is the positive.

    ``topk=None`` spreads alpha uniformly over all K negatives. Rows sum to 1.
    """
    n, width = logits.shape
    target = torch.zeros_like(logits, dtype=torch.float32)
    target[:, 0] = 1.0 - alpha
    if alpha == 0:
        return target
    if topk is None:
        target[:, 1:] = alpha / (width - 1)
        return target
    if not 1 <= topk <= width - 1:
        raise ValueError(f"topk must be in [1, K={width - 1}], got {topk}")
    # logits are q.queue / T with T > 0, so their order is the cosine order.
    idx = logits[:, 1:].topk(topk, dim=1).indices + 1  # N x topk, skipping the positive column
    target.scatter_(1, idx, alpha / topk)
    return target


def smoothed_infonce(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    alpha: float,
    topk: int | None,
) -> torch.Tensor:
    """Mean smoothed InfoNCE loss (see the module docstring for the formula).

    Args:
        q: queries, (N, D), L2-normalised.
        k: positive keys, (N, D), L2-normalised, without gradient.
        queue: negative keys, (K, D), L2-normalised.
        temperature: T > 0.
        alpha: mass moved from the positive to the smoothing set, in [0, 1).
        topk: size of the smoothing set; ``None`` smooths uniformly over all K negatives.

    Returns:
        The scalar mean loss over the N queries.
    """
    # fp32 whatever autocast produced: at T=0.1 bf16 logits lose the ranking of close negatives.
    logits = infonce_logits(q.float(), k.float(), queue.float(), temperature)  # N x (1+K)
    if alpha == 0:
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
    target = smoothed_targets(logits, alpha, topk)  # N x (1+K), no gradient
    return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()


class SmoothedInfoNCE(nn.Module):
    """:func:`smoothed_infonce` as a module holding T, k and the smoothing kind; alpha is passed per
    call because it follows a schedule.

    Example:
        >>> criterion = SmoothedInfoNCE(temperature=0.1, topk=5)
        >>> loss = criterion(q, k, queue, alpha=0.1)
    """

    def __init__(self, temperature: float, topk: int = 5, smoothing: str = "topk") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if smoothing not in ("topk", "uniform"):
            raise ValueError(f"smoothing must be 'topk' or 'uniform', got {smoothing!r}")
        if smoothing == "topk" and topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        self.temperature = temperature
        self.topk = topk if smoothing == "topk" else None

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        return smoothed_infonce(q, k, queue, self.temperature, alpha, self.topk)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, topk={self.topk}"
