"""kNN scores and accuracies against independent float64 references."""

import math

import torch

from lwzoo.scoring import accuracies, knn_predict


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
