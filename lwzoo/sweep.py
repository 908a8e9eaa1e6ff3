"""``lwzoo sweep``: does this recipe, or this loss, help on my data, beyond seed noise?

A sweep trains every arm (a recipe, or a set of overrides of one) on every seed at one budget, scores each
run by kNN and the linear probe beside a random-init encoder, and compares each arm with a base arm, paired
by seed: the same seed draws the same initialisation, data order and augmentation in every arm, so the
per-seed difference is the arm's effect plus what the change of recipe does to the randomness.

Each (arm, seed) is a unit, an ordinary run folder under ``OUT/units/``, trained and scored by the CLI in
child processes (``--jobs`` at once, CPU threads divided among them, or sharing one GPU). Rerunning the same
command skips finished units and resumes interrupted ones; Ctrl-C stops every child after its current step,
each saving its checkpoint. The sweep writes ``sweep.json`` (every number), ``SWEEP.md`` and ``sweep.png``.

Verdicts compare the mean paired difference d̄ with the standard deviation s_d of the per-seed differences:
``d̄ > 2 s_d`` beats the base, ``d̄ < -2 s_d`` loses to it, anything else is within noise; one seed gives no
verdict.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import env
from .archs import get_arch
from .checkpoint import load_checkpoint
from .config import parse_overrides
from .data import BUILTIN, default_recipe_name, is_builtin, scan_folder
from .errors import LwzooError
from .files import atomic_write_text, check_writable_dir
from .progress import SILENT, Progress
from .recipe import load_recipe
from .run_folder import CHECKPOINT, eval_report, read_evals, runs_root

PROTOCOLS = ("knn", "linear")
SWEEP_JSON, SWEEP_MD, SWEEP_PNG = "sweep.json", "SWEEP.md", "sweep.png"
RANDOM = "random-init"
RECIPE_EPOCHS = "the recipe's"


@dataclass(frozen=True)
class Arm:
    """A named way to train: a recipe (None: the arch's default for the data) and dotted-key overrides."""

    name: str
    recipe: str | None = None
    overrides: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Arm:
        """``NAME=`` (the default recipe), ``NAME=recipe:R``, ``NAME=key=value[,key=value...]`` or
        ``NAME=recipe:R,key=value...``."""
        name, sep, spec = text.partition("=")
        if not sep or not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise LwzooError(
                f"--arm '{text}' must be NAME=SPEC with a name of letters, digits, '.', '-' or '_', e.g. --arm base= "
                "--arm r50=recipe:mocov2_resnet50 --arm a0=loss.alpha=0"
            )
        recipe, overrides = None, []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if part.startswith("recipe:"):
                recipe = part.removeprefix("recipe:")
            elif "=" in part:
                overrides.append(part)
            else:
                raise LwzooError(f"--arm '{text}': '{part}' is neither recipe:NAME nor KEY=VALUE")
        return cls(name, recipe, tuple(overrides))


@dataclass(frozen=True)
class Budget:
    """What every unit shares: epochs, image size and a class-balanced subset of the pretraining data."""

    epochs: int | None = None
    image_size: int | None = None
    subset: int | None = None
    shared: tuple[str, ...] = ()  # overrides every arm takes, before its own

    def overrides(self) -> list[str]:
        return [*([f"augment.image_size={self.image_size}"] if self.image_size else []), *self.shared]


@dataclass
class SweepResult:
    """Every score (``scores[arm][protocol][seed]``, top-1 %), the random-init row and each arm's comparison."""

    out: Path
    base: str
    scores: dict[str, dict[str, dict[int, float]]]
    random: dict[str, float]
    comparisons: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


# ---- statistics ----------------------------------------------------------------------------------------------


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def compare(arm: dict[int, float], base: dict[int, float]) -> dict[str, Any]:
    """The paired-by-seed difference ``arm - base`` on the seeds both have, and its verdict."""
    seeds = sorted(set(arm) & set(base))
    diffs = {s: arm[s] - base[s] for s in seeds}
    if not diffs:
        return {"diffs": {}, "mean": None, "sd": None, "verdict": "no shared seed"}
    mean, sd = mean_sd(list(diffs.values()))
    if sd is None:
        verdict = "one seed: no verdict"
    elif mean > 2 * sd:
        verdict = "beats base beyond 2 sd"
    elif mean < -2 * sd:
        verdict = "loses to base beyond 2 sd"
    else:
        verdict = "within noise"
    return {"diffs": diffs, "mean": mean, "sd": sd, "verdict": verdict}


# ---- running units ---------------------------------------------------------------------------------------------


class _Runner:
    """Runs the CLI in child processes, and stops them all on Ctrl-C (each saves its checkpoint first)."""

    def __init__(self, threads: int | None, progress: Progress) -> None:
        threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
        self.env = env.for_child(LWZOO_PROGRESS="off", **threads_env)
        self.progress, self.stopping, self.lock = progress, False, threading.Lock()
        self.children: set[subprocess.Popen] = set()

    def run(self, args: list[str], log: Path) -> None:
        if self.stopping:
            raise KeyboardInterrupt
        command = [sys.executable, "-m", "lwzoo", *args]
        with open(log, "a") as out:
            out.write(f"$ lwzoo {shlex.join(args)}\n")
            out.flush()
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env)
            with self.lock:
                self.children.add(child)
            code = child.wait()
            with self.lock:
                self.children.discard(child)
        if self.stopping or code in (130, -signal.SIGINT):
            raise KeyboardInterrupt
        if code != 0:
            last = log.read_text().strip().splitlines()[-1:] or ["no output"]
            raise LwzooError(f"`lwzoo {shlex.join(args)}` failed (exit {code}): {last[0]}; see {log}")

    def stop(self) -> None:
        self.stopping = True
        with self.lock:
            for child in self.children:
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)  # pretrain saves a checkpoint and exits
        for child in list(self.children):
            child.wait()


def _train_args(arch: str, arm: Arm, seed: int, data: str, budget: Budget, run_dir: Path, device: str) -> list[str]:
    if (run_dir / CHECKPOINT).is_file():
        return ["pretrain", arch, "--resume", str(run_dir), "--device", device]
    args = ["pretrain", arch, "--data", data, "--out", str(run_dir), "--seed", str(seed), "--device", device]
    if arm.recipe:
        args += ["--recipe", arm.recipe]
    if budget.epochs:
        args += ["--epochs", str(budget.epochs)]
    for override in (*budget.overrides(), *arm.overrides):
        args += ["--set", override]
    return args


def _finished(run_dir: Path) -> bool:
    if not (run_dir / CHECKPOINT).is_file():
        return False
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    return ckpt["step"] >= ckpt["total_steps"]


def recorded_source(spec: str) -> str:
    """What ``lwzoo eval`` records as the source of ``--data`` / ``--val-data`` spec: ``builtin:SPLIT`` for the
    built-in set, else the folder's absolute path."""
    if is_builtin(spec):
        return spec if ":" in spec else f"{BUILTIN}:train"
    return str(Path(spec).expanduser().resolve())


def _scores(folder: Path, data: str, val_data: str) -> dict[str, float]:
    """The run's recorded top-1 per protocol for this scoring data (evals.json in the run folder)."""
    return {
        r["protocol"]: r["top1"] for r in read_evals(folder) if (r["train_data"], r["val_data"]) == (data, val_data)
    }


def _unit(
    runner: _Runner,
    arch: str,
    arm: Arm,
    seed: int,
    sets: dict[str, str],
    budget: Budget,
    out: Path,
    dev: str,
    baseline: bool = False,
):
    """Train (or resume) one unit and score it by every protocol it has no score for yet; with ``baseline``, also
    score timm's random initialisation with this unit's preprocessing (the sweep's random-init row)."""
    run_dir = out / "units" / f"{arm.name}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = out / "logs" / f"{arm.name}-s{seed}.log"
    if not _finished(run_dir):
        runner.run(_train_args(arch, arm, seed, sets["pretrain"], budget, run_dir, dev), log)
    done = _scores(run_dir, recorded_source(sets["fit"]), recorded_source(sets["val"]))
    for protocol in PROTOCOLS:
        if protocol not in done or (baseline and _random_top1(run_dir, protocol) is None):
            args = ["eval", protocol, str(run_dir), "--data", sets["fit"], "--val-data", sets["val"], "--device", dev]
            runner.run([*args, *(["--baseline"] if baseline else []), "--quiet"], log)
    scores = _scores(run_dir, recorded_source(sets["fit"]), recorded_source(sets["val"]))
    runner.progress.say(f"  {arm.name} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    return scores


def _random_top1(run_dir: Path, protocol: str) -> float | None:
    """The random-init top-1 that ``lwzoo eval --baseline`` scored beside this run (its eval report)."""
    report = run_dir / eval_report(protocol)
    baseline = json.loads(report.read_text()).get("baseline") if report.is_file() else None
    return baseline["top1"] if baseline else None


def balanced_subset(data: str, n: int, out: Path) -> Path:
    """A folder of links to ``n`` images of ``data``, the same number from each class (seeded, so every rerun and
    every arm gets the same images)."""
    import torch

    paths, labels, classes = scan_folder(data)
    if labels is None:
        raise LwzooError(f"--subset needs class sub-folders in --data '{data}' to balance over (DIR/<class>/<image>)")
    per_class = n // len(classes)
    if per_class < 1:
        raise LwzooError(f"--subset {n} is fewer than one image for each of the {len(classes)} classes")
    folder = out / f"subset-{n}"
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        mine = [p for p, label in zip(paths, labels, strict=True) if label == c]
        if len(mine) < per_class:
            raise LwzooError(f"--subset {n} wants {per_class} images of class '{name}', which has {len(mine)}")
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in torch.randperm(len(mine), generator=g)[:per_class].tolist():
            link = folder / name / mine[i].name
            if not link.exists():
                link.symlink_to(mine[i].resolve())
    return folder


def sweep(
    arch: str,
    arms: list[str | Arm],
    seeds: list[int],
    data: str | Path | None = None,
    val_data: str | Path | None = None,
    base: str | None = None,
    epochs: int | None = None,
    subset: int | None = None,
    image_size: int | None = None,
    overrides: list[str] | None = None,
    jobs: int = 1,
    device: str = "auto",
    out: str | Path | None = None,
    progress: Progress = SILENT,
) -> SweepResult:
    """Train every arm on every seed, score each run by kNN and linear probe, and compare each arm with ``base``.

    Args:
        arch: an lwzoo architecture.
        arms: ``Arm`` objects or ``NAME=SPEC`` strings (:meth:`Arm.parse`); names must be unique.
        seeds: the seeds every arm runs with (paired across arms).
        data: images to pretrain on, labelled (DIR/<class>/<image>) since the probes fit on them too; None or
            ``builtin`` for the demo set.
        val_data: the labelled held-out folder the probes are scored on (default with the demo set: its
            held-out split).
        base: the arm the others are compared with (default: the first).
        epochs, image_size: the budget, shared by every arm; ``subset``: pretrain on this many images of
            ``data``, class-balanced (the probes still fit on all of ``data``).
        overrides: ``KEY=VALUE`` recipe overrides every arm takes before its own (e.g. a smaller queue).
        jobs: units run at once; on a CPU the threads are divided among them.
        device: ``auto``, ``cpu``, ``cuda``...; with CUDA the jobs share the GPU.
        out: the sweep folder (default ``runs/sweeps/<arch>``); rerunning continues it.
        progress: where progress and the summary go (default: nowhere; the CLI passes a Console).
    """
    parsed = [a if isinstance(a, Arm) else Arm.parse(a) for a in arms]
    _check(arch, parsed, seeds, data, val_data, base, jobs, subset)
    _check_recipes(arch, parsed, data, overrides)
    base = base or parsed[0].name
    data = str(data) if data is not None else BUILTIN
    if val_data is None:
        val_data = f"{BUILTIN}:val"
    folder = check_writable_dir(Path(out) if out is not None else runs_root() / "sweeps" / get_arch(arch).name, "sweep")
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    budget = Budget(epochs, image_size, subset, tuple(overrides or ()))
    pretrain_data = str(balanced_subset(data, subset, folder)) if subset else data
    sets = {"pretrain": pretrain_data, "fit": data, "val": str(val_data)}
    threads = max(1, (os.cpu_count() or 1) // jobs) if not device.startswith("cuda") else None
    runner = _Runner(threads, progress)
    units = [(arm, seed) for seed in seeds for arm in parsed]
    progress.say(f"lwzoo sweep: {arch}, {len(parsed)} arms x {len(seeds)} seeds = {len(units)} units, {jobs} at once")
    scores: dict[str, dict[str, dict[int, float]]] = {a.name: {p: {} for p in PROTOCOLS} for a in parsed}
    base_unit = next(a for a in parsed if a.name == base), seeds[0]  # also scores random init, the same way
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(_unit, runner, arch, a, s, sets, budget, folder, device, (a, s) == base_unit): (a, s)
                for a, s in units
            }
            try:
                for future, (arm, seed) in futures.items():
                    for protocol, top1 in future.result().items():
                        scores[arm.name][protocol][seed] = top1
            except BaseException:  # stop the other units now, not after they finish (the pool waits for them)
                runner.stop()
                raise
    except KeyboardInterrupt:
        runner.stop()
        raise LwzooError(
            f"interrupted: every unit saved its progress; run the same command to continue ({folder})"
        ) from None
    base_dir = folder / "units" / f"{base}-s{seeds[0]}"
    random = {p: _random_top1(base_dir, p) for p in PROTOCOLS}
    result = SweepResult(folder, base, scores, random)
    result.comparisons = {
        a.name: {p: compare(scores[a.name][p], scores[base][p]) for p in PROTOCOLS} for a in parsed if a.name != base
    }
    write_report(result, arch, parsed, seeds, budget, sets)
    progress.say(summary_table(result))
    progress.say(f"written: {folder / SWEEP_MD}, {folder / SWEEP_JSON}, {folder / SWEEP_PNG}")
    return result


def _check(arch, arms, seeds, data, val_data, base, jobs, subset) -> None:
    get_arch(arch)
    names = [a.name for a in arms]
    if not arms or len(set(names)) != len(names):
        raise LwzooError(f"give each --arm a different name (got {', '.join(names) or 'none'}), e.g. --arm base=")
    if base is not None and base not in names:
        raise LwzooError(f"--base '{base}' is not one of the arms ({', '.join(names)})")
    if not seeds or len(set(seeds)) != len(seeds):
        raise LwzooError(f"--seeds must be distinct integers, e.g. --seeds 0,1,2 (got {seeds})")
    if jobs < 1:
        raise LwzooError(f"--jobs must be at least 1, got {jobs}")
    if subset is not None and (subset < 1 or data is None or is_builtin(str(data))):
        raise LwzooError("--subset takes a positive number of images of a --data folder (not the built-in set)")
    if data is not None and not is_builtin(str(data)):
        if val_data is None:
            raise LwzooError("--val-data is needed with --data: a labelled held-out folder the probes are scored on")
        if scan_folder(data)[1] is None:
            raise LwzooError(
                f"--data '{data}' has no class sub-folders: a sweep fits its probes on it, so arrange it as "
                "DIR/<class>/<image>"
            )


def _check_recipes(arch: str, arms: list[Arm], data, overrides: list[str] | None) -> None:
    """Every arm's recipe, with the sweep's overrides and then its own, is valid: a typo in the last arm is
    refused before the first unit trains, not an hour later."""
    for arm in arms:
        try:
            recipe = arm.recipe or default_recipe_name(get_arch(arch), None if data is None else str(data))
            load_recipe(recipe, parse_overrides([*(overrides or ()), *arm.overrides]))
        except LwzooError as e:
            raise LwzooError(f"arm '{arm.name}': {e}") from None


# ---- the report ------------------------------------------------------------------------------------------------


def _fmt(mean: float | None, sd: float | None, signed: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text + (f" ± {sd:.2f}" if sd is not None else "")


def summary_table(result: SweepResult) -> str:
    """Mean ± sd per arm and protocol, the paired difference against the base, each seed's, and the verdict."""
    lines = [
        "| arm | kNN top-1 % | linear top-1 % | kNN vs base (per seed) | linear vs base (per seed) "
        "| verdict (kNN / linear) |",
        "|---|---|---|---|---|---|",
    ]
    for arm, by_protocol in result.scores.items():
        cells = [_fmt(*mean_sd(list(by_protocol[p].values()))) if by_protocol[p] else "-" for p in PROTOCOLS]
        if arm == result.base:
            lines.append(f"| {arm} (base) | {cells[0]} | {cells[1]} | | | |")
            continue
        c = result.comparisons[arm]
        each = [", ".join(f"s{s} {d:+.2f}" for s, d in c[p]["diffs"].items()) for p in PROTOCOLS]
        diffs = [f"{_fmt(c[p]['mean'], c[p]['sd'], signed=True)} ({each[i]})" for i, p in enumerate(PROTOCOLS)]
        lines.append(f"| {arm} | {cells[0]} | {cells[1]} | {diffs[0]} | {diffs[1]} | {c['knn']['verdict']} / "
                     f"{c['linear']['verdict']} |")  # fmt: skip
    lines.append(f"| {RANDOM} | {result.random['knn']:.2f} | {result.random['linear']:.2f} | | | |")
    return "\n".join(lines)


def write_report(result: SweepResult, arch: str, arms: list[Arm], seeds: list[int], budget: Budget, sets) -> None:
    """``sweep.json`` (every number and how it was made), ``SWEEP.md`` and ``sweep.png``."""
    record = {
        "arch": arch,
        "arms": {a.name: {"recipe": a.recipe, "overrides": list(a.overrides)} for a in arms},
        "seeds": seeds,
        "base": result.base,
        "budget": asdict(budget),
        "data": sets,
        "scores": result.scores,
        "random_init": result.random,
        "comparisons": result.comparisons,
    }
    atomic_write_text(result.out / SWEEP_JSON, json.dumps(record, indent=1) + "\n")
    arm_lines = [f"- `{a.name}`: recipe `{a.recipe or 'default'}`" + "".join(f", `{o}`" for o in a.overrides)
                 for a in arms]  # fmt: skip
    text = [
        f"# lwzoo sweep: {arch}",
        "",
        f"Pretrained on `{sets['pretrain']}`; probes fitted on `{sets['fit']}`, scored on `{sets['val']}`. "
        f"Seeds {', '.join(map(str, seeds))}; budget: {budget.epochs or RECIPE_EPOCHS} epochs"
        + (f", {budget.image_size} px" if budget.image_size else "")
        + (f", a class-balanced subset of {budget.subset} images" if budget.subset else "")
        + ".",
        "",
        *arm_lines,
        "",
        summary_table(result),
        "",
        "Differences are paired by seed (arm minus base on the same seed). A verdict needs the mean difference "
        "beyond two standard deviations of the per-seed differences; one seed gives none. "
        f"{RANDOM}: timm's initialisation, scored with the base arm's preprocessing on the same data.",
        "",
        f"![kNN and linear top-1 per arm]({SWEEP_PNG})",
        "",
    ]
    atomic_write_text(result.out / SWEEP_MD, "\n".join(text))
    _plot(result, result.out / SWEEP_PNG)


def _plot(result: SweepResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(result.scores)
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(arms), 3.6), sharey=False)
    for ax, protocol in zip(axes, PROTOCOLS, strict=True):
        for i, arm in enumerate(arms):
            values = list(result.scores[arm][protocol].values())
            if not values:
                continue
            mean, sd = mean_sd(values)
            ax.bar(i, mean, yerr=sd or 0, color="C1" if arm == result.base else "C0", alpha=0.7, capsize=4)
            ax.plot([i] * len(values), values, "k.", ms=5)  # each seed
        ax.axhline(result.random[protocol], color="C3", ls="--", lw=1, label=RANDOM)
        ax.set(xticks=range(len(arms)), xticklabels=arms, ylabel=f"{protocol} top-1 %", title=protocol)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
