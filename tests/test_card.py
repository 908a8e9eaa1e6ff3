"""Model cards: every number and every method sentence comes from what the export recorded."""

import json
import shutil

import pytest
import yaml

from lwzoo.card import onnx_choice
from lwzoo.errors import LwzooError
from lwzoo.hub_folder import CARD, write_card


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture
def folder(evaluated_export, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(evaluated_export, copy)
    return copy


def test_card_renders_with_the_recorded_metrics(folder):
    write_card(folder, "lwzoo-test/mnv3-demo")
    card = (folder / CARD).read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-feature-extraction"
    assert {"lwzoo", "self-supervised", "moco", "contrastive", "mobilenetv3_large"} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["lwzoo/builtin-textures"]
    evals = json.loads((folder / "evals.json").read_text())["results"]
    cited = {
        (r["task"]["name"].split()[0], m["name"]): m["value"]
        for r in meta["model-index"][0]["results"]
        for m in r["metrics"]
    }
    for e in evals:
        assert cited[(e["protocol"], f"{e['protocol']} top-1")] == round(e["top1"], 2)
    assert len(evals) == 2
    for section in ("## Recipe", "## Training data", "## Evaluation", "## How to use", "## Limitations", "## Citation"):
        assert section in card
    assert 'timm.create_model("hf-hub:lwzoo-test/mnv3-demo"' in card and "onnxruntime" in card
    assert "@inproceedings{lin2023stronger" in card and "2212.07158" in card
    assert "| `moco.temperature` | 0.2 |" in card  # the recipe table holds the real values
    assert "synthetic textures" in card  # built-in data is called what it is
    assert (folder / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_method_line_is_read_from_the_recorded_settings(folder):
    """Edit the recorded kNN and probe settings: the card's method sentence follows them, nothing is fixed text."""
    path = folder / "evals.json"
    evals = json.loads(path.read_text())
    for r in evals["results"]:
        if r["protocol"] == "knn":
            r["settings"] |= {"k": 7, "temperature": 0.15}
        else:
            assert r["settings"]["optimizer"] == "L-BFGS"
            r["settings"]["weight_decay"] = 0.0123
    path.write_text(json.dumps(evals))
    write_card(folder, "lwzoo-test/mnv3-demo")
    card = (folder / CARD).read_text()
    assert "kNN with k = 7 and exp(sim / 0.15) votes" in card
    assert "L-BFGS on standardised features, weight decay 0.0123 chosen on a held-out fifth" in card
    assert "k = 20" not in card and "0.07" not in card.split("## Evaluation")[1].split("##")[0]


def test_an_sgd_probe_is_described_as_one(folder):
    path = folder / "evals.json"
    evals = json.loads(path.read_text())
    linear = next(r for r in evals["results"] if r["protocol"] != "knn")
    linear["settings"] = {"optimizer": "SGD", "epochs": 3, "lr": 0.5, "batch_size": 128, "weight_decay": 0.0}
    path.write_text(json.dumps(evals))
    write_card(folder, "lwzoo-test/mnv3-demo")
    card = (folder / CARD).read_text()
    assert "linear probe by SGD on augmented crops, 3 epochs, lr 0.5, batch 128" in card and "L-BFGS" not in card


def test_a_card_without_results_is_refused_unless_asked_for(folder):
    (folder / "evals.json").unlink()
    with pytest.raises(LwzooError, match="no evaluation results"):
        write_card(folder, "lwzoo-test/x")
    assert not (folder / CARD).exists()
    write_card(folder, "lwzoo-test/x", require_results=False, target="62.3% top-1")
    card = (folder / CARD).read_text()
    assert "Not evaluated" in card and "Target, not this model's result" in card and "62.3% top-1" in card


def test_the_onnx_file_line_names_the_file_the_export_recommended():
    """The which-file line is export.json's int8 record in words: its recommendation, speed and kNN change."""
    slow = {"recommended": "model.onnx", "speed_ratio": 0.87, "speed_batch": 32, "speed_image_size": 224}
    assert onnx_choice(slow) == (
        "Use `model.onnx`: int8 ran at 0.87x the speed of fp32 (onnxruntime CPU, batch 32 at 224 px, timed at "
        "export); its kNN accuracy against fp32 was not measured."
    )
    fast = slow | {"recommended": "model.int8.onnx", "speed_ratio": 1.72}
    fast |= {"knn_top1_change": -0.3125, "eval_data": "builtin:val"}
    assert onnx_choice(fast).startswith("Use `model.int8.onnx`: int8 ran at 1.72x the speed of fp32")
    assert onnx_choice(fast).endswith("; kNN top-1 -0.31 points against fp32 on builtin:val.")
    # no int8 graph, or an export from before the speed was recorded: no line rather than a guess
    assert onnx_choice(None) == "" and onnx_choice({"mode": "static", "bytes_int8": 1}) == ""
