"""train.compile: the torch.compile'd training step against the eager one, on the CPU with inductor."""

import pytest
import torch
import torch.nn.functional as F

from lwzoo.archs import Arch
from lwzoo.config import parse_overrides
from lwzoo.data import builtin_images
from lwzoo.distributed import DistContext
from lwzoo.engine import Engine, alpha_as_tensor
from lwzoo.errors import LwzooError
from lwzoo.losses import SmoothedInfoNCE
from lwzoo.recipe import load_recipe

from .conftest import run_cli

# timm's own test net: BatchNormAct2d, squeeze-excite and depthwise convs as in EfficientNet-B0, but ~100k
# parameters in 7 blocks, so inductor compiles the step in minutes on two CPU cores rather than tens of them.
TINY_NET = Arch("test_efficientnet", "test_efficientnet", "demo", 256)
STEPS = 4
TINY = {
    "augment.image_size": 16,
    "data.decode_size": 16,
    "train.batch_size": 16,
    "moco.queue_size": 40,  # not a multiple of the 32 keys a step pushes: the push wraps around
    "moco.mlp_hidden": 64,
    "moco.key_bn_splits": 2,
    "moco.symmetric": True,
    "moco.momentum_schedule": "cosine",  # the key momentum moves every step, as the lr does
    "loss.alpha": 0.1,
    "loss.alpha_schedule": "cosine",  # alpha too: 0 (plain InfoNCE) at step 0, then top-k smoothing, new each step
    "optim.warmup_epochs": 0.5,  # the lr warms up over 2 of the STEPS, then decays
}


def train(compile_mode, device: str = "cpu") -> tuple[list[float], dict[str, torch.Tensor], list[list[float]]]:
    """Losses, the final state dict, and each step's fit (instance accuracy, positive mass)."""
    recipe = load_recipe("demo", {**TINY, "train.compile": compile_mode})
    engine = Engine(TINY_NET, recipe, steps_per_epoch=STEPS, seed=0, device=torch.device(device))
    engine.amp = None  # fp32 on a GPU too (read when the step is first traced), so both sides round alike
    images = builtin_images("val", 16).images
    losses, fits = [], []
    for i in range(STEPS):
        losses.append(float(engine.train_step(images[i * 16 : (i + 1) * 16])))
        fits.append(engine.last_fit.tolist())
    return losses, engine.model.state_dict(), fits


@pytest.mark.slow
def test_compiled_step_matches_the_eager_step():
    """Same losses, weights, BN statistics and queue after 4 steps from alpha 0 into top-k smoothing.
    Tolerance: inductor fuses and reorders float32 reductions (BN statistics, softmax, the SGD
    update), a few ulps (~1e-7 relative) per op that compound over layers and steps; measured up to 2e-6
    here. rtol 1e-4 / atol 1e-5 leaves that 5x room, while any real difference (a skipped queue push,
    another smoothing set, a BN group mixed up, a stale lr) moves these values by 1e-3 or more."""
    eager_losses, eager, eager_fits = train(False)
    compiled_losses, compiled, compiled_fits = train("default")
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-5)
    # the fit comes out of the compiled graph too: the same hits (a fraction of 32 queries) and positive mass
    for (eager_acc, eager_mass), (acc, mass) in zip(eager_fits, compiled_fits, strict=True):
        assert acc == eager_acc and mass == pytest.approx(eager_mass, rel=1e-4, abs=1e-6)
    assert len({mass for _, mass in eager_fits}) == STEPS  # a fit that moves with the steps, not a constant
    assert compiled.keys() == eager.keys()  # torch.compile wraps no module: checkpoints keep their layout
    for key, value in eager.items():
        if value.is_floating_point():
            assert torch.allclose(compiled[key], value, rtol=1e-4, atol=1e-5), key
        else:
            assert torch.equal(compiled[key], value), key  # queue.ptr, num_batches_tracked
    # inductor's fused kernels round differently: bit-for-bit equal weights would mean nothing was compiled
    assert any(not torch.equal(compiled[k], v) for k, v in eager.items() if v.is_floating_point())
    fresh = Engine(TINY_NET, load_recipe("demo", TINY), steps_per_epoch=STEPS, seed=0, device=torch.device("cpu"))
    moved = fresh.model.state_dict()
    assert not torch.allclose(moved["queue.keys"], eager["queue.keys"])  # the steps did change the queue
    assert not torch.allclose(moved["backbone.conv_stem.weight"], eager["backbone.conv_stem.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphed_step_matches_the_eager_step():
    """reduce-overhead: the step replayed as CUDA graphs, whose failure modes are stale inputs and lost
    in-place updates (EMA, BN statistics, queue, SGD). Same tolerance as on the CPU, in fp32 (convolutions
    take the same cuDNN path, TF32 or not, compiled or eager)."""
    eager_losses, eager, eager_fits = train(False, "cuda")
    graphed_losses, graphed, graphed_fits = train("reduce-overhead", "cuda")
    assert graphed_losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-5)
    # each step's fit is its own (a replay overwriting the last one's output memory would repeat or mix them)
    for (eager_acc, eager_mass), (acc, mass) in zip(eager_fits, graphed_fits, strict=True):
        assert acc == eager_acc and mass == pytest.approx(eager_mass, rel=1e-4, abs=1e-6)
    for key, value in eager.items():
        assert torch.allclose(graphed[key].double(), value.double(), rtol=1e-4, atol=1e-5), key


@pytest.mark.slow
def test_compiled_loss_of_a_weighted_kind_matches_eager():
    """graded_topk's rank weights enter the compiled graph as a constant tensor: alpha_as_tensor compiled whole
    (fullgraph), for alpha 0 and 0.3 through one graph, against the eager loss and fit."""
    criterion = SmoothedInfoNCE(0.1, topk=10, smoothing="graded_topk")
    compiled = torch.compile(alpha_as_tensor(criterion), fullgraph=True)
    g = torch.Generator().manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 16, generator=g), dim=1) for n in (8, 8, 40))
    for alpha in (0.0, 0.3):
        loss, fit = compiled(q, k, queue, torch.tensor(alpha))
        eager_loss, eager_fit = criterion.loss_and_fit(q, k, queue, alpha)
        assert loss.item() == pytest.approx(eager_loss.item(), rel=1e-5) and torch.allclose(fit, eager_fit)


@pytest.mark.parametrize("value", ["fast", 0, True])
def test_compile_mode_is_validated(value):
    with pytest.raises(LwzooError, match="train.compile"):
        load_recipe("demo", {"train.compile": value})


def test_compile_modes_are_accepted():
    assert load_recipe("demo", {"train.compile": "reduce-overhead"}).train.compile == "reduce-overhead"
    assert load_recipe("demo", parse_overrides(["train.compile=off"])).train.compile is False  # YAML reads off


def test_compile_under_ddp_is_refused_before_any_work():
    recipe = load_recipe("demo", {**TINY, "train.compile": "default"})
    with pytest.raises(LwzooError, match="train.compile is for one process"):
        Engine(TINY_NET, recipe, STEPS, seed=0, device=torch.device("cpu"), ctx=DistContext(0, 2, 0))


def test_cli_compile_option_sets_the_recipe_key():
    proc = run_cli("pretrain", "mobilenetv3_large", "--compile", "fastest", "--device", "cpu")
    assert proc.returncode == 2
    assert "lwzoo: error:" in proc.stderr and "'train.compile' must be one of" in proc.stderr
    assert "Traceback" not in proc.stderr
