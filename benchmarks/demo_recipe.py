"""Evidence for the demo recipe: kNN accuracy on the built-in data after the CPU demo pretraining,
against random-init encoders and against the demo with one of its choices undone.

Each arm pretrains MobileNet-V3-Large on the built-in train split with ``recipes/demo.yaml`` plus
the arm's overrides (``lwzoo.pretrain``), then scores the frozen backbone with ``lwzoo.evaluate.knn``
(k 20, T 0.07, cosine, the demo recipe's preprocessing) on the built-in val split; a random-init row
is ``evaluate.knn("random:mobilenetv3_large:SEED")`` on the same data and preprocessing. Finished
runs are remembered in ``demo_recipe.json``, so an interrupted benchmark picks up where it stopped.

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

from _results import write_section

from lwzoo import evaluate
from lwzoo.pretrain import pretrain

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


def knn_accuracy(encoder: str | Path, out: Path) -> float:
    """kNN top-1 % of ``encoder`` (a checkpoint or ``random:ARCH:SEED``) on the built-in val split, voting with
    the built-in train split; ``eval-knn.json`` goes to ``out``."""
    result = evaluate.knn(encoder, data="builtin:train", val_data="builtin:val", device="cpu", out=out, cache=False)
    return result.top1


def run_arm(name: str, overrides: list[str], seed: int) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = pretrain(
            "mobilenetv3_large",
            data="builtin",
            overrides=overrides,
            seed=seed,
            out=Path(tmp) / "run",
            device="cpu",
        )
        if not result.finished:  # stopped by a signal: not a result, and nothing to record
            raise SystemExit(f"{name}, seed {seed}: stopped at step {result.step}/{result.total_steps}; not recorded")
        knn = knn_accuracy(result.checkpoint, Path(tmp))
    return {"knn": knn, "loss": result.loss, "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="*", default=list(ARMS), help="arm names (default: all)")
    p.add_argument("--seeds", nargs="*", type=int, default=None, help="default: 0 1 2 for demo, 0 1 for the others")
    a = p.parse_args()
    state = json.loads(STATE.read_text()) if STATE.exists() else {}

    for seed in a.seeds or [0, 1, 2]:
        key = f"random init|{seed}"
        if key not in state:
            with tempfile.TemporaryDirectory() as tmp:
                state[key] = {"knn": knn_accuracy(f"random:mobilenetv3_large:{seed}", Path(tmp))}
            STATE.write_text(json.dumps(state, indent=1))
    for name in a.arms:
        for seed in a.seeds or ([0, 1, 2] if name == "demo" else [0, 1]):
            key = f"{name}|{seed}"
            if key in state:
                continue
            print(f"{name}, seed {seed} ...", flush=True)
            state[key] = run_arm(name, ARMS[name], seed)
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
