"""``lwzoo export``: the query encoder's backbone as safetensors (timm-loadable) and ONNX (fp32, int8),
each export verified against torch before it is written.

ONNX comes from PyTorch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs
onnxscript): the TorchScript exporter is deprecated, and the dynamo path traces with
``torch.export``, names the dynamic dimensions and ships onnxscript's graph optimiser.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import read_init
from .config import apply_overrides, build, field_types, read_yaml
from .data import load_images
from .encoders import Encoder, load_encoder
from .errors import LwzooError
from .files import check_writable_dir, remove_stale_temps, replace_dir
from .hub_folder import (
    ASSEMBLED,
    EXPORT_REPORT,
    FILES,
    ONNX,
    ONNX_INT8,
    copy_run_records,
    file_sizes,
    is_export_dir,
    record_checksums,
    write_export_report,
    write_model,
)
from .onnx_runtime import onnx_session, run_onnx, time_sessions
from .preprocess import Preprocess
from .progress import SILENT, Progress
from .recipe import recipe_yaml
from .resources import resource_dir
from .run_folder import CHECKPOINT, EXPORT, latest_checkpoint
from .scoring import accuracies, knn_predict
from .version import __version__
from .zoo import add_local, check_name


@dataclass(frozen=True)
class OnnxOptions:
    opset: int
    dynamic_batch: bool
    dynamic_spatial: bool


@dataclass(frozen=True)
class Int8Options:
    enabled: bool
    mode: Literal["static", "dynamic"]
    calibration_images: int
    per_channel: bool
    ops: Literal["conv", "all"]  # conv: only Conv gets int8 kernels; all: every op onnxruntime can quantise
    depthwise: bool  # quantise depthwise convs (group > 1) too


@dataclass(frozen=True)
class ParityOptions:
    atol: float
    rtol: float
    images: int


@dataclass(frozen=True)
class ExportProfile:
    name: str
    description: str
    safetensors: bool
    onnx: bool
    image_size: int | None
    onnx_options: OnnxOptions
    int8: Int8Options
    parity: ParityOptions


def list_profiles() -> list[str]:
    return sorted(p.stem for p in resource_dir("export").glob("*.yaml"))


def load_profile(name_or_path: str | Path = "default", overrides: dict[str, Any] | None = None) -> ExportProfile:
    """An export profile from ``export/`` (or a YAML path), with dotted-key overrides."""
    raw = read_yaml(name_or_path, resource_dir("export"), "export profile")
    raw = apply_overrides(raw, overrides or {}, list(field_types(ExportProfile)), "export profile")
    profile = build(ExportProfile, raw, str(name_or_path), "export profile")
    if not 7 <= profile.onnx_options.opset <= 23:
        raise LwzooError(f"onnx opset {profile.onnx_options.opset} is outside what lwzoo supports (7-23)")
    if profile.image_size is not None and profile.image_size < 8:
        raise LwzooError(f"export image_size must be at least 8, got {profile.image_size}")
    return profile


@dataclass
class ExportResult:
    """What an export wrote and what its checks measured."""

    out_dir: Path
    checkpoint: Path
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    parity: dict[str, Any] = field(default_factory=dict)
    int8: dict[str, Any] | None = None
    init: dict[str, Any] | None = None  # where the run's backbone started (lwzoo pretrain --init)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.checkpoint),
            "files": self.files,
            "parity": self.parity,
            "int8": self.int8,
            **({"init": self.init} if self.init else {}),
        }


# ---- ONNX ------------------------------------------------------------------------------------------------------


def export_onnx(
    backbone: nn.Module, path: Path, image_size: int, options: OnnxOptions, metadata: dict[str, str]
) -> None:
    """Write ``backbone`` as ONNX: input ``images`` (N, 3, H, W) float32, output ``features`` (N, D)."""
    import onnx

    model = _plain_copy(backbone)
    example = torch.zeros(2 if options.dynamic_batch else 1, 3, image_size, image_size)
    dims: dict[int, Any] = {}
    if options.dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if options.dynamic_spatial:
        dims[2] = torch.export.Dim("height", min=32, max=4096)
        dims[3] = torch.export.Dim("width", min=32, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's to act on
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["images"],
            output_names=["features"],
            dynamic_shapes=({**dims},) if dims else None,
            opset_version=options.opset,
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def _plain_copy(backbone: nn.Module) -> nn.Module:
    import copy

    model = copy.deepcopy(backbone).cpu().eval().to(memory_format=torch.contiguous_format)
    model.requires_grad_(False)
    return model


def parity_images(preprocess: Preprocess, n: int) -> torch.Tensor:
    """Real images for checks: the first ``n`` of the built-in held-out split, preprocessed."""
    images = load_images("builtin:val", preprocess.decode_size).images[:n]
    return preprocess(images).contiguous()


def check_parity(backbone: nn.Module, session, inputs: dict[str, torch.Tensor], atol: float, rtol: float) -> dict:
    """Max absolute and relative (to the largest |feature|) error of onnxruntime against torch."""
    model = _plain_copy(backbone)
    report = {}
    for name, x in inputs.items():
        with torch.no_grad():
            ref = model(x).numpy()
        got = run_onnx(session, x)
        err = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max())
        report[name] = {
            "batch": len(x),
            "max_abs": err,
            "max_rel": err / max(scale, 1e-12),
            "ok": err <= atol + rtol * scale,
        }
    return report


# ---- int8 -------------------------------------------------------------------------------------------------------

INT8_MIN_SPEEDUP = 1.1  # int8 over fp32 images/s; below it a few seconds of timing cannot tell them apart
INT8_MAX_KNN_DROP = 1.0  # points of kNN top-1 int8 may lose against fp32 and still be the file to use
SPEED_BATCH = 32  # calibration images timed through both graphs at export


def quantize_int8(fp32: Path, int8: Path, options: Int8Options, calibration: torch.Tensor | None) -> None:
    """onnxruntime quantisation: static QDQ calibrated on ``calibration`` images, or dynamic.

    Only the ops ``options`` names are quantised (Conv alone with ``ops: conv``, and depthwise convs only with
    ``depthwise``); the rest stay fp32. Every quantised op whose neighbour stays fp32 pays a DequantizeLinear and
    a QuantizeLinear, so quantising activations, squeeze-excite gates and residual adds as well made MobileNet-V3
    slower in int8 than in fp32 (profile: ``benchmarks/int8_profile.py``)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = int8.with_name(int8.stem + ".pre.onnx")
    try:
        # skip_optimization: onnxruntime's optimiser would inline HardSwish into HardSigmoid and Mul, and
        # quantising those runs DequantizeLinear, HardSigmoid, QuantizeLinear and QLinearMul per activation
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True, skip_optimization=True)
        chosen = {
            "op_types_to_quantize": ["Conv"] if options.ops == "conv" else None,
            "nodes_to_exclude": [] if options.depthwise else depthwise_convs(pre),
            "per_channel": options.per_channel,
            "weight_type": QuantType.QInt8,
        }
        if options.mode == "dynamic":
            quantize_dynamic(str(pre), str(int8), **chosen)
            return
        reader = _CalibrationReader(calibration.numpy(), _fixed_batch(fp32) or 16)
        quantize_static(
            str(pre), str(int8), reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, **chosen
        )
    finally:
        pre.unlink(missing_ok=True)
        for leftover in int8.parent.glob("*.onnx.data"):
            leftover.unlink()


def depthwise_convs(path: Path) -> list[str]:
    """Names of the grouped (depthwise) Conv nodes of an ONNX graph: onnxruntime's int8 depthwise kernel was slower
    than its fp32 one on MobileNet-V3 (the int8 profile in benchmarks/RESULTS.md)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    found = []
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1:
            found.append(node.name)
    return found


def _fixed_batch(path: Path) -> int | None:
    fixed = onnx_session(path).get_inputs()[0].shape[0]
    return fixed if isinstance(fixed, int) else None


class _CalibrationReader:
    """onnxruntime's calibration feed (its CalibrationDataReader protocol: ``get_next``, None when done):
    ``images`` (N, 3, H, W) in batches of ``batch``."""

    def __init__(self, images: np.ndarray, batch: int) -> None:
        self.batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.batches, None)
        return None if x is None else {"images": x}


def int8_knn_change(fp32_session, int8_session, eval_data: str | Path, preprocess: Preprocess) -> dict[str, float]:
    """kNN top-1 (k 20, T 0.07) with fp32 and with int8 features: even images vote, odd images are scored."""
    images = load_images(eval_data, preprocess.decode_size)
    if images.labels is None or images.images is None:
        raise LwzooError(
            f"--eval-data '{eval_data}' needs class sub-folders (DIR/<class>/<image>) and to fit in memory"
        )
    x = preprocess(images.images).contiguous()
    out = {}
    for name, session in (("fp32", fp32_session), ("int8", int8_session)):
        feats = torch.from_numpy(run_onnx(session, x, batch=64))
        scores = knn_predict(feats[0::2], images.labels[0::2], feats[1::2], len(images.classes))
        out[f"knn_top1_{name}"] = accuracies(scores, images.labels[1::2], images.classes)[0]
    out["knn_top1_change"] = out["knn_top1_int8"] - out["knn_top1_fp32"]
    out["eval_data"] = images.source
    return out


# ---- the command ------------------------------------------------------------------------------------------------


def export(
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    profile: str | Path = "default",
    safetensors: bool | None = None,
    onnx: bool | None = None,
    int8: bool | None = None,
    opset: int | None = None,
    image_size: int | None = None,
    calib_data: str | Path | None = None,
    eval_data: str | Path | None = None,
    force: bool = False,
    name: str | None = None,
    progress: Progress = SILENT,
) -> ExportResult:
    """Export a pretraining checkpoint's backbone, verified, into a Hub-ready folder.

    Args:
        checkpoint: an lwzoo checkpoint or run folder; None takes the newest run under ``runs/``.
        out: the export folder. Default: ``<run folder>/export``. An existing one needs ``force``.
        profile: an export profile from ``export/`` or a YAML path.
        safetensors, onnx: which formats. Naming only one of them writes only that one; by default
            the profile's (safetensors and ONNX).
        int8: also write ``model.int8.onnx`` by onnxruntime quantisation.
        opset, image_size: override the profile's.
        calib_data: images for static int8 calibration (default: the built-in demo set).
        eval_data: a labelled folder (or ``builtin:val``) to report int8's kNN change against fp32.
        force: replace an existing export folder.
        name: also add the export to the local zoo under this name, for ``lwzoo.load(name)``.
        progress: where the report goes (default: nowhere; the CLI passes a Console).
    """
    say = progress.say
    overrides: dict[str, Any] = {}
    if safetensors or onnx:  # naming a format selects exactly the named ones
        overrides |= {"safetensors": bool(safetensors), "onnx": bool(onnx or int8)}
    if int8 is not None:
        overrides["int8.enabled"] = int8
    if opset is not None:
        overrides["onnx_options.opset"] = opset
    if image_size is not None:
        overrides["image_size"] = image_size
    prof = load_profile(profile, overrides)
    if name is not None:
        check_name(name)  # before the work, not after it
    if prof.int8.enabled and not prof.onnx:
        raise LwzooError(
            f"export profile '{prof.name}' enables int8 but not onnx; int8 quantises the ONNX graph, so add --onnx"
        )

    ckpt_path = Path(checkpoint) if checkpoint is not None else latest_checkpoint()
    if checkpoint is None:
        say(f"exporting the newest run: {ckpt_path}")
    if ckpt_path.is_dir():
        ckpt_path = ckpt_path / CHECKPOINT
    if str(checkpoint or "").startswith(("random:", "timm:")) or ckpt_path.suffix == ".safetensors":
        raise LwzooError(f"lwzoo export takes a pretraining checkpoint ({CHECKPOINT} or its run folder)")
    encoder = load_encoder(ckpt_path)
    p = encoder.preprocess
    preprocess = Preprocess(prof.image_size or p.image_size, p.crop_pct, p.mean, p.std, p.interpolation)
    out_dir = Path(out).expanduser() if out is not None else ckpt_path.parent / EXPORT
    _check_out(out_dir, force)

    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    remove_stale_temps(out_dir.parent, of=out_dir.name)  # what an export killed mid-write left
    try:
        result = _write_export(encoder, ckpt_path, preprocess, prof, tmp, calib_data, eval_data)
        result.out_dir = out_dir
        write_export_report(tmp, result.to_dict())
        replace_dir(tmp, out_dir)  # the old export survives until the new one is complete
    except OSError as e:
        raise LwzooError(
            f"cannot write the export to '{out_dir}' ({e.strerror or type(e).__name__}); "
            "free some space or choose another --out"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(_report(result))
    if name is not None:
        say(f"added to the local zoo: {add_local(name, out_dir)} (lwzoo.load({name!r}))")
    return result


def _check_out(out_dir: Path, force: bool) -> None:
    """Refuse an ``--out`` whose contents an export would destroy: ``force`` replaces an earlier lwzoo
    export and nothing else (not a run folder, not a folder of the user's own files, not a file)."""
    check_writable_dir(out_dir.parent, "export")
    if out_dir.is_file():
        raise LwzooError(f"--out '{out_dir}' is a file; an export is a folder, so choose another --out")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise LwzooError(f"'{out_dir}' already exists; pass --force to replace it, or choose another --out")
    if not is_export_dir(out_dir):
        raise LwzooError(
            f"--force replaces only an earlier lwzoo export, and '{out_dir}' is not one (it has no {EXPORT_REPORT}); "
            "choose another --out"
        )
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in FILES | {ASSEMBLED})
    if foreign:
        raise LwzooError(
            f"--force would delete files in '{out_dir}' that lwzoo export did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); move them out or choose another --out"
        )


def _metadata(encoder: Encoder, preprocess: Preprocess) -> dict[str, str]:
    r = encoder.recipe
    return {
        "format": "pt",
        "lwzoo_version": __version__,
        "arch": encoder.arch.name,
        "timm_name": encoder.arch.timm_name,
        "feature_dim": str(encoder.feature_dim),
        "recipe_name": r.name if r else "",
        "recipe_digest": r.digest() if r else "",
        "checkpoint_digest": encoder.identity,
        "input_size": json.dumps([3, preprocess.image_size, preprocess.image_size]),
        "mean": json.dumps(list(preprocess.mean)),
        "std": json.dumps(list(preprocess.std)),
        "crop_pct": str(preprocess.crop_pct),
        "interpolation": preprocess.interpolation,
    }


def _write_export(encoder, ckpt_path, preprocess, prof, tmp, calib_data, eval_data) -> ExportResult:
    """Write the export into ``tmp`` through the Hub folder's writer: weights and config, the run's records,
    ONNX (and int8) checked against torch, then the checksums of every model file."""
    tmp.mkdir(parents=True)
    result = ExportResult(tmp, ckpt_path)
    metadata = _metadata(encoder, preprocess)
    result.init = init = read_init(ckpt_path)  # where the run's backbone started (lwzoo pretrain --init), carried on
    training = {
        **(encoder.training or {}),
        "recipe": encoder.recipe.name if encoder.recipe else None,
        "recipe_digest": metadata["recipe_digest"],
        "checkpoint_digest": encoder.identity,
        **({"init": init} if init else {}),
    }
    write_model(tmp, encoder.backbone, encoder.arch, preprocess, metadata, training, safetensors=prof.safetensors)
    recipe_text = recipe_yaml(encoder.recipe, init) if encoder.recipe is not None else None
    copy_run_records(ckpt_path.parent, tmp, encoder.identity, recipe_text)
    if prof.onnx:
        result.parity, session, real = _write_onnx(encoder, preprocess, prof, tmp / ONNX, metadata)
        if prof.int8.enabled:
            result.int8 = _write_int8(session, real, preprocess, prof, tmp, calib_data, eval_data)
    record_checksums(tmp)
    result.files = file_sizes(tmp)
    return result


def _write_onnx(encoder, preprocess, prof, path: Path, metadata) -> tuple[dict[str, Any], Any, torch.Tensor]:
    """The fp32 graph, checked against torch on real and random images (and a larger size when spatial
    dims are dynamic); a graph that disagrees is refused. Returns the checks, the session and the real images."""
    t0 = time.perf_counter()
    export_onnx(encoder.backbone, path, preprocess.image_size, prof.onnx_options, metadata)
    session = onnx_session(path)
    real = parity_images(preprocess, prof.parity.images)
    g = torch.Generator().manual_seed(0)
    inputs = {"real": real, "random": torch.randn(7, 3, preprocess.image_size, preprocess.image_size, generator=g)}
    if prof.onnx_options.dynamic_spatial:
        size = preprocess.image_size + 32
        inputs["random_larger"] = torch.randn(2, 3, size, size, generator=g)
    parity = check_parity(encoder.backbone, session, inputs, prof.parity.atol, prof.parity.rtol)
    parity["seconds"] = time.perf_counter() - t0
    bad = {k: v for k, v in parity.items() if isinstance(v, dict) and not v["ok"]}
    if bad:
        worst = max(bad.values(), key=lambda v: v["max_abs"])
        raise LwzooError(
            f"the ONNX graph disagrees with torch (max abs error {worst['max_abs']:.3g}, tolerance "
            f"atol {prof.parity.atol:g} + rtol {prof.parity.rtol:g}); nothing was written. Try another --opset"
        )
    return parity, session, real


def _write_int8(session, real, preprocess, prof, tmp: Path, calib_data, eval_data) -> dict[str, Any]:
    """The int8 graph by onnxruntime quantisation, with its size, how far its features move from fp32's, its speed
    against fp32's and (with ``eval_data``) its kNN change; ``recommended`` names the ONNX file to use."""
    calibration = _calibration(calib_data, preprocess, prof.int8.calibration_images)
    quantize_int8(tmp / ONNX, tmp / ONNX_INT8, prof.int8, calibration)
    int8_session = onnx_session(tmp / ONNX_INT8)
    fp32_feats, int8_feats = run_onnx(session, real, 16), run_onnx(int8_session, real, 16)
    cos = F.cosine_similarity(torch.from_numpy(fp32_feats), torch.from_numpy(int8_feats), dim=1)
    report = {
        "mode": prof.int8.mode,
        "ops": prof.int8.ops,
        "depthwise": prof.int8.depthwise,
        "calibration_images": len(calibration) if calibration is not None else 0,
        "bytes_fp32": (tmp / ONNX).stat().st_size,
        "bytes_int8": (tmp / ONNX_INT8).stat().st_size,
        "feature_cosine_min": float(cos.min()),
        "feature_cosine_mean": float(cos.mean()),
        **int8_speed(session, int8_session, calibration[:SPEED_BATCH]),
    }
    if eval_data is not None:
        report |= int8_knn_change(session, int8_session, eval_data, preprocess)
    report["recommended"] = recommended_onnx(report)
    return report


def int8_speed(fp32_session, int8_session, images: torch.Tensor) -> dict[str, Any]:
    """A few seconds of interleaved timing on ``images`` (N, 3, H, W): ``speed_ratio`` = fp32 seconds / int8
    seconds per batch (medians), i.e. int8's images/s over fp32's on this machine."""
    seconds, rounds = time_sessions({"fp32": fp32_session, "int8": int8_session}, images)
    return {
        "speed_ratio": seconds["fp32"] / seconds["int8"],
        "speed_ms_fp32": seconds["fp32"] * 1000,
        "speed_ms_int8": seconds["int8"] * 1000,
        "speed_batch": len(images),
        "speed_image_size": images.shape[-1],
        "speed_rounds": rounds,
    }


def recommended_onnx(int8: dict[str, Any]) -> str:
    """The ONNX file to use: the int8 graph when it is at least ``INT8_MIN_SPEEDUP`` times as fast as fp32 and
    (when measured) loses at most ``INT8_MAX_KNN_DROP`` points of kNN top-1; otherwise the fp32 graph."""
    faster = int8["speed_ratio"] >= INT8_MIN_SPEEDUP
    close = int8.get("knn_top1_change", 0.0) >= -INT8_MAX_KNN_DROP
    return ONNX_INT8 if faster and close else ONNX


def _calibration(calib_data: str | Path | None, preprocess: Preprocess, n: int) -> torch.Tensor:
    images = load_images(calib_data if calib_data is not None else "builtin:train", preprocess.decode_size)
    if images.images is None:
        raise LwzooError(
            f"--calib-data '{calib_data}' is too large to hold in memory; point it at a few hundred images"
        )
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]
    return preprocess(images.images[pick]).contiguous()


def _report(result: ExportResult) -> str:
    lines = [f"exported {result.checkpoint} -> {result.out_dir}"]
    for name, size in result.files.items():
        lines.append(f"  {name:<22} {size / 1e6:8.2f} MB")
    for name, check in result.parity.items():
        if isinstance(check, dict):
            lines.append(
                f"  parity onnxruntime vs torch, {name} batch {check['batch']}: "
                f"max abs {check['max_abs']:.2e}, max rel {check['max_rel']:.2e}"
            )
    if result.int8:
        q = result.int8
        lines.append(
            f"  int8 ({q['mode']}): {q['bytes_int8'] / 1e6:.2f} MB vs {q['bytes_fp32'] / 1e6:.2f} MB fp32; "
            f"feature cosine to fp32 min {q['feature_cosine_min']:.4f}, mean {q['feature_cosine_mean']:.4f}"
        )
        lines.append(
            f"  int8 speed: {q['speed_ratio']:.2f}x fp32 (onnxruntime, batch {q['speed_batch']} at "
            f"{q['speed_image_size']} px, median of {q['speed_rounds']} interleaved runs on this machine)"
        )
        if "knn_top1_change" in q:
            lines.append(
                f"  int8 kNN top-1 on {q['eval_data']}: {q['knn_top1_int8']:.2f}% vs {q['knn_top1_fp32']:.2f}% fp32 "
                f"({q['knn_top1_change']:+.2f})"
            )
        lines.append(f"  use {q['recommended']}" + (" (int8 is not worth it here)" if q["recommended"] == ONNX else ""))
    return "\n".join(lines)
