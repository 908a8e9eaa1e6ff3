"""Adapting an encoder to new images (`lwzoo pretrain --init`): does starting from an encoder pretrained
elsewhere beat starting from scratch at the same short budget?

1. Source: MobileNet-V3-Large pretrained on a class-balanced CIFAR-10 subset (the tuned recipe with the recipe
   ablation's CIFAR settings: 32 px, whole images, no blur, key momentum 0.99, K 4,096, batch 256), exported.
2. Target: the built-in textures with the demo recipe, for each seed, started (a) from that export with
   ``init=`` and (b) from scratch, at the same budget.
3. kNN top-1 (k 20, T 0.07) on the built-in held-out split (the built-in training split votes) for every run,
   for the export before any adaptation, and for random init (seeds alike); paired by seed.

Every run is resumable: rerun the same command after an interruption and it continues.

    python benchmarks/domain_transfer.py                      # source 10,000 images x 30 epochs, 3 seeds
    python benchmarks/domain_transfer.py --epochs 12          # a shorter target budget
    python benchmarks/domain_transfer.py --dry-run            # tiny sizes, minutes: the script end to end
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import CIFAR_10K, subsets
from _results import write_section

from lwzoo import evaluate
from lwzoo.checkpoint import load_checkpoint
from lwzoo.env import cache_dir
from lwzoo.export import export
from lwzoo.hub_folder import WEIGHTS
from lwzoo.pretrain import pretrain
from lwzoo.progress import Console
from lwzoo.recipe import load_recipe
from lwzoo.run_folder import CHECKPOINT

ARCH = "mobilenetv3_large"
# the dry run: 16 px views, small batches and queues, so each stage takes seconds
DRY = ["augment.image_size=16", "data.decode_size=16", "moco.queue_size=64", "moco.mlp_hidden=64", "train.log_every=2"]


def run(out: Path, **kwargs) -> Path:
    """Pretrain into ``out`` until done: start it, resume it, or leave a finished run as it is."""
    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        state = load_checkpoint(ckpt)
        if state["step"] >= state["total_steps"]:
            return ckpt
        kwargs = {"resume": out, "device": kwargs["device"]}
    result = pretrain(ARCH, out=out, progress=Console(), **kwargs)
    if not result.finished:
        raise SystemExit(f"{out} stopped early; rerun to resume")
    return ckpt


def source_export(a: argparse.Namespace, root: Path) -> Path:
    """The CIFAR-10 encoder, trained once and exported (safetensors) once."""
    per_class = a.source_images // 10
    pool, _, _, _ = subsets(per_class, 1 if a.dry_run else 500)
    overrides = [
        *CIFAR_10K,  # recipe_ablation.py's ablation settings: the source is that study's tuned arm
        f"train.epochs={a.source_epochs}",
        *(DRY + ["train.batch_size=32"] if a.dry_run else []),
    ]
    ckpt = run(root / "source", data=pool, overrides=overrides, seed=0, device=a.device)
    folder = root / "source-export"
    if not (folder / WEIGHTS).is_file():
        export(ckpt, out=folder, safetensors=True, progress=Console())
    return folder


def knn(encoder: str | Path, out: Path, device: str, image_size: int | None = None) -> float:
    """kNN top-1 on the built-in held-out split, the built-in training split voting; the report goes to ``out``."""
    result = evaluate.knn(
        encoder, data="builtin", val_data="builtin:val", image_size=image_size, device=device, out=out
    )
    return result.top1


def target_runs(a: argparse.Namespace, root: Path, source: Path, seeds: list[int]) -> dict[str, list[float]]:
    """kNN of every seed's run from the export and from scratch, and of random init with the same seeds."""
    overrides = [*DRY, "train.batch_size=64"] if a.dry_run else []
    budget = {"data": "builtin", "recipe": "demo", "epochs": a.epochs, "overrides": overrides, "device": a.device}
    scores: dict[str, list[float]] = {"random": [], "scratch": [], "init": []}
    for seed in seeds:
        t0 = time.perf_counter()
        scratch = run(root / f"scratch-s{seed}", seed=seed, **budget)
        adapted = run(root / f"init-s{seed}", seed=seed, init=str(source), **budget)
        print(f"seed {seed}: both runs in {(time.perf_counter() - t0) / 60:.1f} min")
        scores["scratch"].append(knn(scratch, scratch.parent, a.device))
        scores["init"].append(knn(adapted, adapted.parent, a.device))
        # random init with the runs' preprocessing (the dry run's is 16 px, not the demo recipe's 32)
        size = 16 if a.dry_run else None
        scores["random"].append(knn(f"random:{ARCH}:{seed}", root / f"random-s{seed}", a.device, size))
    return scores


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def section(a: argparse.Namespace, source: Path, before: float, scores: dict[str, list[float]], seeds) -> str:
    epochs = a.epochs or load_recipe("demo").train.epochs
    diffs = [i - s for i, s in zip(scores["init"], scores["scratch"], strict=True)]

    def per_seed(key: str) -> str:
        return ", ".join(f"{v:.1f}" for v in scores[key])

    rows = [
        ("random init (timm's initialisation)", mean_sd(scores["random"]), per_seed("random")),
        ("CIFAR-10 export, before adaptation", f"{before:.1f}", "one encoder"),
        (f"from scratch, demo recipe, {epochs} epochs", mean_sd(scores["scratch"]), per_seed("scratch")),
        (f"`--init` the export, demo recipe, {epochs} epochs", mean_sd(scores["init"]), per_seed("init")),
        ("`--init` minus from scratch, paired by seed", mean_sd(diffs), ", ".join(f"{d:+.1f}" for d in diffs)),
    ]
    table = "\n".join(f"| {name} | {value} | {each} |" for name, value, each in rows)
    dry = "**DRY RUN (tiny sizes): these numbers say nothing about the method.**\n\n" if a.dry_run else ""
    return (
        "## Adapting an encoder to new images (`lwzoo pretrain --init`)\n\n"
        f"{dry}Source: MobileNet-V3-Large pretrained on {a.source_images:,} class-balanced CIFAR-10 training "
        f"images for {a.source_epochs} epochs (the tuned recipe at the recipe ablation's CIFAR settings), exported "
        f"(`{source.name}`). Target: the built-in textures, demo recipe, {epochs} epochs, seeds "
        f"{', '.join(map(str, seeds))}, from the export (`--init`: backbone loaded, projector, queue and optimizer "
        "fresh, no zero-init residuals) and from scratch. kNN top-1 % (k 20, T 0.07) on the built-in held-out "
        "split, the training split voting; mean ± sd over seeds.\n\n"
        "| encoder | kNN top-1 % | per seed |\n|---|---|---|\n" + table + "\n"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source-images", type=int, default=10_000, help="CIFAR-10 images the source trains on")
    p.add_argument("--source-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=None, help="target budget (default: the demo recipe's)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--device", default="auto")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes: checks the script, measures nothing")
    a = p.parse_args()
    if a.dry_run:
        a.source_images, a.source_epochs, a.epochs = min(a.source_images, 100), 1, a.epochs or 1
    seeds = [int(s) for s in a.seeds.split(",")]
    tag = f"src{a.source_images}-e{a.source_epochs}-t{a.epochs or 'demo'}" + ("-dry" if a.dry_run else "")
    root = cache_dir() / "bench" / "domain-transfer" / tag
    source = source_export(a, root)
    before = knn(source, root / "source-export-eval", a.device)  # at the export's own preprocessing (its 32 px)
    scores = target_runs(a, root, source, seeds)
    write_section("domain_transfer", section(a, source, before, scores, seeds))


if __name__ == "__main__":
    main()
