"""Model cards: ``model_cards/template.md.j2`` rendered from what an export recorded.

Every number on a card (the ``model-index`` in the front matter and the results table) comes from the
evaluations the export recorded, never typed in, and the evaluation method is described from each
result's recorded settings. :func:`lwzoo.hub_folder.write_card` reads the files and calls this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml

from .archs import Arch
from .preprocess import Preprocess
from .recipe import INIT
from .resources import resource_dir
from .version import __version__

TEMPLATE = "template.md.j2"


def dataset_id(source: str) -> str:
    """A dataset name for the card from an eval's data source: the built-in set, or a folder's parent name."""
    if source.startswith("builtin"):
        return "lwzoo/builtin-textures"
    path = Path(source)
    return path.parent.name if path.name in ("train", "val", "test", "validation") else path.name


def plot_training_curve(rows: list[dict[str, Any]], out_png: Path) -> bool:
    """Loss per logged step and, when the run had ``--eval-every``, kNN top-1 per epoch, from metrics rows.

    Returns False when the log has nothing to draw."""
    steps = [r for r in rows if r.get("kind") == "step"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    if not steps:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="C0", lw=1.2)
    ax.set(xlabel="step", ylabel="training loss")
    ax.grid(alpha=0.3)
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r["knn_top1"] for r in evals], "o-", color="C1", lw=1.2, ms=3)
        ax2.set_ylabel("kNN top-1 % (held-out)", color="C1")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def method_line(results: list[dict[str, Any]]) -> str:
    """How the results were measured, from each protocol's recorded settings (never a fixed sentence)."""
    parts = []
    for protocol in dict.fromkeys(r["protocol"] for r in results):
        s = next(r for r in results if r["protocol"] == protocol)["settings"]
        if protocol == "knn":
            parts.append(f"kNN with k = {s['k']} and exp(sim / {s['temperature']:g}) votes")
        elif s.get("optimizer") == "L-BFGS":
            parts.append(
                f"linear probe by L-BFGS on standardised features, weight decay {s['weight_decay']:g} chosen on a "
                "held-out fifth of the training data"
            )
        else:
            parts.append(
                f"linear probe by {s.get('optimizer', '?')} on augmented crops, {s.get('epochs', '?')} epochs, "
                f"lr {s.get('lr', '?')}, batch {s.get('batch_size', '?')}"
            )
    return "; ".join(parts) + "."


def _front_matter(arch: Arch, results: list[dict[str, Any]], name: str, license: str) -> str:
    """The card's YAML header: Hub metadata and a ``model-index`` of every recorded result."""

    def metrics(r: dict[str, Any]) -> list[dict[str, Any]]:
        found = [{"type": "accuracy", "value": round(r["top1"], 2), "name": f"{r['protocol']} top-1"}]
        if r.get("top5") is not None:
            found.append({"type": "top_5_accuracy", "value": round(r["top5"], 2), "name": f"{r['protocol']} top-5"})
        return found

    index = [
        {
            "task": {"type": "image-classification", "name": f"{r['protocol']} on frozen features"},
            "dataset": {"type": dataset_id(r["val_data"]), "name": dataset_id(r["val_data"])},
            "metrics": metrics(r),
        }
        for r in results
    ]
    front = {
        "library_name": "timm",
        "license": license,
        "pipeline_tag": "image-feature-extraction",
        "tags": ["lwzoo", "self-supervised", "moco", "contrastive", arch.name, arch.timm_name],
        "datasets": sorted({dataset_id(r[k]) for r in results for k in ("val_data", "train_data")}),
        "model-index": [{"name": name, "results": index}],
    }
    return yaml.safe_dump(front, sort_keys=False)


def init_text(init: dict[str, Any] | None) -> str:
    """One line on the weights pretraining started from (``lwzoo pretrain --init``); empty for a random init."""
    if not init:
        return ""
    # the sha256 names the weights; the file's local path would say nothing on a published card
    return (
        f"Initialised from `{init.get('source', '?')}` ({init.get('kind', '?')}, sha256 `{init.get('sha256', '?')}`); "
        "the projector, queue and optimizer started fresh."
    )


def _data_text(training: dict[str, Any]) -> str:
    data = training.get("data", {})
    if not data:
        return "Not recorded in this export."
    classes = f" ({len(data['classes'])} classes, labels unused in pretraining)" if data.get("classes") else ""
    init = init_text(training.get("init"))
    return (
        f"{data.get('num_images', '?'):,} images from `{data.get('source', '?')}`{classes}; "
        f"{training.get('epoch', '?')} epochs, {training.get('step', '?')} steps, seed {training.get('seed', '?')}."
    ) + (f"\n\n{init}" if init else "")


def onnx_choice(int8: dict[str, Any] | None) -> str:
    """Which ONNX file to use, as export recorded it (``recommended`` in export.json's int8 record), with the
    speed and kNN change it was chosen on; empty when the export has no int8 graph."""
    if not int8 or "recommended" not in int8:
        return ""
    speed = (
        f"int8 ran at {int8['speed_ratio']:.2f}x the speed of fp32 (onnxruntime CPU, batch {int8['speed_batch']} at "
        f"{int8['speed_image_size']} px, timed at export)"
    )
    knn = (
        f"kNN top-1 {int8['knn_top1_change']:+.2f} points against fp32 on {int8['eval_data']}"
        if "knn_top1_change" in int8
        else "its kNN accuracy against fp32 was not measured"
    )
    return f"Use `{int8['recommended']}`: {speed}; {knn}."


def render_card(
    arch: Arch,
    preprocess: Preprocess,
    config: dict[str, Any],
    results: list[dict[str, Any]],
    recipe: dict[str, Any],
    repo_id: str,
    load_name: str | None,
    license: str,
    curve: str | None,
    target: str | None,
    has_onnx: bool,
    int8: dict[str, Any] | None = None,
) -> str:
    """The README.md of a model folder: ``config`` is its config.json, ``results`` its recorded evaluations,
    ``recipe`` its recipe.yaml (as a dict), ``curve`` the training-curve image's file name, if drawn, ``int8``
    the int8 record of its export.json, if any."""
    training = config.get("lwzoo", {}).get("training", {})
    name = repo_id.split("/")[-1]
    loss = recipe.get("loss", {})
    smoothed = loss.get("alpha", 0) > 0
    from_builtin = str(training.get("data", {}).get("source", "")).startswith("builtin")
    template = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("model_cards"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    ).get_template(TEMPLATE)
    return template.render(
        front_matter=_front_matter(arch, results, name, license),
        title=name,
        summary=f"{arch.name} encoder{' trained with smoothed InfoNCE' if smoothed else ''}, "
        f"published with lwzoo {__version__}.",
        arch_title=arch.name,
        timm_name=arch.timm_name,
        loss_name=f"smoothed InfoNCE (alpha {loss.get('alpha')}, top-{loss.get('topk')})"
        if smoothed
        else "InfoNCE loss",
        feature_dim=arch.feature_dim,
        recipe_name=recipe.get("name", "?"),
        recipe_digest=training.get("recipe_digest", "?"),
        recipe_rows=[  # the init section records the starting weights, which the training data section states
            (f"{sec}.{k}", v)
            for sec, vals in recipe.items()
            if isinstance(vals, dict) and sec != INIT
            for k, v in vals.items()
        ],
        data_text=_data_text(training),
        eval_intro=method_line(results) if results else "",
        results=[_ns(r) for r in results],
        target=target,
        curve=curve,
        load_name=load_name or repo_id,
        repo_id=repo_id,
        has_onnx=has_onnx,
        onnx_choice=onnx_choice(int8),
        image_size=preprocess.image_size,
        decode_size=preprocess.decode_size,
        mean=list(preprocess.mean),
        std=list(preprocess.std),
        extra_limitations=[
            "It was trained on lwzoo's built-in demo set of synthetic textures: a demonstration, not a useful encoder."
        ]
        if from_builtin
        else [],
        lwzoo_version=__version__,
    )


class _ns(dict):
    """Attribute access for the template, with ``baseline`` as a namespace too."""

    def __getattr__(self, key: str) -> Any:
        value = self.get(key)
        return _ns(value) if isinstance(value, dict) else value
