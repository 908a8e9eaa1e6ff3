"""Evidence for the demo recipe: kNN accuracy on the built-in data after the CPU demo pretraining,
against random-init encoders and against the demo with one of its choices undone.

Each arm pretrains MobileNet-V3-Large on the built-in train split with ``recipes/demo.yaml`` plus
the arm's overrides, then scores the frozen backbone (eval mode, pooled features) by weighted kNN
(k 20, T 0.07, cosine) on the built-in val split. Finished runs are remembered in
``demo_recipe.json``, so an interrupted benchmark picks up where it stopped.

    python benchmarks/demo_recipe.py                    # all arms, seeds as below (~40 min on 2 cores)
    python benchmarks/demo_recipe.py --arms demo --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import write_section

from lwzoo.archs import create_backbone
from lwzoo.builtin_data import builtin_images
from lwzoo.checkpoint import load_checkpoint
from lwzoo.pretrain import pretrain
from lwzoo.recipe import load_recipe

ARMS: dict[str, list[str]] = {
    "demo": [],
    "demo, plain InfoNCE (alpha 0)": ["loss.alpha=0.0"],
    "demo, no zero-init residuals": ["moco.zero_init_residual=false"],
    "demo, random initial queue": ["moco.queue_init=random"],
    "demo, MoCo v2 hue jitter 0.1": ["augment.jitter=[0.4, 0.4, 0.4, 0.1]"],
    "demo, symmetric loss (same epochs, 2x time)": ["moco.symmetric=true"],
    "demo, symmetric loss (half the epochs, same time)": ["moco.symmetric=true", "train.epochs=18"],
}
STATE = Path(__file__).with_name("demo_recipe.json")


@torch.no_grad()
def knn_accuracy(backbone: torch.nn.Module, size: int, k: int = 20, t: float = 0.07) -> float:
    recipe = load_recipe("demo")
    mean, std = torch.tensor(recipe.augment.mean).view(1, 3, 1, 1), torch.tensor(recipe.augment.std).view(1, 3, 1, 1)
    backbone.eval()

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(backbone((b.float() / 255 - mean) / std), dim=1) for b in images.split(512)])

    train, val = builtin_images("train", size), builtin_images("val", size)
    f_train, f_val = features(train.images), features(val.images)
    sims, idx = (f_val @ f_train.t()).topk(k, dim=1)
    votes = torch.zeros(len(val), len(train.classes)).scatter_add_(1, train.labels[idx], (sims / t).exp())
    return (votes.argmax(1) == val.labels).float().mean().item() * 100


def run_arm(name: str, overrides: list[str], seed: int, size: int) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = pretrain(
            "mobilenetv3_large",
            data="builtin",
            overrides=overrides,
            seed=seed,
            out=Path(tmp) / "run",
            device="cpu",
            verbose=False,
        )
        if not result.finished:  # stopped by a signal: not a result, and nothing to record
            raise SystemExit(f"{name}, seed {seed}: stopped at step {result.step}/{result.total_steps}; not recorded")
        ckpt = load_checkpoint(result.checkpoint)
    backbone = create_backbone("mobilenetv3_large")
    backbone.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    )
    return {"knn": knn_accuracy(backbone, size), "loss": result.loss, "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="*", default=list(ARMS), help="arm names (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=None, help="default: 0 1 2 for demo, 0 1 for the others")
    a = p.parse_args()
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    size = load_recipe("demo").augment.image_size

    for seed in a.seeds or [0, 1, 2]:
        key = f"random init|{seed}"
        if key not in state:
            torch.manual_seed(seed)
            state[key] = {"knn": knn_accuracy(create_backbone("mobilenetv3_large"), size)}
            STATE.write_text(json.dumps(state, indent=1))
    for name in a.arms:
        for seed in a.seeds or ([0, 1, 2] if name == "demo" else [0, 1]):
            key = f"{name}|{seed}"
            if key in state:
                continue
            print(f"{name}, seed {seed} ...", flush=True)
            state[key] = run_arm(name, ARMS[name], seed, size)
            print(f"  {state[key]}", flush=True)
            STATE.write_text(json.dumps(state, indent=1))

    rows = []
    for name in ["random init", *ARMS]:
        runs = sorted((int(k.split("|")[1]), v) for k, v in state.items() if k.split("|")[0] == name)
        if not runs:
            continue
        knns = [v["knn"] for _, v in runs]
        spread = f" ± {statistics.stdev(knns):.1f}" if len(knns) > 1 else ""
        overrides = " ".join(f"`{o}`" for o in ARMS.get(name, [])) or "-"
        # runs made on a busy machine were recorded without their (inflated) wall time
        walls = [v["wall_s"] for _, v in runs if "wall_s" in v]
        wall = f"{statistics.mean(walls) / 60:.1f} min" if walls else "-"
        loss = f"{statistics.mean(v['loss'] for _, v in runs):.3f}" if "loss" in runs[0][1] else "-"
        rows.append(
            f"| {name} | {overrides} | {statistics.mean(knns):.1f}{spread} | "
            f"{', '.join(f'{x:.1f}' for x in knns)} | {', '.join(str(s) for s, _ in runs)} | {loss} | {wall} |"
        )
    body = (
        "## Demo recipe: CPU pretraining on the built-in data\n\n"
        "MobileNet-V3-Large, `recipes/demo.yaml` (+ the arm's overrides), built-in train split (2,048 images, 32 px); "
        "kNN (k 20, T 0.07) of the frozen backbone's pooled features on the built-in val split (1,024 images, 10 "
        "classes, chance 10%). Wall time (mean over the runs timed on a quiet machine) includes data generation and "
        "the final checkpoint. Rows accumulate in `demo_recipe.json` over several invocations (the command above "
        "is the latest; `python demo_recipe.py` runs whatever is missing); runs made on a busy machine were "
        "recorded without wall time. With this spread between seeds, a gap smaller than the arms' sd is noise.\n\n"
        "| arm | overrides | kNN top-1 % (mean ± sd) | per seed | seeds | final epoch loss | wall |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(body)
    write_section("demo_recipe", body)


if __name__ == "__main__":
    main()
