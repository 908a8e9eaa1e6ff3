"""What smoothed InfoNCE's smoothing set holds, for the recipe ablation's trained encoders: the evidence
behind "smoothing is neutral at this budget" (benchmarks/RESULTS.md, issue #4).

The smoothing target moves alpha from the positive onto the k queue keys most similar to the query: the
paper's remedy for noisy views, a positive that may be a poor match and near negatives that may be the
query's own class (false negatives). Whether that is what limits a model shows in how well it already
fits its positives and in how many of those k keys are false negatives. For each finished
unit of recipe_ablation.py whose run folder is on this machine, and for the same net at initialisation,
this measures on the unit's pretraining subset (CIFAR-10 labels are used here only, never in training):

- precision@k: the share of each query's k most similar queue keys that have the query's class
  (chance: ~10% for CIFAR-10's balanced classes);
- the softmax mass, at the recipe's T, that the model already puts on the positive and on those k keys,
  beside the mass alpha the smoothed target gives them;
- instance accuracy: how often the positive key outscores all K queue keys.

Queries are one augmented view of Q images through the query encoder, positives the other view through
the key encoder, and the queue K further images' views through the key encoder (a labelled stand-in for
the training queue, whose images are not recorded), all as in a training step (train-mode BatchNorm,
key_bn_splits chunks, no gradient).

    python benchmarks/smoothing_neighbours.py run      # every finished unit with a checkpoint here
    python benchmarks/smoothing_neighbours.py report   # RESULTS.md section from smoothing_neighbours.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from _common import ARMS, load_state, subsets, unit_dir
from _results import machine, write_section

from lwzoo.archs import get_arch
from lwzoo.checkpoint import load_checkpoint
from lwzoo.data import load_images
from lwzoo.engine import Engine, step_generator
from lwzoo.losses import infonce_logits
from lwzoo.recipe import recipe_from_dict
from lwzoo.run_folder import CHECKPOINT

STATE = Path(os.environ.get("LWZOO_NEIGHBOURS_STATE", Path(__file__).with_name("smoothing_neighbours.json")))
KS = (1, 5, 20)
QUERIES = 2048


@torch.no_grad()
def measure(
    engine: Engine, images: torch.Tensor, labels: torch.Tensor, queries: int = QUERIES, seed: int = 0
) -> dict[str, float]:
    """The statistics above for one engine; ``images`` uint8 (N, 3, S, S), labels (N,)."""
    r = engine.recipe
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(images), generator=g)
    q_idx, n_idx = perm[:queries], perm[queries : queries + r.moco.queue_size]
    if len(n_idx) < r.moco.queue_size:
        raise SystemExit(f"need {queries + r.moco.queue_size} images for {queries} queries and a queue of "
                         f"{r.moco.queue_size}; got {len(images)}")  # fmt: skip
    engine.model.train()  # as in a training step: BN on batch statistics
    bs = r.train.batch_size

    def encode(idx: torch.Tensor, both: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        qs, ks = [], []
        for i, chunk in enumerate(idx.split(bs)):
            aug = step_generator(engine.device, seed, 10_000 + i + (0 if both else 5_000))
            x1, x2 = engine.augment(images[chunk].to(engine.device), aug)
            if both:
                qs.append(engine.model.query(x1))  # B x D
            ks.append(engine.model.keys(x2, aug))  # B x D
        return torch.cat(ks), (torch.cat(qs) if both else None)

    k_pos, q = encode(q_idx, both=True)  # Q x D each
    queue, _ = encode(n_idx, both=False)  # K x D
    logits = infonce_logits(q, k_pos, queue, r.moco.temperature)  # Q x (1+K)
    return neighbour_stats(logits, labels[q_idx], labels[n_idx])


def neighbour_stats(logits: torch.Tensor, y_q: torch.Tensor, y_n: torch.Tensor) -> dict[str, float]:
    """The statistics of the module docstring from InfoNCE logits (Q, 1+K) (column 0: the positive), the
    queries' labels (Q,) and the queue's labels (K,)."""
    p = logits.double().softmax(dim=1)
    out = {
        "instance_acc": (logits[:, 0] > logits[:, 1:].max(dim=1).values).double().mean().item() * 100,
        "p_positive": p[:, 0].mean().item(),
        "same_class_in_queue": (y_n[None, :] == y_q[:, None]).double().mean().item() * 100,
    }
    for k in KS:
        top = logits[:, 1:].topk(k, dim=1).indices  # Q x k, as smoothed_targets picks them
        out[f"precision@{k}"] = (y_n[top] == y_q[:, None]).double().mean().item() * 100
        out[f"p_top{k}"] = p[:, 1:].gather(1, top).sum(dim=1).mean().item()
    return out


def engine_for(ckpt: dict | None, net: str, recipe_dict: dict, seed: int) -> Engine:
    """The unit's trained engine, or (``ckpt`` None) the same net and recipe at initialisation."""
    engine = Engine(get_arch(net), recipe_from_dict(recipe_dict), 1, seed, torch.device("cpu"))
    if ckpt is not None:
        engine.model.load_state_dict(ckpt["model"])
    return engine


def cmd_run(a: argparse.Namespace) -> None:
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    units = [k for k in load_state() if not k.startswith(("search|", "random|"))]
    if a.nets:
        units = [k for k in units if k.split("|")[0] in a.nets]
    for key in sorted(units):
        net, arm, seed, budget = key.split("|")
        out = unit_dir("ablation", key)
        if key in state or not (out / CHECKPOINT).exists():
            continue
        train_sub, *_ = subsets(round(float(budget.split("k")[0]) * 100), 500)
        data = load_images(train_sub, 32)
        ckpt = load_checkpoint(out / CHECKPOINT)
        rows = {key: engine_for(ckpt, net, ckpt["recipe"], int(seed))}
        # the tuned arms' encoders before training ((b) and (c) of a seed start from the same weights)
        init_key = f"init|{net}|{seed}|{budget}"
        if arm in ("b", "c") and init_key not in state:
            rows[init_key] = engine_for(None, net, ckpt["recipe"], int(seed))
        for row_key, engine in rows.items():
            t0 = time.perf_counter()
            state[row_key] = measure(engine, data.images, data.labels) | {
                "alpha": engine.recipe.loss.alpha,
                "topk": engine.recipe.loss.topk,
                "temperature": engine.recipe.moco.temperature,
                "machine": machine(),
                "date": time.strftime("%Y-%m-%d"),
            }
            s = state[row_key]
            print(f"{row_key}: precision@5 {s['precision@5']:.1f}%  p_top5 {s['p_top5']:.3f}  "
                  f"p_pos {s['p_positive']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            tmp = STATE.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
            os.replace(tmp, STATE)


def _cell(rows: list[dict], key: str, scale: float = 1.0, digits: int = 1) -> str:
    values = [r[key] * scale for r in rows]
    sd = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{sd}"


def cmd_report(_: argparse.Namespace) -> None:
    state = json.loads(STATE.read_text())
    lines = [
        "## What the smoothing set holds (issue #4)\n",
        "For the recipe ablation's trained encoders (10k-e30, CIFAR-10 at 32 px) on their own pretraining subset: "
        f"{QUERIES} queries (one augmented view, query encoder) against their positive (the other view) and a "
        "labelled stand-in queue of K 4096 other images' views (key encoder), as in a training step. "
        "precision@k: share of the k most similar queue keys with the query's class (chance ~10%); "
        "p(top-k): softmax mass at T that the model itself puts on those k keys; the smoothed target gives them "
        "alpha in all (0.1 in arm (c), spread 0.02 on each of k 5). Instance accuracy: the positive outscores all "
        "K keys. Mean ± sd over seeds; 'init': the tuned recipe's encoders before training (the weights (b) and "
        "(c) start from).\n",
        "| net | encoders | seeds | precision@1 % | precision@5 % | precision@20 % | p(positive) | p(top-5) "
        "| instance acc % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    nets = sorted({k.split("|")[0] for k in state if not k.startswith("init|")})
    for net in nets:
        groups = {"init": [v for k, v in state.items() if k.startswith(f"init|{net}|")]}
        for arm, (name, _, _) in ARMS.items():
            groups[f"({arm}) {name}"] = [v for k, v in state.items() if k.startswith(f"{net}|{arm}|")]
        for label, rows in groups.items():
            if not rows:
                continue
            seeds = len(rows)
            lines.append(
                f"| {net} | {label} | {seeds} | {_cell(rows, 'precision@1')} | {_cell(rows, 'precision@5')} | "
                f"{_cell(rows, 'precision@20')} | {_cell(rows, 'p_positive', digits=4)} | "
                f"{_cell(rows, 'p_top5', digits=3)} | {_cell(rows, 'instance_acc')} |"
            )
    missing = sorted(k for k in load_state() if not k.startswith(("search|", "random|")) and k not in state)
    if missing:
        lines.append(
            f"\nNot measured ({len(missing)} units: `run` measures a unit only where its checkpoint is, and "
            "recipe_ablation.json keeps results, not checkpoints): " + ", ".join(f"`{k}`" for k in missing) + "."
        )
    write_section("smoothing_neighbours", "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="measure every finished ablation unit whose checkpoint is here")
    run.add_argument("--nets", nargs="*")
    sub.add_parser("report", help="write the RESULTS.md section")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    {"run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
