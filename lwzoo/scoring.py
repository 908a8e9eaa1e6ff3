"""Scoring frozen features: weighted kNN class scores and accuracies. Shared by ``lwzoo eval``, the
pretraining kNN monitor and export's int8 check, so each scores the same way."""

from __future__ import annotations

import math

import torch
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
