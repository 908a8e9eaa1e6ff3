"""Model cards: ``model_cards/template.md.j2`` rendered from what an export recorded.

Every number on a card (the ``model-index`` in the front matter and the results table) is read
from the export's ``evals.json``, never typed in; the training curve is drawn from its
``metrics.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import yaml

from .errors import LwzooError
from .hub_folder import read_hub_config
from .metrics import read_metrics
from .resources import resource_dir
from .version import __version__

CURVE = "training_curve.png"
TEMPLATE = "template.md.j2"


def dataset_id(source: str) -> str:
    """A dataset name for the card from an eval's data source: the built-in set, or a folder's parent name."""
    if source.startswith("builtin"):
        return "lwzoo/builtin-textures"
    path = Path(source)
    return path.parent.name if path.name in ("train", "val", "test", "validation") else path.name


def plot_training_curve(metrics_jsonl: Path, out_png: Path) -> bool:
    """Loss per logged step and, when the run had ``--eval-every``, kNN top-1 per epoch.

    Returns False when the log has nothing to draw."""
    rows = read_metrics(metrics_jsonl) if metrics_jsonl.is_file() else []
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


def _recorded_results(export_dir: Path) -> list[dict[str, Any]]:
    path = export_dir / "evals.json"
    return json.loads(path.read_text())["results"] if path.is_file() else []


def card_results(export_dir: Path) -> list[dict[str, Any]]:
    """The evaluations an export recorded, or an error telling how to make them."""
    results = _recorded_results(export_dir)
    if not results:
        raise LwzooError(
            f"the export '{export_dir}' has no evaluation results, and a card must cite real numbers: run "
            "`lwzoo eval knn CKPT --baseline` (and `lwzoo eval linear CKPT --baseline`), then export again"
        )
    return results


def render_card(
    export_dir: Path,
    repo_id: str,
    load_name: str | None = None,
    license: str = "apache-2.0",
    curve: str | None = CURVE,
    require_results: bool = True,
    target: str | None = None,
) -> str:
    """The README.md of a Hub repo for an export folder.

    ``require_results=False`` lets a local zoo build without labelled data have a card that says it was not
    evaluated (a card for the Hub must cite real numbers). ``target`` is what the paper reports for the recipe,
    printed as a target and never as this model's result.
    """
    arch, preprocess, config = read_hub_config(export_dir)
    results = card_results(export_dir) if require_results else _recorded_results(export_dir)
    training = config.get("lwzoo", {}).get("training", {})
    recipe = yaml.safe_load((export_dir / "recipe.yaml").read_text()) if (export_dir / "recipe.yaml").is_file() else {}
    name = repo_id.split("/")[-1]
    datasets = sorted({dataset_id(r["val_data"]) for r in results} | {dataset_id(r["train_data"]) for r in results})
    loss = recipe.get("loss", {})
    smoothed = loss.get("alpha", 0) > 0
    front = {
        "library_name": "timm",
        "license": license,
        "pipeline_tag": "image-feature-extraction",
        "tags": ["lwzoo", "self-supervised", "moco", "contrastive", arch.name, arch.timm_name],
        "datasets": datasets,
        "model-index": [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": f"{r['protocol']} on frozen features"},
                        "dataset": {"type": dataset_id(r["val_data"]), "name": dataset_id(r["val_data"])},
                        "metrics": [
                            {"type": "accuracy", "value": round(r["top1"], 2), "name": f"{r['protocol']} top-1"},
                            *(
                                [
                                    {
                                        "type": "top_5_accuracy",
                                        "value": round(r["top5"], 2),
                                        "name": f"{r['protocol']} top-5",
                                    }
                                ]
                                if r.get("top5") is not None
                                else []
                            ),
                        ],
                    }
                    for r in results
                ],
            }
        ],
    }
    data = training.get("data", {})
    data_text = (
        f"{data.get('num_images', '?'):,} images from `{data.get('source', '?')}`"
        + (f" ({len(data['classes'])} classes, labels unused in pretraining)" if data.get("classes") else "")
        + f"; {training.get('epoch', '?')} epochs, {training.get('step', '?')} steps, seed {training.get('seed', '?')}."
        if data
        else "Not recorded in this export."
    )
    extra = []
    if str(data.get("source", "")).startswith("builtin"):
        extra.append(
            "It was trained on lwzoo's built-in demo set of synthetic textures: a demonstration, not a useful encoder."
        )
    rows = [
        (f"{section}.{key}", value)
        for section, values in recipe.items()
        if isinstance(values, dict)
        for key, value in values.items()
    ]
    template = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("model_cards"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    ).get_template(TEMPLATE)
    return template.render(
        front_matter=yaml.safe_dump(front, sort_keys=False),
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
        recipe_rows=rows,
        data_text=data_text,
        eval_intro="kNN with k = 20 and exp(sim / 0.07) votes, linear probe by L-BFGS on standardised features.",
        results=[_ns(r) for r in results],
        target=target,
        curve=curve,
        load_name=load_name or repo_id,
        repo_id=repo_id,
        has_onnx=(export_dir / "model.onnx").is_file(),
        image_size=preprocess.image_size,
        decode_size=preprocess.decode_size,
        mean=list(preprocess.mean),
        std=list(preprocess.std),
        extra_limitations=extra,
        lwzoo_version=__version__,
    )


class _ns(dict):
    """Attribute access for the template, with ``baseline`` as a namespace too."""

    def __getattr__(self, key: str) -> Any:
        value = self.get(key)
        return _ns(value) if isinstance(value, dict) else value
