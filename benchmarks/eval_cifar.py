"""`lwzoo eval` on CIFAR-10 (train -> test): the wall time of evaluating one checkpoint (features plus
classifier) and the accuracy of a pretrained MobileNet-V3-Large against its random-init baseline,
by kNN and by linear probe.

CIFAR-10 comes from ``../shared/data/cifar10-jpg.tar`` (extracted once to ``$LWZOO_CIFAR``, default
``~/.cache/lwzoo/cifar10``). Without ``--checkpoint`` it pretrains one first (resumable), with the
demo recipe at 32 px but MoCo v2's hue jitter (CIFAR's colours carry class information) and K 4096.

    python benchmarks/eval_cifar.py --pretrain-epochs 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import cifar_root
from _results import write_section

from lwzoo import evaluate
from lwzoo.checkpoint import load_checkpoint
from lwzoo.env import cache_dir
from lwzoo.pretrain import pretrain
from lwzoo.run_folder import CHECKPOINT

PRETRAIN = [
    "augment.jitter=[0.4, 0.4, 0.4, 0.1]",
    "moco.queue_size=4096",
    "train.log_every=50",
]


def weight_decay_text(settings: dict) -> str:
    """The probe's chosen weight decay and every one tried, with its top-1 on the held-out fifth of train."""
    tried = ", ".join(f"{float(wd):g}: {acc:.2f}" for wd, acc in settings["held_out_accuracy"].items())
    return f"weight decay {settings['weight_decay']:g} (held-out top-1 % of each one tried: {tried})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="evaluate this checkpoint instead of pretraining one")
    p.add_argument("--pretrain-epochs", type=int, default=8)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    root = cifar_root()
    train, test = root / "train", root / "test"

    run_dir = cache_dir() / "bench" / f"eval-cifar-e{a.pretrain_epochs}"
    ckpt = Path(a.checkpoint) if a.checkpoint else run_dir / CHECKPOINT
    if not a.checkpoint and not (
        ckpt.is_file() and load_checkpoint(ckpt)["step"] == load_checkpoint(ckpt)["total_steps"]
    ):
        kwargs = (
            {"resume": ckpt.parent}
            if ckpt.is_file()
            else {"recipe": "demo", "overrides": PRETRAIN, "epochs": a.pretrain_epochs, "data": train}
        )
        t0 = time.perf_counter()
        result = pretrain("mobilenetv3_large", out=ckpt.parent, device=a.device, **kwargs)
        if not result.finished:
            raise SystemExit("pretraining stopped early; rerun to resume")
        print(f"pretraining: {(time.perf_counter() - t0) / 60:.1f} min")

    rows, timing, chosen = [], [], []
    for protocol in ("linear", "knn"):
        fn = evaluate.linear if protocol == "linear" else evaluate.knn
        t0 = time.perf_counter()
        r = fn(ckpt, data=train, val_data=test, device=a.device, cache=False)  # cold: features and classifier
        wall = time.perf_counter() - t0
        timing.append(f"| {protocol} | {r.seconds['features']:.1f} | {r.seconds['probe']:.1f} | {wall:.1f} |")
        b = fn(ckpt, data=train, val_data=test, device=a.device, baseline=True).baseline  # same preprocessing
        rows.append(f"| {protocol} | {b['top1']:.2f} | {r.top1:.2f} | {b['top5']:.2f} | {r.top5:.2f} |")
        if protocol == "linear":
            chosen = [
                f"pretrained: {weight_decay_text(r.settings)}",
                f"random init: {weight_decay_text(b['settings'])}",
            ]
    ck = load_checkpoint(ckpt)
    body = (
        "## Evaluation on CIFAR-10 (train 50,000 -> test 10,000)\n\n"
        + (
            f"Checkpoint: `{a.checkpoint}` (given with --checkpoint): MobileNet-V3-Large, recipe "
            f"`{ck['recipe']['name']}`, {ck['step']} steps on {ck['data']['num_images']:,} images, seed {ck['seed']}. "
            if a.checkpoint
            else f"Checkpoint: MobileNet-V3-Large, recipe `{ck['recipe']['name']}` + `{' '.join(PRETRAIN)}`, "
            f"{ck['recipe']['train']['epochs']} epochs ({ck['step']} steps) on CIFAR-10 train at 32 px, "
            f"seed {ck['seed']}. "
        )
        + "Random init: timm's initialisation, seed 0, same preprocessing (32 px, whole image).\n\n"
        "| protocol | random init top-1 % | pretrained top-1 % | random init top-5 % | pretrained top-5 % |\n"
        "|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nLinear probe: L-BFGS on standardised features; the weight decay is chosen on a held-out fifth of "
        "train (never the test split), from 1e-1 down towards 1e-5 until a decade scores lower, grown a decade at a "
        "time past an end that wins.\n\n"
        + "\n".join(f"- {line}" for line in chosen)
        + "\n\nWall time of one cold evaluation of the pretrained checkpoint (no feature cache, 60,000 images):\n\n"
        "| protocol | features s (train + test) | classifier s | wall s, end to end |\n|---|---|---|---|\n"
        + "\n".join(timing)
    )
    print(body)
    write_section("eval_cifar", body)


if __name__ == "__main__":
    main()
