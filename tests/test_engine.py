"""The training engine (lwzoo/engine.py): parameter groups, per-step randomness and an exact restart from its state.

The compiled step is tested against the eager one in test_compile.py; whole runs in test_pretrain.py."""

import torch
import torch.nn as nn

from lwzoo.archs import Arch
from lwzoo.data import builtin_images
from lwzoo.engine import Engine, param_groups, step_generator
from lwzoo.recipe import load_recipe

# timm's own ~100k-parameter test net (EfficientNet blocks), so a few steps take a second
TINY_NET = Arch("test_efficientnet", "test_efficientnet", "demo", 256)
TINY = {
    "augment.image_size": 16,
    "data.decode_size": 16,
    "train.batch_size": 16,
    "moco.queue_size": 40,
    "moco.mlp_hidden": 32,
    "moco.key_bn_splits": 2,
    "optim.warmup_epochs": 0.5,  # the lr moves every step: a restart must resume the schedule, not restart it
}


def ids(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


def test_norm_weights_and_biases_stay_out_of_weight_decay_unless_asked():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)  # frozen: in no group
    decay, no_decay = param_groups(model, 1e-4, decay_norm_and_bias=False)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (1e-4, 0.0)
    assert ids(decay) == {id(model[0].weight)}
    assert ids(no_decay) == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)}
    decay, no_decay = param_groups(model, 1e-4, decay_norm_and_bias=True)
    assert ids(decay) == {id(p) for p in model.parameters() if p.requires_grad} and not no_decay["params"]


def draw(seed: int, step: int, stream: int = 0) -> list[float]:
    return torch.rand(4, generator=step_generator(torch.device("cpu"), seed, step, stream)).tolist()


def test_a_steps_randomness_is_a_function_of_step_and_stream_alone():
    torch.rand(100)  # the global generator's state plays no part
    assert draw(0, 5) == draw(0, 5) and draw(3, 7, stream=1) == draw(3, 7, stream=1)
    others = [draw(0, 6), draw(0, 5, stream=1), draw(0, 5, stream=-1)]
    assert all(other != draw(0, 5) for other in others) and len({tuple(o) for o in others}) == len(others)


def test_the_run_seed_changes_a_steps_randomness():
    """On the CPU too, whose generator keeps only the low 32 bits of its seed."""
    assert draw(1, 5) != draw(0, 5) and draw(2**32, 5) != draw(0, 5) and draw(1, 5) != draw(0, 6)


def engine() -> Engine:
    return Engine(TINY_NET, load_recipe("demo", TINY), steps_per_epoch=4, seed=0, device=torch.device("cpu"))


def test_an_engine_loaded_from_a_state_takes_the_steps_the_uninterrupted_one_takes():
    """One step, state_dict, a new engine whose weights are scrambled, load_state_dict, two more steps: the same
    losses and the same model, queue and optimizer momentum as three steps straight, bit for bit."""
    batches = builtin_images("val", 16).images[:48].split(16)
    straight = engine()
    straight_losses = [float(straight.train_step(b)) for b in batches]

    first = engine()
    first.train_step(batches[0])
    state = first.state_dict()
    resumed = engine()
    with torch.no_grad():
        for p in resumed.model.parameters():
            p.normal_()  # nothing of its own survives the load
    resumed.load_state_dict(state)
    assert resumed.step == 1 and resumed.schedules() == first.schedules()
    resumed_losses = [float(resumed.train_step(b)) for b in batches[1:]]

    assert resumed_losses == straight_losses[1:]
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    want_momentum = [s["momentum_buffer"] for s in straight.optimizer.state_dict()["state"].values()]
    got_momentum = [s["momentum_buffer"] for s in resumed.optimizer.state_dict()["state"].values()]
    assert len(want_momentum) == len(got_momentum) > 0
    assert all(torch.equal(a, b) for a, b in zip(want_momentum, got_momentum, strict=True))
