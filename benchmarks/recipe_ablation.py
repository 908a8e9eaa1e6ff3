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
    python benchmarks/recipe_ablation.py search --sweep moco.temperature=0.2 --sweep loss.alpha=0.3
    python benchmarks/recipe_ablation.py report                      # RESULTS.md section + PNG

On a GPU, ``queue`` runs the ablation and then the search as one prioritised queue of child processes
sharing the device, under a deadline (benchmarks/gpu_session.sh is the device session's script):

    python benchmarks/recipe_ablation.py queue --device cuda --jobs 12 --deadline 420 --tag h200 --sweep ...
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import ARMS, STATE, load_state, subsets, unit_dir
from _results import RESULTS, machine, write_section

from lwzoo import evaluate
from lwzoo.checkpoint import load_checkpoint
from lwzoo.data import default_workers, load_images
from lwzoo.env import cache_dir
from lwzoo.metrics import read_metrics
from lwzoo.pretrain import pretrain
from lwzoo.progress import SILENT, Console
from lwzoo.run_folder import CHECKPOINT, METRICS

NETS = ["mobilenetv3_large", "effnet_b0"]
PNG = STATE.with_name("recipe_ablation_knn.png")


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


@contextmanager
def _locked() -> Iterator[None]:
    """Serialise read-modify-write of the state file between units running in parallel."""
    with open(STATE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def update_state(entries: dict) -> None:
    """Merge ``entries`` into the state file atomically (other units may have finished meanwhile)."""
    with _locked():
        state = load_state() | entries
        tmp = STATE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, STATE)


@dataclass(frozen=True)
class Unit:
    """One resumable (net, recipe, seed, budget) pretraining plus its evaluation."""

    key: str  # its row in recipe_ablation.json
    kind: str  # "ablation": kNN and linear on CIFAR-10 test; "search": kNN on the held-out part of train
    net: str
    recipe: str
    overrides: tuple[str, ...]
    seed: int
    per_class: int
    eval_every: int
    random_key: str = ""  # ablation: where the random-init row of this (net, budget) lives

    @property
    def out(self) -> Path:
        return unit_dir(self.kind, self.key)


def budget_name(per_class: int, epochs: int, tag: str) -> str:
    return f"{per_class * 10 / 1000:g}k-e{epochs}" + (f"-{tag}" if tag else "")


def run_unit(unit: Unit, device: str, verbose: bool = True) -> None:
    """Pretrain (or resume) one unit, evaluate it and record it in the state file."""
    progress = Console() if verbose else SILENT
    train_sub, val_sub, train_full, test = subsets(unit.per_class, 500)
    out = unit.out
    if (out / CHECKPOINT).exists():
        kwargs = {"resume": out}
    else:
        kwargs = {"recipe": unit.recipe, "overrides": list(unit.overrides), "data": train_sub}
    t0 = time.perf_counter()
    result = pretrain(
        unit.net, seed=unit.seed, out=out, device=device, eval_every=unit.eval_every, eval_data=val_sub,
        progress=progress, **kwargs,
    )  # fmt: skip
    if not result.finished:
        raise SystemExit(f"{unit.key}: stopped at step {result.step}/{result.total_steps}; rerun to resume")
    rows = read_metrics(out / METRICS)
    record = {
        "pretrain_s": load_checkpoint(out / CHECKPOINT)["elapsed_s"],
        "final_loss": result.loss,
        "knn_curve": [(r["epoch"], r["knn_top1"]) for r in rows if r["kind"] == "eval"],
        "this_session_s": time.perf_counter() - t0,
        "recipe": unit.recipe,
        "overrides": list(unit.overrides),
        "command": f"lwzoo pretrain {unit.net} --recipe {unit.recipe} --data {train_sub} --seed {unit.seed} "
        + " ".join(f"--set '{o}'" for o in unit.overrides),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    entries = {}
    if unit.kind == "search":
        record["val_knn"] = evaluate.knn(out, data=train_sub, val_data=val_sub, device=device, progress=progress).top1
        print(f"    {unit.key}: held-out kNN {record['val_knn']:.2f}", flush=True)
    else:
        first = unit.random_key not in load_state()  # its random-init row comes with the first finished unit
        scoring = {"data": train_full, "val_data": test, "device": device, "baseline": first, "progress": progress}
        knn, lin = evaluate.knn(out, **scoring), evaluate.linear(out, **scoring)
        record |= {"knn": knn.top1, "linear": lin.top1}
        if first:
            with tempfile.TemporaryDirectory() as tmp:  # the held-out split: the kNN curves' reference line
                held = evaluate.knn(out, data=train_sub, val_data=val_sub, device=device, out=tmp, baseline=True)
                held = held.baseline["top1"]
            entries[unit.random_key] = {"knn": knn.baseline["top1"], "linear": lin.baseline["top1"]}
            entries[unit.random_key]["heldout_knn"] = held
        print(f"    {unit.key}: kNN {knn.top1:.2f}  linear {lin.top1:.2f}", flush=True)
    entries[unit.key] = record
    update_state(entries)


def _progress(unit: Unit) -> float:
    """Fraction of its optimizer steps a running unit has done, from the tail of its metrics.jsonl."""
    opts = dict(o.split("=", 1) for o in unit.overrides)
    total = int(opts["train.epochs"]) * (unit.per_class * 10 // int(opts["train.batch_size"]))
    try:
        with open(unit.out / METRICS, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            last = f.read().decode(errors="ignore").strip().splitlines()[-1]
        return min(1.0, json.loads(last)["step"] / total)
    except (OSError, IndexError, ValueError, KeyError):
        return 0.0


def execute(units: list[Unit], device: str, jobs: int, deadline_s: float | None) -> None:
    """Run the units not yet in the state file, in order of priority: in this process one after another,
    or with ``jobs`` > 1 as that many child processes (small nets at 32 px leave a GPU mostly idle, so
    several share one).

    With ``deadline_s``, a unit's stop is planned, not left to chance: none starts that its kind's measured
    wall time says cannot finish in time; running units that their measured pace says cannot finish are
    stopped, less important ones first, to give the others their share of the device; at the deadline
    the rest get SIGTERM (they checkpoint, and resume on a later call)."""
    state = load_state()
    pending = [u for u in units if u.key not in state]
    print(f"{len(units) - len(pending)} of {len(units)} units already done; {len(pending)} to run", flush=True)
    if not pending:
        return
    if jobs <= 1 and deadline_s is None:
        for unit in pending:
            print(f"=== {unit.key}", flush=True)
            run_unit(unit, device)
        return
    for per_class in sorted({u.per_class for u in pending}):
        warm_caches(per_class)  # once here, not raced by the children
    logs = cache_dir() / "bench" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    priority = {u.key: i for i, u in enumerate(pending)}
    t0, running, walls, pace = time.monotonic(), {}, {}, {}
    eval_s = 90.0  # allowance for a finished unit's evaluation (>80 s seen on an H200 machine's host)

    def kind(u: Unit) -> tuple:
        return (u.kind, u.net, u.recipe, u.overrides)

    def stamp() -> str:
        return f"[{time.monotonic() - t0:6.0f} s]"

    def stop(keys: list[str], why: str) -> None:
        """SIGTERM these units (each saves a checkpoint after its current step), then wait for them."""
        t_stop = time.monotonic()
        for key in keys:
            running[key][0].send_signal(signal.SIGTERM)
            print(f"{stamp()} stopping {key} at {_progress(running[key][1]):.0%}: {why}", flush=True)
        for key in keys:
            proc, _, _, log = running.pop(key)
            try:
                proc.wait(timeout=max(1.0, 30 - (time.monotonic() - t_stop)))
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

    while pending or running:
        now = time.monotonic()
        for key, (proc, unit, started, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[key]
                walls.setdefault(kind(unit), []).append(now - started)
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; log {log.name})"
                print(f"{stamp()} {status}: {key} in {now - started:.0f} s", flush=True)
        if deadline_s is not None:
            left = deadline_s - (now - t0)
            if left <= 0:  # units already evaluating get eval_s more; nothing new starts
                late = [k for k in running if left <= -eval_s or _progress(running[k][1]) < 1.0]
                if late:
                    stop(late, "deadline")
                if not running:
                    print(f"{stamp()} deadline: {len(pending)} units not started", flush=True)
                    return
                time.sleep(5.0)
                continue
            # A unit that its own pace over the last minute says cannot finish is stopped, the less important
            # half of such units at a time, then the pace is measured again: on a device the units share
            # (pace ~ 1 / units), the others speed up; where each is bound by its own host process (seen on
            # an H200: 14 units ran each at the pace of one), they do not, and no speed-up is assumed.
            hopeless = []
            for key, (_, unit, started, _) in running.items():
                history = pace.setdefault(key, [])
                history.append((now, _progress(unit)))
                while len(history) > 2 and history[1][0] < now - 60:
                    history.pop(0)
                (t_a, p_a), (t_b, p_b) = history[0], history[-1]
                if p_b < 1 and t_b - t_a >= 30 and now - started > 90:  # (at 100% it is evaluating)
                    rate = (p_b - p_a) / (t_b - t_a)
                    if rate <= 0 or (1 - p_b) / rate + eval_s > left:
                        hopeless.append(key)
            first = min(running, key=priority.get, default=None)
            hopeless = sorted((k for k in hopeless if k != first), key=priority.get)
            if hopeless:
                stop(hopeless[len(hopeless) // 2 :], f"at its pace it cannot finish in {left:.0f} s")
                jobs = min(jobs, len(running))  # their slots stay empty
                for history in pace.values():
                    history.clear()  # the pace may change now
                continue
        while pending and len(running) < jobs:
            unit = pending.pop(0)
            est = max(walls.get(kind(unit), [0.0]))
            if deadline_s is not None and (now - t0) + est > deadline_s:
                print(f"{stamp()} skipped (needs ~{est:.0f} s): {unit.key}", flush=True)
                continue
            log = open(logs / f"{unit.out.name}.log", "w")  # noqa: SIM115 -- open while the child runs
            cmd = [sys.executable, __file__, "_unit", json.dumps(asdict(unit)), "--device", device]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            running[unit.key] = (proc, unit, time.monotonic(), log)
            print(f"{stamp()} started: {unit.key}", flush=True)
        time.sleep(5.0)


def warm_caches(per_class: int) -> None:
    """Make the subsets and decode every image folder once (in parallel workers), before children share them."""
    for folder in subsets(per_class, 500):
        load_images(folder, 32, workers=default_workers())


def ablation_units(a: argparse.Namespace) -> list[Unit]:
    budget = budget_name(a.per_class, a.epochs, a.tag)
    units = []
    for seed in a.seeds:
        for net in a.nets:
            for arm in a.arms:
                _, recipe, extra = ARMS[arm]
                key = f"{net}|{arm}|{seed}|{budget}"
                overrides = (*common(a.epochs), *extra)
                units.append(Unit(key, "ablation", net, recipe or net, overrides, seed, a.per_class,
                                  eval_every=max(1, a.epochs // 10), random_key=f"random|{net}|{budget}"))  # fmt: skip
    return units


def search_units(a: argparse.Namespace) -> list[Unit]:
    """One change at a time from the tuned recipe; the unchanged recipe ("base") is the reference. A sweep
    is one or more overrides joined by ';'."""
    budget = budget_name(a.per_class, a.search_epochs, a.tag)
    units = []
    for seed in a.search_seeds:
        for sweep in ["base", *a.sweep]:
            changes = [] if sweep == "base" else [o.strip() for o in sweep.split(";")]
            key = f"search|{a.net}|{sweep}|{seed}|{budget}"
            overrides = (*common(a.search_epochs), *changes)
            units.append(Unit(key, "search", a.net, a.net, overrides, seed, a.per_class, max(1, a.search_epochs // 5)))
    return units


def _mean_sd(values: list[float], signed: bool = False) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    mean = f"{statistics.mean(values):+.1f}" if signed else f"{statistics.mean(values):.1f}"
    return f"{mean}{sd} (n={len(values)})"


def _each(diffs: list[float]) -> str:
    """Every seed's difference, signed: at 2-3 seeds the spread is the point, and a mean can hide a sign flip."""
    return ", ".join(f"{d:+.1f}" for d in diffs)


def _paired(units: dict, rows: list[str], arm: str, ref: str, metric: str) -> str:
    """Mean ± sd over seeds of the per-seed difference arm - ref (seeds that ran both)."""
    by = {(k.split("|")[1], k.split("|")[2]): units[k][metric] for k in rows}
    seeds = sorted((s for (a, s) in by if a == arm and (ref, s) in by), key=int)
    if not seeds:
        return "-"
    diffs = [by[(arm, s)] - by[(ref, s)] for s in seeds]
    return f"{_mean_sd(diffs, signed=True).split(' (')[0]} (seed {', '.join(seeds)}: {_each(diffs)})"


def cmd_report(_: argparse.Namespace) -> None:
    state = load_state()
    lines = ["## Recipe ablation on CIFAR-10 (issue #4)\n"]
    lines.append(
        "Pretraining: a class-balanced subset of CIFAR-10 train at 32 px; common settings for every arm: "
        f"`{' '.join(common(0)).replace('train.epochs=0', 'train.epochs=E')}`. Evaluation: kNN (k 20, T 0.07) and "
        "linear probe (L-BFGS) fitted on all 50,000 train images, scored on the 10,000 test images. The random-init "
        "row is timm's initialisation under the same preprocessing. A budget `10k-e30` is 10,000 images x 30 epochs; "
        "a suffix names the machine class it ran on (no suffix: the 2-core CPU). On the CPU, units whose machine says "
        "1 torch thread ran two at a time (`OMP_NUM_THREADS=1 ... --jobs 2`: each 139-140 images/s against 219 for "
        "one unit alone on 2 threads, 1.28x in all; tuned recipe, steps 40-70, 2026-11-28). Wall times are per unit "
        "and depend on what shared the machine: EfficientNet-B0's b2 and a2 overlapped the recipe search (up to four "
        "processes on the 2 cores, 2026-12-01).\n"
    )
    units = {k: v for k, v in state.items() if not k.startswith(("search|", "random|"))}
    refs: dict[tuple[str, str], float] = {}
    for budget in sorted({k.split("|")[3] for k in units}):
        for net in NETS:
            rows = sorted(k for k in units if k.startswith(f"{net}|") and k.endswith(f"|{budget}"))
            if not rows:
                continue
            lines.append(f"### {net}, budget {budget}\n")
            machines: dict[str, list[str]] = {}
            for k in rows:  # the first records predate the machine field: 2-core CPU, 2 threads, one at a time
                machines.setdefault(units[k].get("machine", "2-core CPU, 2 torch threads"), []).append(k)
            lines.append(
                "Machine: "
                + "; ".join(
                    f"{m} ({', '.join(k.split('|')[1] + k.split('|')[2] for k in ks)})" for m, ks in machines.items()
                )
                + "\n"
            )
            lines.append(
                "| arm | kNN top-1 % | linear top-1 % | seeds | pretrain wall, each seed |\n|---|---|---|---|---|"
            )
            base = state.get(f"random|{net}|{budget}")
            if base:
                lines.append(f"| random init | {base['knn']:.1f} | {base['linear']:.1f} | - | - |")
                held = base.get("heldout_knn") or _heldout_random(rows[0])
                if held is not None:
                    refs[(net, budget)] = held
                    if "heldout_knn" not in base:
                        update_state({f"random|{net}|{budget}": base | {"heldout_knn": held}})
            for arm, (name, _, _) in ARMS.items():
                runs = [units[k] for k in rows if k.split("|")[1] == arm]
                if runs:
                    seeds = ", ".join(k.split("|")[2] for k in rows if k.split("|")[1] == arm)
                    # per seed, not a mean: units run alone (2 threads) and two at once (1 thread each) differ
                    walls = ", ".join(f"{r['pretrain_s'] / 60:.0f}" for r in runs)
                    lines.append(
                        f"| ({arm}) {name} | {_mean_sd([r['knn'] for r in runs])} | "
                        f"{_mean_sd([r['linear'] for r in runs])} | {seeds} | {walls} min |"
                    )
            lines.append("\nPaired by seed (difference of top-1, mean ± sd over seeds):\n")
            lines.append("| comparison | kNN | linear |\n|---|---|---|")
            for arm, ref, what in (("b", "a", "tuned - ResNet-50 recipe"), ("c", "b", "smoothing: (c) - (b)")):
                lines.append(
                    f"| {what} | {_paired(units, rows, arm, ref, 'knn')} | {_paired(units, rows, arm, ref, 'linear')} |"
                )
            firsts = {k.split("|")[1]: k for k in reversed(rows)}  # each arm's lowest seed
            lines.append(
                "\nCommands (each arm's first seed; `--seed S` for the others): "
                + "; ".join(f"`{units[k]['command']}`" for _, k in sorted(firsts.items()))
                + "\n"
            )
    lines += _search_tables(state)
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


def _search_tables(state: dict) -> list[str]:
    searches = {k: v for k, v in state.items() if k.startswith("search|")}
    if not searches:
        return []
    lines = [
        "### Recipe search (kNN on 5,000 held-out train images, never the test split)\n",
        "One change at a time from the tuned recipe (`base`), on the reduced budget; Δ is against `base` "
        "of the same seeds.\n",
    ]
    groups: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for k, v in searches.items():
        _, net, sweep, seed, budget = k.split("|")
        groups.setdefault((net, budget), {}).setdefault(sweep, {})[int(seed)] = v["val_knn"]
    for (net, budget), sweeps in sorted(groups.items()):
        base = sweeps.get("base", {})
        lines.append(f"**{net}, budget {budget}**\n")
        lines.append("| change | held-out kNN top-1 % | Δ vs base | seeds |\n|---|---|---|---|")
        subset = budget.split("-")[0]  # the same subset and held-out split, whatever the epochs or machine
        refs = [
            v["heldout_knn"] for k, v in state.items() if k.startswith(f"random|{net}|{subset}-") and "heldout_knn" in v
        ]
        if refs:
            lines.append(f"| random init | {refs[0]:.1f} | - | - |")
        for sweep, by_seed in sorted(sweeps.items(), key=lambda kv: (kv[0] != "base", kv[0])):
            diffs = [by_seed[s] - base[s] for s in sorted(by_seed) if s in base] if sweep != "base" else []
            delta = _mean_sd(diffs, signed=True).split(" (")[0]  # "-" without a common seed
            if len(diffs) > 1:
                delta += f" ({_each(diffs)})"
            seeds = ", ".join(str(s) for s in sorted(by_seed))
            lines.append(f"| `{sweep}` | {_mean_sd(list(by_seed.values())).split(' (')[0]} | {delta} | {seeds} |")
        epochs = budget.split("-")[1][1:]
        lines.append(
            f"\nCommand: `python benchmarks/recipe_ablation.py search --net {net} --search-epochs {epochs} "
            "--search-seeds S --sweep KNOB=VALUE ...`; each unit runs `lwzoo pretrain` with the ablation's common "
            "settings plus its change (the exact command of each is in recipe_ablation.json).\n"
        )
    return lines


def _heldout_random(unit_key: str) -> float | None:
    """Random-init kNN on the held-out part of train for a unit run on this machine (None if its run folder
    is elsewhere): scored with that unit's preprocessing (baseline=True); features are cached."""
    net, _, _, budget = unit_key.split("|")
    out = unit_dir("ablation", unit_key)
    if not (out / CHECKPOINT).exists():
        return None
    train_sub, val_sub, _, _ = subsets(round(float(budget.split("k")[0]) * 100), 500)
    with tempfile.TemporaryDirectory() as tmp:
        r = evaluate.knn(out, data=train_sub, val_data=val_sub, out=tmp, baseline=True)
    return r.baseline["top1"]


def _plot(units: dict, heldout_random: dict[tuple[str, str], float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({k.split("|")[3] for k in units}) or ["-"]
    fig, axes = plt.subplots(len(budgets), len(NETS), figsize=(6 * len(NETS), 4 * len(budgets)), squeeze=False)
    for row, budget in zip(axes, budgets, strict=True):
        for ax, net in zip(row, NETS, strict=True):
            for arm, (name, _, _) in ARMS.items():
                mine = sorted((k, v) for k, v in units.items() if k.startswith(f"{net}|{arm}|") and k.endswith(budget))
                for i, (_, v) in enumerate(mine):
                    epochs, accs = zip(*v["knn_curve"], strict=True) if v["knn_curve"] else ((), ())
                    ax.plot(epochs, accs, color=f"C{list(ARMS).index(arm)}", alpha=0.8,
                            label=f"({arm}) {name}" if i == 0 else None)  # fmt: skip
            if (net, budget) in heldout_random:
                ax.axhline(heldout_random[(net, budget)], color="grey", linestyle="--", label="random init")
            ax.set(title=f"{net}, {budget}", xlabel="epoch", ylabel="held-out kNN top-1 %")
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

    def ablation_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--nets", nargs="*", default=NETS)
        q.add_argument("--arms", nargs="*", default=list(ARMS))
        q.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
        q.add_argument("--epochs", type=int, default=30)

    def search_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--net", default="mobilenetv3_large", help="the net the search tunes")
        q.add_argument("--sweep", action="append", default=[], help="KNOB=VALUE[; KNOB=VALUE]: one unit")
        q.add_argument("--search-seeds", nargs="*", type=int, default=[0])
        q.add_argument("--search-epochs", type=int, default=10)

    def scheduling(q: argparse.ArgumentParser) -> None:
        q.add_argument("--per-class", type=int, default=1000, help="pretraining images per class (1000: a 10k subset)")
        q.add_argument("--device", default="auto")
        q.add_argument("--jobs", type=int, default=1, help="units at once, each its own process (for a GPU)")
        q.add_argument("--deadline", type=float, help="seconds: stop units that cannot finish by then, then stop")
        q.add_argument("--tag", default="", help="budget suffix naming the machine class, e.g. h200")

    for name, parts in (("run", [ablation_args]), ("search", [search_args]), ("queue", [ablation_args, search_args])):
        q = sub.add_parser(name, help={"run": "the ablation", "search": "the recipe search",
                                       "queue": "the ablation, then the search, as one queue"}[name])  # fmt: skip
        for add in [*parts, scheduling]:
            add(q)
    sub.add_parser("report")
    u = sub.add_parser("_unit")  # one unit, in a child process of --jobs N
    u.add_argument("spec")
    u.add_argument("--device", default="auto")
    a = p.parse_args()
    if a.cmd == "report":
        cmd_report(a)
    elif a.cmd == "_unit":
        spec = json.loads(a.spec)
        run_unit(Unit(**spec | {"overrides": tuple(spec["overrides"])}), a.device)
    else:
        units = (ablation_units(a) if a.cmd != "search" else []) + (search_units(a) if a.cmd != "run" else [])
        execute(units, a.device, a.jobs, a.deadline)


if __name__ == "__main__":
    main()
