"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` with the gloo backend.

Each rank trains a few real lwzoo steps and writes what it saw to OUT/rank<r>.pt, for the test to compare.
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from lwzoo.archs import get_arch
from lwzoo.data import builtin_images
from lwzoo.distributed import from_environment, teardown
from lwzoo.engine import Engine, step_generator
from lwzoo.recipe import load_recipe

out = Path(sys.argv[1])
ctx = from_environment(torch.device("cpu"))
assert ctx.world_size == 2, ctx
recipe = load_recipe(
    "demo",
    {
        "augment.image_size": 16,
        "data.decode_size": 16,
        "moco.queue_size": 96,
        "moco.mlp_hidden": 64,
        "train.batch_size": 32,
        "moco.key_bn_splits": 4,
    },
)
images = builtin_images("val", 16)
engine = Engine(get_arch("mobilenetv3_large"), recipe, len(images) // 32, seed=3, device=torch.device("cpu"), ctx=ctx)
# distributed shuffle-BN in eval mode (where BN ignores the batch) must equal the plain key encoder; checked
# before any training step, while every rank's key encoder still has the same BN running statistics
engine.model.eval()

x = images.images[ctx.rank * 8 : ctx.rank * 8 + 8].float() / 255
keys = engine.model.keys(x, step_generator(torch.device("cpu"), 0, 0), ctx)
with torch.no_grad():
    plain = F.normalize(engine.model.key_encoder(x), dim=1)
engine.model.train()
engine.fill_queue(images)

losses, shards = [], []

for step, (batch, aspects) in enumerate(images.batches(32, epoch=0, seed=3, rank=ctx.rank, world_size=ctx.world_size)):
    shards.append(batch.clone())
    losses.append(float(engine.train_step(batch, aspects)))
    if step == 3:
        break
torch.save(
    {
        "queue": engine.model.queue.keys.clone(),
        "ptr": int(engine.model.queue.ptr),
        "losses": losses,
        "shards": torch.stack(shards),
        "keys_err": float((keys - plain).abs().max()),
        "backbone": {k: v.clone() for k, v in engine.model.backbone.state_dict().items()},
    },
    out / f"rank{ctx.rank}.pt",
)
teardown(ctx, engine.release)
