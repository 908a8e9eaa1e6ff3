"""Why int8 is or is not faster than fp32 in onnxruntime (issue 19): time per operator type from onnxruntime's
profiler at batch 32, then interleaved speed at batch 1 and 32, for the fp32 graph and int8 graphs quantised by
lwzoo with each placement its export profile offers (``int8.ops``, ``int8.depthwise``); and, for pretrained runs
given with ``--checkpoint``, what ``lwzoo export --int8 --eval-data builtin:val`` records (speed ratio, kNN change).

Speed graphs have timm's random initialisation (speed does not depend on the weights' values), exported and
quantised by lwzoo's own functions (calibration: 64 built-in images).

    python benchmarks/int8_profile.py --checkpoint RUN_MNV3 --checkpoint RUN_EFFNET
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _results import write_section

from lwzoo.archs import create_backbone
from lwzoo.builtin_data import render_textures
from lwzoo.export import export, export_onnx, load_profile, quantize_int8
from lwzoo.onnx_runtime import time_sessions
from lwzoo.preprocess import Preprocess

PLACEMENTS = {  # name -> (int8.ops, int8.depthwise)
    "all-ops": ("all", True),
    "conv": ("conv", True),
    "conv-not-depthwise": ("conv", False),
}


def session(path: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_times(path: Path, x: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    """Mean ms per run of each operator type (as onnxruntime ran it, after its fusions), from its profiler."""
    s = session(path, threads, profile=True)
    for _ in range(runs):
        s.run(["features"], {"images": x})
    events = json.loads(Path(s.end_profiling()).read_text())
    totals: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            totals[e["args"]["op_name"]] += e["dur"] / 1000 / runs  # microseconds -> ms per run
    return dict(totals)


def graphs(arch: str, size: int, calibration: torch.Tensor, folder: Path, names: list[str]) -> dict[str, Path]:
    """The fp32 graph and one int8 graph per placement, written by lwzoo's export functions."""
    torch.manual_seed(0)
    profile = load_profile("default")
    fp32 = folder / f"{arch}.onnx"
    export_onnx(create_backbone(arch).eval(), fp32, size, profile.onnx_options, {})
    out = {"fp32": fp32}
    for name in names:
        ops, depthwise = PLACEMENTS[name]
        options = dataclasses.replace(profile.int8, ops=ops, depthwise=depthwise, calibration_images=len(calibration))
        out[f"int8 {name}"] = folder / f"{arch}.{ops}.{'dw' if depthwise else 'nodw'}.int8.onnx"
        quantize_int8(fp32, out[f"int8 {name}"], options, calibration)
    return out


def profile_table(profiles: dict[str, dict[str, float]], top: int) -> str:
    """Op types (rows) by graph (columns), ms per batch; the ``top`` costliest of any graph, the rest summed."""
    cost = collections.Counter()
    for p in profiles.values():
        cost.update(p)
    shown = [op for op, _ in cost.most_common(top)]
    head = "| op type | " + " | ".join(profiles) + " |\n|---|" + "---|" * len(profiles) + "\n"
    rows = [f"| {op} | " + " | ".join(f"{p.get(op, 0):.1f}" for p in profiles.values()) + " |" for op in shown]
    rest = [sum(v for k, v in p.items() if k not in shown) for p in profiles.values()]
    rows.append("| (other) | " + " | ".join(f"{r:.1f}" for r in rest) + " |")
    rows.append("| **total** | " + " | ".join(f"**{sum(p.values()):.1f}**" for p in profiles.values()) + " |")
    return head + "\n".join(rows)


def speed_rows(arch: str, paths: dict[str, Path], images: torch.Tensor, threads: int, rounds: int) -> list[str]:
    """Median ms per batch at batch 1 and 32, the graphs taking turns (lwzoo's own interleaved timer)."""
    sessions = {name: session(p, threads) for name, p in paths.items()}
    ms = {}
    for batch in (1, 32):
        x = images[:batch].repeat(1 + batch // len(images), 1, 1, 1)[:batch].contiguous()
        seconds, _ = time_sessions(sessions, x, seconds=float("inf"), max_rounds=rounds)
        ms[batch] = {name: s * 1000 for name, s in seconds.items()}
    rows = []
    for name in paths:
        b1, b32 = ms[1][name], ms[32][name]
        rows.append(
            f"| {arch} | {name} | {b1:.1f} | {ms[1]['fp32'] / b1:.2f}x | {b32:.1f} | {32000 / b32:.0f} "
            f"| {ms[32]['fp32'] / b32:.2f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def knn_row(checkpoint: str, folder: Path) -> str:
    """``lwzoo export --int8 --eval-data builtin:val`` on a pretrained run: what its int8 record says."""
    q = export(checkpoint, out=folder / Path(checkpoint).name, int8=True, eval_data="builtin:val").int8
    arch = json.loads((folder / Path(checkpoint).name / "config.json").read_text())["lwzoo"]["arch"]
    return (
        f"| {arch} | `{checkpoint}` | {q['speed_image_size']} | {q['speed_ratio']:.2f}x | {q['knn_top1_fp32']:.2f} "
        f"| {q['knn_top1_int8']:.2f} | {q['knn_top1_change']:+.2f} | {q['feature_cosine_mean']:.4f} "
        f"| `{q['recommended']}` |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per batch size")
    p.add_argument("--profile-runs", type=int, default=3)
    p.add_argument("--archs", default="mobilenetv3_large,effnet_b0")
    p.add_argument("--placements", default=",".join(PLACEMENTS), help=f"of: {', '.join(PLACEMENTS)}")
    p.add_argument("--checkpoint", action="append", default=[], help="a pretrained run: its export's kNN change")
    a = p.parse_args()
    names = [n.strip() for n in a.placements.split(",")]
    pre = Preprocess(a.size, 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    images = pre(render_textures(64, a.size, seed=0)[0]).contiguous()
    sections, speed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.archs.split(","):
            paths = graphs(arch, a.size, images, Path(tmp), names)
            x = images[:32].numpy()
            profiles = {name: op_times(path, x, a.threads, a.profile_runs) for name, path in paths.items()}
            sections.append(f"### {arch}: ms per batch of 32 by operator type\n\n" + profile_table(profiles, 10))
            speed += speed_rows(arch, paths, images, a.threads, a.rounds)
        knn = [knn_row(c, Path(tmp)) for c in a.checkpoint]
    body = (
        f"## int8 against fp32 in onnxruntime (CPU, {a.size} px, {a.threads} threads)\n\n"
        f"Profiles: onnxruntime's profiler, mean of {a.profile_runs} runs at batch 32 (op types as onnxruntime ran "
        "them, after its fusions). Speed: median of "
        f"{a.rounds} interleaved rounds per batch size, after one warm-up. Placements: `int8.ops` / `int8.depthwise` "
        "of the export profile.\n\n" + "\n\n".join(sections) + "\n\n### Speed\n\n"
        "| arch | graph | ms batch 1 | vs fp32 | ms batch 32 | images/s | vs fp32 |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(speed)
    )
    if knn:
        body += (
            "\n\n### kNN change of pretrained runs (`lwzoo export --int8 --eval-data builtin:val`)\n\n"
            "Default export profile; speed timed by the export itself on its calibration batch at the run's size.\n\n"
            "| arch | run | px | int8 speed vs fp32 | kNN top-1 fp32 | int8 | change | feature cosine | use |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(knn)
        )
    write_section("int8_profile", body)


if __name__ == "__main__":
    main()
