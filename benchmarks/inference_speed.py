"""CPU inference speed of exported encoders at 224 px: latency at batch 1 and throughput at batch 32,
for MobileNet-V3-Large and EfficientNet-B0, through torch eager (NCHW), torch channels_last,
onnxruntime fp32 and onnxruntime int8 (the default export profile's int8 options, calibrated on 64 built-in
images).

Weights are timm's random initialisation: speed does not depend on their values. The ONNX graphs
and the int8 model come from lwzoo's own export functions.

    python benchmarks/inference_speed.py
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _results import write_section

from lwzoo.archs import create_backbone
from lwzoo.builtin_data import render_textures
from lwzoo.export import OnnxOptions, export_onnx, load_profile, quantize_int8
from lwzoo.onnx_runtime import onnx_session
from lwzoo.preprocess import Preprocess


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after two warm-up runs."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    pre = Preprocess(a.size, 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    images = pre(render_textures(64, a.size, seed=0)[0]).contiguous()
    rows = []
    for arch in ("mobilenetv3_large", "effnet_b0"):
        torch.manual_seed(0)
        model = create_backbone(arch).eval()
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
            export_onnx(model, fp32, a.size, OnnxOptions(18, True, False), {})
            int8_options = dataclasses.replace(load_profile("default").int8, enabled=True, calibration_images=64)
            quantize_int8(fp32, int8, int8_options, images)
            sessions = {"onnxruntime fp32": onnx_session(fp32), "onnxruntime int8": onnx_session(int8)}
            cl = create_backbone(arch).eval().to(memory_format=torch.channels_last)
            cl.load_state_dict(model.state_dict())
            for batch in (1, 32):
                x = images[:batch].repeat(1 + batch // len(images), 1, 1, 1)[:batch].contiguous()
                x_cl = x.contiguous(memory_format=torch.channels_last)
                runners = {
                    "torch eager (NCHW)": lambda m=model, x=x: m(x),
                    "torch channels_last": lambda m=cl, x=x_cl: m(x),
                    **{
                        name: (lambda s=s, x=x: s.run(["features"], {"images": x.numpy()}))
                        for name, s in sessions.items()
                    },
                }
                with torch.inference_mode():
                    results = {
                        name: timed(fn, a.repeats if batch == 1 else max(5, a.repeats // 4))
                        for name, fn in runners.items()
                    }
                eager = results["torch eager (NCHW)"]
                for name, seconds in results.items():
                    rows.append(
                        f"| {arch} | {batch} | {name} | {seconds * 1000:.1f} | {batch / seconds:.0f} "
                        f"| {eager / seconds:.2f}x |"
                    )
                    print(rows[-1], flush=True)
    body = (
        f"## Inference speed (CPU, {a.size} px)\n\n"
        f"Median of {a.repeats} runs at batch 1 and {max(5, a.repeats // 4)} at batch 32, after 2 warm-ups; "
        "torch under `inference_mode`, onnxruntime's CPU provider with default threads.\n\n"
        "| arch | batch | runtime | ms per batch | images/s | vs eager |\n|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section("inference_speed", body)


if __name__ == "__main__":
    main()
