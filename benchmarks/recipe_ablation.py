"""The paper's claim, measured on CIFAR-10 at 32 px on CPU: (a) MoCo v2's ResNet-50 recipe against
(b) lwzoo's tuned recipe with plain InfoNCE and (c) the tuned recipe with smoothed InfoNCE, for
MobileNet-V3-Large and EfficientNet-B0; plus the recipe search that sets the tuned defaults.

Every arm gets the same data, epochs, batch, queue and image size (COMMON below); only the recipe
differs. Pretraining data is a fixed class-balanced subset of CIFAR-10 train; the kNN curve during
training and the recipe search score a disjoint held-out part of train; the final numbers fit kNN
and the linear probe on all 50,000 training images and score the 10,000 test images. Nothing is
tuned on the test split.

Each (net, arm, seed) is one resumable unit: a run stopped by Ctrl-C, SIGTERM or the end of a
session resumes from its checkpoint, and finished units are kept in ``recipe_ablation.json``
(committed), so the study carries on across sessions:

    python benchmarks/recipe_ablation.py run --seeds 0 1 2           # all nets and arms
    python benchmarks/recipe_ablation.py run --nets effnet_b0 --arms c --seeds 0
    python benchmarks/recipe_ablation.py search --knob moco.temperature --values 0.05 0.1 0.2 0.3
    python benchmarks/recipe_ablation.py report                      # RESULTS.md section + PNG
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _results import RESULTS, write_section
from eval_cifar import cifar_root

from lwzoo import evaluate
from lwzoo.checkpoint import LAST, load_checkpoint
from lwzoo.data import cache_dir, scan_folder
from lwzoo.metrics import read_metrics
from lwzoo.pretrain import pretrain

NETS = ["mobilenetv3_large", "effnet_b0"]
ARMS = {
    "a": ("MoCo v2 ResNet-50 recipe", "mocov2_resnet50", []),
    "b": ("lwzoo tuned, plain InfoNCE", None, ["loss.alpha=0.0"]),
    "c": ("lwzoo tuned + smoothed InfoNCE", None, []),
}
STATE = Path(__file__).with_name("recipe_ablation.json")
PNG = Path(__file__).with_name("recipe_ablation_knn.png")


def common(epochs: int) -> list[str]:
    """Dataset-scale settings every arm shares: CIFAR's 32 px, a queue under the subset's size, a key
    momentum for a thousand steps rather than a million."""
    return [
        "augment.image_size=32",
        "data.decode_size=32",
        "augment.eval_crop_pct=1.0",
        "augment.blur_p=0.0",  # sigma 0.1-2 px is sized for 224 px views
        "moco.queue_size=4096",
        # MoCo's m 0.999 is sized for ~1M ImageNet steps; over ~1k steps it leaves the key encoder near
        # its initialisation (issue #4's calibration: loss flat at ln(K+1)), for every arm alike
        "moco.momentum=0.99",
        "train.batch_size=256",
        f"train.epochs={epochs}",
        "train.log_every=20",
    ]


def subsets(per_class_train: int, per_class_val: int) -> tuple[Path, Path, Path, Path]:
    """Class-balanced, disjoint subsets of CIFAR-10 train as folders of symlinks: (pretrain, held-out)."""
    root = cifar_root()
    base = cache_dir() / "bench" / f"cifar10-sub{per_class_train}-val{per_class_val}"
    train_sub, val_sub = base / "train", base / "val"
    if not (base / "done").exists():
        paths, labels, classes = scan_folder(root / "train")
        by_class: dict[int, list[Path]] = {}
        for p, y in zip(paths, labels, strict=True):
            by_class.setdefault(y, []).append(p)
        for y, files in by_class.items():
            files = sorted(files)  # the sorted order of the tar's file names is the fixed "random" order
            for dest, chosen in ((train_sub, files[:per_class_train]), (val_sub, files[-per_class_val:])):
                (dest / classes[y]).mkdir(parents=True, exist_ok=True)
                for f in chosen:
                    link = dest / classes[y] / f.name
                    if not link.exists():
                        link.symlink_to(f)
        (base / "done").write_text("ok")
    return train_sub, val_sub, root / "train", root / "test"


def load_state() -> dict:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


def save_state(state: dict) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, STATE)


def run_unit(
    net: str,
    recipe: str,
    overrides: list[str],
    seed: int,
    data: Path,
    eval_data: Path,
    eval_every: int,
    out: Path,
    device: str,
) -> dict:
    kwargs = {"resume": out} if (out / LAST).exists() else {"recipe": recipe, "overrides": overrides, "data": data}
    t0 = time.perf_counter()
    result = pretrain(
        net, seed=seed, out=out, device=device, eval_every=eval_every, eval_data=eval_data, verbose=True, **kwargs
    )
    if not result.finished:
        raise SystemExit(f"{out.name}: stopped at step {result.step}/{result.total_steps}; rerun to resume")
    rows = read_metrics(out / "metrics.jsonl")
    return {
        "pretrain_s": load_checkpoint(out / LAST)["elapsed_s"],
        "final_loss": result.loss,
        "knn_curve": [(r["epoch"], r["knn_top1"]) for r in rows if r["kind"] == "eval"],
        "this_session_s": time.perf_counter() - t0,
    }


def cmd_run(a: argparse.Namespace) -> None:
    train_sub, val_sub, train_full, test = subsets(a.per_class, 500)
    state = load_state()
    budget = f"{a.per_class * 10 // 1000}k-e{a.epochs}"
    for seed in a.seeds:
        for net in a.nets:
            key = f"random|{net}|{budget}"
            for arm in a.arms:
                name, recipe, extra = ARMS[arm]
                unit = f"{net}|{arm}|{seed}|{budget}"
                if unit in state:
                    continue
                overrides = [*common(a.epochs), *extra]
                out = cache_dir() / "bench" / "ablation" / unit.replace("|", "-")
                print(f"=== {unit}: {name}", flush=True)
                record = run_unit(
                    net, recipe or net, overrides, seed, train_sub, val_sub, max(1, a.epochs // 10), out, a.device
                )
                knn = evaluate.knn(out, data=train_full, val_data=test, device=a.device, baseline=key not in state)
                lin = evaluate.linear(out, data=train_full, val_data=test, device=a.device, baseline=key not in state)
                if key not in state:
                    state[key] = {"knn": knn.baseline["top1"], "linear": lin.baseline["top1"]}
                record |= {
                    "knn": knn.top1,
                    "linear": lin.top1,
                    "recipe": recipe or net,
                    "overrides": overrides,
                    "command": f"lwzoo pretrain {net} --recipe {recipe or net} --data {train_sub} --seed {seed} "
                    + " ".join(f"--set '{o}'" for o in overrides),
                    "date": time.strftime("%Y-%m-%d"),
                }
                state[unit] = record
                save_state(state)
                print(f"    kNN {knn.top1:.2f}  linear {lin.top1:.2f}", flush=True)


def cmd_search(a: argparse.Namespace) -> None:
    """One knob at a time on the reduced budget, scored by kNN on the held-out part of train."""
    train_sub, val_sub, _, _ = subsets(a.per_class, 500)
    state = load_state()
    for value in a.values:
        unit = f"search|{a.net}|{a.knob}={value}|{a.seed}|{a.per_class * 10 // 1000}k-e{a.epochs}"
        if unit in state:
            continue
        overrides = [*common(a.epochs), f"{a.knob}={value}"]
        out = cache_dir() / "bench" / "search" / unit.replace("|", "-").replace("=", "_")
        print(f"=== {unit}", flush=True)
        record = run_unit(a.net, a.net, overrides, a.seed, train_sub, val_sub, max(1, a.epochs // 5), out, a.device)
        knn = evaluate.knn(out, data=train_sub, val_data=val_sub, device=a.device)
        state[unit] = record | {"val_knn": knn.top1, "overrides": overrides, "date": time.strftime("%Y-%m-%d")}
        save_state(state)
        print(f"    held-out kNN {knn.top1:.2f}", flush=True)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.1f}{sd} (n={len(values)})"


def cmd_report(_: argparse.Namespace) -> None:
    state = load_state()
    lines = ["## Recipe ablation on CIFAR-10 (issue #4)\n"]
    lines.append(
        "Pretraining: a class-balanced subset of CIFAR-10 train at 32 px; common settings for every arm: "
        f"`{' '.join(common(0)).replace('train.epochs=0', 'train.epochs=E')}`. Evaluation: kNN (k 20, T 0.07) and "
        "linear probe (L-BFGS) fitted on all 50,000 train images, scored on the 10,000 test images. The random-init "
        "row is timm's initialisation under the same preprocessing.\n"
    )
    units = {k: v for k, v in state.items() if not k.startswith(("search|", "random|"))}
    budgets = sorted({k.split("|")[3] for k in units})
    for budget in budgets:
        for net in NETS:
            rows = [k for k in units if k.startswith(f"{net}|") and k.endswith(f"|{budget}")]
            if not rows:
                continue
            lines.append(f"### {net}, budget {budget}\n")
            lines.append("| arm | kNN top-1 % | linear top-1 % | seeds | pretrain wall (mean) |\n|---|---|---|---|---|")
            base = state.get(f"random|{net}|{budget}")
            if base:
                lines.append(f"| random init | {base['knn']:.1f} | {base['linear']:.1f} | - | - |")
            for arm, (name, _, _) in ARMS.items():
                runs = [units[k] for k in rows if k.split("|")[1] == arm]
                if runs:
                    seeds = ", ".join(k.split("|")[2] for k in rows if k.split("|")[1] == arm)
                    wall = statistics.mean(r["pretrain_s"] for r in runs) / 60
                    lines.append(
                        f"| ({arm}) {name} | {_mean_sd([r['knn'] for r in runs])} | "
                        f"{_mean_sd([r['linear'] for r in runs])} | {seeds} | {wall:.0f} min |"
                    )
            lines.append("")
            lines.append("Commands: " + "; ".join(f"`{units[k]['command']}`" for k in sorted(rows)[:3]) + " ...\n")
    searches = {k: v for k, v in state.items() if k.startswith("search|")}
    if searches:
        lines.append("### Recipe search (held-out 5,000 train images, never the test split)\n")
        lines.append("| net | knob | seed | budget | held-out kNN top-1 % |\n|---|---|---|---|---|")
        for k in sorted(searches):
            _, net, knob, seed, budget = k.split("|")
            lines.append(f"| {net} | `{knob}` | {seed} | {budget} | {searches[k]['val_knn']:.1f} |")
    refs = _heldout_baselines(units)
    _plot(units, refs)
    lines.append(
        f"\n![kNN curves]({PNG.name})\n\nkNN curves during pretraining, scored on the held-out part of train (5,000 "
        "images; the pretraining subset votes); dashed: random init on the same split ("
        + ", ".join(f"{net} {budget}: {acc:.1f}%" for (net, budget), acc in refs.items())
        + ")."
    )
    write_section("recipe_ablation", "\n".join(lines))
    print("\n".join(lines))
    print(f"written: {RESULTS}, {PNG}")


def _heldout_baselines(units: dict) -> dict[tuple[str, str], float]:
    """Random-init kNN on the held-out part of train, per (net, budget): the curves' reference line.
    Scored with a finished unit's preprocessing (baseline=True); features are cached, so this is quick."""
    refs = {}
    for key in sorted(units):
        net, _, _, budget = key.split("|")
        if (net, budget) in refs:
            continue
        train_sub, val_sub, _, _ = subsets(int(budget.split("k")[0]) * 100, 500)
        out = cache_dir() / "bench" / "ablation" / key.replace("|", "-")
        with tempfile.TemporaryDirectory() as tmp:
            r = evaluate.knn(out, data=train_sub, val_data=val_sub, out=tmp, baseline=True, verbose=False)
        refs[(net, budget)] = r.baseline["top1"]
    return refs


def _plot(units: dict, heldout_random: dict[tuple[str, str], float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(NETS), figsize=(6 * len(NETS), 4), squeeze=False)
    for ax, net in zip(axes[0], NETS, strict=True):
        for arm, (name, _, _) in ARMS.items():
            for i, (_, v) in enumerate(sorted((k, v) for k, v in units.items() if k.startswith(f"{net}|{arm}|"))):
                epochs, accs = zip(*v["knn_curve"], strict=True) if v["knn_curve"] else ((), ())
                ax.plot(
                    epochs,
                    accs,
                    color=f"C{list(ARMS).index(arm)}",
                    alpha=0.8,
                    label=f"({arm}) {name}" if i == 0 else None,
                )
        for (ref_net, budget), acc in heldout_random.items():
            if ref_net == net:
                ax.axhline(acc, color="grey", linestyle="--", label=f"random init ({budget})")
        ax.set(title=net, xlabel="epoch", ylabel="held-out kNN top-1 %")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    fig.savefig(PNG, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--nets", nargs="*", default=NETS)
    r.add_argument("--arms", nargs="*", default=list(ARMS))
    r.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    r.add_argument("--epochs", type=int, default=30)
    r.add_argument("--per-class", type=int, default=1000, help="pretraining images per class (1000: a 10k subset)")
    r.add_argument("--device", default="auto")
    s = sub.add_parser("search")
    s.add_argument("--net", default="mobilenetv3_large")
    s.add_argument("--knob", required=True)
    s.add_argument("--values", nargs="+", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--per-class", type=int, default=1000)
    s.add_argument("--device", default="auto")
    sub.add_parser("report")
    a = p.parse_args()
    {"run": cmd_run, "search": cmd_search, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
