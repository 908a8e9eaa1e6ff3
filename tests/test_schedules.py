import math

import pytest

from lwzoo.schedules import alpha_at, cosine_lr, momentum_at


def test_cosine_lr_warmup_then_cosine():
    total, warm, lr = 100, 10, 0.5
    assert cosine_lr(0, total, warm, lr) == pytest.approx(lr / warm)
    assert cosine_lr(warm - 1, total, warm, lr) == pytest.approx(lr)  # end of warmup
    assert cosine_lr(warm, total, warm, lr) == pytest.approx(lr)  # start of the cosine
    assert cosine_lr(55, total, warm, lr) == pytest.approx(lr / 2)  # half-way down
    assert cosine_lr(total, total, warm, lr) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(total, total, warm, lr, min_lr=0.01) == pytest.approx(0.01)
    assert all(cosine_lr(s, total, warm, lr) >= cosine_lr(s + 1, total, warm, lr) for s in range(warm, total))


def test_cosine_lr_without_warmup_starts_at_base():
    assert cosine_lr(0, 50, 0, 0.1) == pytest.approx(0.1)


def test_alpha_after_warmup():
    assert alpha_at(0, 100, 10, 0.2, "after_warmup") == 0.0
    assert alpha_at(9, 100, 10, 0.2, "after_warmup") == 0.0
    assert alpha_at(10, 100, 10, 0.2, "after_warmup") == 0.2
    assert alpha_at(100, 100, 10, 0.2, "after_warmup") == 0.2


def test_alpha_cosine_ramp():
    assert alpha_at(0, 100, 10, 0.2, "cosine") == 0.0
    assert alpha_at(50, 100, 10, 0.2, "cosine") == pytest.approx(0.1)
    assert alpha_at(100, 100, 10, 0.2, "cosine") == pytest.approx(0.2)


def test_momentum_schedules():
    assert momentum_at(0, 100, 0.99, "constant") == momentum_at(100, 100, 0.99, "constant") == 0.99
    assert momentum_at(0, 100, 0.99, "cosine") == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99, "cosine") == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99, "cosine") == pytest.approx(1.0)
    assert not math.isnan(momentum_at(5, 0, 0.9, "cosine"))


def test_unknown_schedules_are_errors():
    with pytest.raises(ValueError, match="alpha schedule"):
        alpha_at(0, 10, 1, 0.1, "linear")
    with pytest.raises(ValueError, match="momentum schedule"):
        momentum_at(0, 10, 0.9, "linear")
