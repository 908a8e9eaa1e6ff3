"""``lwzoo eval``: kNN and linear-probe evaluation of a frozen encoder, as the paper validates one.

Both protocols read the backbone's pooled pre-logits features in eval mode. kNN votes with the k
nearest training features by cosine similarity, each vote weighted by exp(sim / T) (Wu et al. 2018).
The linear probe is a linear layer on standardised features, fitted on cached features by default,
or trained on augmented images every epoch (``augment=True``) as in MoCo's linear evaluation.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import crop_boxes, resized_crop
from .data import ImageSet, labelled_sets
from .devices import resolve_device
from .encoders import Encoder, load_encoder, random_encoder
from .errors import LwzooError
from .features import Features, extract_features
from .files import atomic_write_text
from .progress import SILENT, Progress
from .run_folder import eval_report, record_eval, runs_root
from .scoring import KNN_K, KNN_TEMPERATURE, accuracies, knn_predict, linear_probe
from .version import __version__


@dataclass
class EvalResult:
    """One evaluation: accuracies (in %) and everything needed to cite or reproduce them."""

    protocol: str
    top1: float
    top5: float | None
    per_class: dict[str, float]
    encoder: str
    arch: str
    identity: str
    train_data: str
    val_data: str
    num_train: int
    num_val: int
    settings: dict[str, Any]
    seconds: dict[str, float]
    features_cached: bool
    baseline: dict[str, Any] | None = None  # the same protocol on random:ARCH with the same preprocessing
    lwzoo_version: str = __version__
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """Accuracies as a text table, with the random-init baseline beside them when it was run."""
        base = self.baseline or {}
        rows = [("top-1", self.top1, base.get("top1"))]
        if self.top5 is not None:
            rows.append(("top-5", self.top5, base.get("top5")))
        rows += [(f"  {name}", acc, base.get("per_class", {}).get(name)) for name, acc in self.per_class.items()]
        width = max(len(r[0]) for r in rows)
        head = f"{'metric':<{width}}  {'acc %':>7}" + (f"  {'random init':>11}" if base else "")
        lines = [head]
        for name, value, ref in rows:
            lines.append(f"{name:<{width}}  {value:>7.2f}" + (f"  {ref:>11.2f}" if base else ""))
        return "\n".join(lines)


# ---- data and bookkeeping ---------------------------------------------------------------------------------------


def default_out(encoder: Encoder) -> Path:
    if encoder.checkpoint is not None:
        return encoder.checkpoint.parent
    return runs_root() / "eval" / re.sub(r"[^A-Za-z0-9_.-]+", "-", encoder.spec)


def record(result: EvalResult, encoder: Encoder, out: Path) -> Path:
    """Write ``out/eval-<protocol>.json``, and file the result in the run folder's ``evals.json`` beside the
    checkpoint, where export and publish look for the numbers to cite."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / eval_report(result.protocol)
    atomic_write_text(path, json.dumps(result.to_dict(), indent=1))
    if encoder.checkpoint is not None:
        record_eval(encoder.checkpoint.parent, result.to_dict())
    return path


def _features(encoder: Encoder, images: ImageSet, device: torch.device, batch_size: int, cache: bool, progress):
    encoder.backbone.to(device, memory_format=torch.channels_last)
    return extract_features(
        encoder.backbone, encoder.identity, encoder.preprocess, images, device, batch_size, cache, progress
    )


def _summary(result: EvalResult, out_json: Path) -> str:
    """What ``lwzoo eval`` reports: the encoder, the data, how it was scored, the table and where it was written."""
    feats = "cached" if result.features_cached else f"extracted in {result.seconds['features']:.1f}s"
    settings = ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in result.settings.items()
        if k != "held_out_accuracy"
    )
    lines = [
        f"lwzoo eval {result.protocol}: {result.encoder} ({result.arch})",
        f"train: {result.train_data} ({result.num_train:,} images)   val: {result.val_data} ({result.num_val:,})",
        f"features: {feats}; classifier {result.seconds['probe']:.1f}s; {settings}",
    ]
    if result.settings.get("held_out_accuracy"):
        grid = ", ".join(f"{wd:g}: {acc:.1f}%" for wd, acc in result.settings["held_out_accuracy"].items())
        lines.append(f"weight decay chosen on a held-out fifth of the training features ({grid})")
    return "\n".join([*lines, result.table(), f"written: {out_json}"])


# ---- the public entry points ------------------------------------------------------------------------------------


def knn(
    checkpoint: str | Path | None = None,
    data: str | Path | None = None,
    val_data: str | Path | None = None,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    batch_size: int = 256,
    image_size: int | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    cache: bool = True,
    baseline: bool = False,
    progress: Progress = SILENT,
) -> EvalResult:
    """kNN accuracy of a frozen encoder.

    Args:
        checkpoint: an lwzoo checkpoint or run folder, ``random:ARCH[:SEED]``, ``timm:ARCH``, or None
            for the newest run.
        data, val_data: labelled folders (DIR/<class>/<image>) to vote with and to score; by default
            the built-in set's train and held-out splits.
        k, temperature: neighbours, and the T of the exp(sim / T) vote weights.
        batch_size: images per forward pass when extracting features.
        image_size: evaluate at this size instead of the encoder's own.
        device: where to extract features.
        out: folder for ``eval-knn.json``. Default: the checkpoint's run folder.
        cache: reuse and store features in the cache (``$LWZOO_CACHE/features``).
        baseline: also score ``random:ARCH`` (timm's initialisation, seed 0) with the same
            preprocessing, reported beside the encoder's numbers.
        progress: where progress and the result table go (default: nowhere; the CLI passes a Console).
    """
    if k < 1 or temperature <= 0:
        raise LwzooError(f"kNN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    dev = resolve_device(device)

    def run(encoder: Encoder, train: ImageSet, val: ImageSet, val_map: torch.Tensor) -> EvalResult:
        f_train = _features(encoder, train, dev, batch_size, cache, progress)
        f_val = _features(encoder, val, dev, batch_size, cache, progress)
        t0 = time.perf_counter()
        scores = knn_predict(f_train.features, f_train.labels, f_val.features, len(train.classes), k, temperature)
        settings = {"k": k, "temperature": temperature}
        return _result("knn", encoder, train, val, f_train, f_val, val_map, scores, settings, time.perf_counter() - t0)

    return _evaluate(run, checkpoint, data, val_data, image_size, out, baseline, progress)


def linear(
    checkpoint: str | Path | None = None,
    data: str | Path | None = None,
    val_data: str | Path | None = None,
    augment: bool = False,
    weight_decay: float | None = None,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    image_size: int | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    cache: bool = True,
    seed: int = 0,
    baseline: bool = False,
    progress: Progress = SILENT,
) -> EvalResult:
    """Linear-probe accuracy of a frozen encoder.

    By default the probe is fitted on cached centre-crop features by full-batch L-BFGS (convex,
    deterministic, seconds; :func:`lwzoo.scoring.linear_probe`), with the L2 weight chosen on a held-out
    fifth of the training features unless ``weight_decay`` is given: from 1e-5 to 1e-1, grown a decade at a
    time past an end of that grid while the end wins. ``settings["held_out_accuracy"]`` holds every weight
    tried and its held-out accuracy. With ``augment=True`` it follows MoCo's linear evaluation:
    a fresh random-resized crop and flip of every training image each epoch through the frozen
    backbone, SGD (momentum 0.9, cosine lr from ``lr`` per 256 images, no weight decay) for
    ``epochs`` epochs; features are standardised by a non-affine BatchNorm, as in MAE's probe.

    Other arguments are as for :func:`knn`.
    """
    dev = resolve_device(device)

    def run(encoder: Encoder, train: ImageSet, val: ImageSet, val_map: torch.Tensor) -> EvalResult:
        f_val = _features(encoder, val, dev, batch_size, cache, progress)
        num_classes = len(train.classes)
        t0 = time.perf_counter()
        if augment:
            probe = _train_augmented_probe(encoder, train, num_classes, epochs, lr, batch_size, dev, seed, progress)
            f_train = Features(torch.empty(0), train.labels, train.classes, seconds=0.0)
            settings = {"optimizer": "SGD", "epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": 0.0}
        else:
            f_train = _features(encoder, train, dev, batch_size, cache, progress)
            t0 = time.perf_counter()
            probe, wd, grid_accs = linear_probe(f_train.features, f_train.labels, num_classes, weight_decay, seed)
            settings = {"optimizer": "L-BFGS", "weight_decay": wd, "held_out_accuracy": grid_accs}
        with torch.no_grad():
            scores = probe.cpu()(f_val.features)
        protocol = "linear-augment" if augment else "linear"
        return _result(
            protocol, encoder, train, val, f_train, f_val, val_map, scores, settings, time.perf_counter() - t0
        )

    return _evaluate(run, checkpoint, data, val_data, image_size, out, baseline, progress)


def _evaluate(run, checkpoint, data, val_data, image_size, out, baseline: bool, progress: Progress) -> EvalResult:
    """Resolve the encoder and data, run one protocol (and on a matching random init), report and record."""
    encoder = load_encoder(checkpoint, data, image_size)
    train, val, val_map = labelled_sets(data, val_data, encoder.preprocess.decode_size, progress)
    result = run(encoder, train, val, val_map)
    if baseline:
        ref = run(random_encoder(encoder.arch, encoder.preprocess), train, val, val_map)
        result.baseline = {k: getattr(ref, k) for k in ("encoder", "identity", "top1", "top5", "per_class", "settings")}
    progress.say(_summary(result, record(result, encoder, Path(out) if out else default_out(encoder))))
    return result


def _result(protocol, encoder, train, val, f_train, f_val, val_map, scores, settings, probe_s) -> EvalResult:
    top1, top5, per_class = accuracies(scores, val_map[f_val.labels], train.classes)
    return EvalResult(
        protocol=protocol,
        top1=top1,
        top5=top5,
        per_class=per_class,
        encoder=encoder.spec,
        arch=encoder.arch.name,
        identity=encoder.identity,
        train_data=train.source,
        val_data=val.source,
        num_train=len(train),
        num_val=len(f_val.labels),
        settings={**settings, "image_size": encoder.preprocess.image_size, "crop_pct": encoder.preprocess.crop_pct},
        seconds={"features": f_train.seconds + f_val.seconds, "probe": probe_s},
        features_cached=f_val.cached and (f_train.cached or protocol == "linear-augment"),
    )


def _train_augmented_probe(
    encoder: Encoder,
    train: ImageSet,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    seed: int,
    progress: Progress,
) -> nn.Module:
    """MoCo-style linear evaluation: augmented images through the frozen backbone, every epoch."""
    if train.images is None:
        raise LwzooError(
            "--augment needs the training images in memory; raise data.in_memory_gb or use the default probe"
        )
    p = encoder.preprocess
    backbone = encoder.backbone.to(device, memory_format=torch.channels_last).eval()
    probe = nn.Sequential(
        nn.BatchNorm1d(encoder.feature_dim, affine=False), nn.Linear(encoder.feature_dim, num_classes)
    )
    nn.init.normal_(probe[1].weight, std=0.01)
    nn.init.zeros_(probe[1].bias)
    probe.to(device)
    steps_per_epoch = max(1, len(train) // batch_size)
    opt = torch.optim.SGD(probe.parameters(), lr=lr * batch_size / 256, momentum=0.9, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(p.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(p.std, device=device).view(1, 3, 1, 1)
    with progress.counter(epochs * steps_per_epoch, "linear probe (augmented)", "step") as bar:
        for _ in range(epochs):
            perm = torch.randperm(len(train), generator=g)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                x = train.images[idx].to(device).float().div_(255)
                boxes = crop_boxes(len(idx), (0.08, 1.0), (3 / 4, 4 / 3), g, torch.device("cpu")).to(device)
                flip = (torch.rand(len(idx), generator=g) < 0.5).to(device)
                x = ((resized_crop(x, boxes, flip, p.image_size) - mean) / std).contiguous(
                    memory_format=torch.channels_last
                )
                with torch.no_grad():
                    feats = backbone(x).float()
                loss = F.cross_entropy(probe(feats), train.labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    return probe.eval()
