"""The run folder's names and its evals.json registry."""

import json

import pytest

from lwzoo.errors import LwzooError
from lwzoo.run_folder import (
    CHECKPOINT,
    EVALS,
    kept_checkpoint,
    latest_checkpoint,
    new_run_dir,
    read_evals,
    record_eval,
)


def result(protocol, top1, identity="w1", val="v"):
    return {"protocol": protocol, "train_data": "t", "val_data": val, "identity": identity, "top1": top1}


def test_record_eval_replaces_the_same_evaluation_and_keeps_others(tmp_path):
    record_eval(tmp_path, result("knn", 10.0))
    record_eval(tmp_path, result("linear", 20.0))
    record_eval(tmp_path, result("knn", 11.0))  # a rerun: replaces its row
    record_eval(tmp_path, result("knn", 12.0, identity="w2"))  # other weights: a new row
    record_eval(tmp_path, result("knn", 13.0, val="v2"))  # other data: a new row
    rows = read_evals(tmp_path)
    assert [(r["protocol"], r["top1"]) for r in rows] == [("linear", 20.0), ("knn", 11.0), ("knn", 12.0), ("knn", 13.0)]
    assert json.loads((tmp_path / EVALS).read_text())["results"] == rows
    assert read_evals(tmp_path / "none") == []


def test_new_run_dirs_are_distinct_and_the_newest_checkpoint_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("LWZOO_RUNS", str(tmp_path))
    with pytest.raises(LwzooError, match="lwzoo pretrain mobilenetv3_large"):
        latest_checkpoint("mobilenetv3_large")
    first = new_run_dir("mobilenetv3_large", "demo")
    first.mkdir(parents=True)
    second = new_run_dir("mobilenetv3_large", "demo")
    assert second != first and second.parent == first.parent == tmp_path / "mobilenetv3_large"
    second.mkdir()
    (first / CHECKPOINT).write_bytes(b"a")
    (second / CHECKPOINT).write_bytes(b"b")
    import os

    os.utime(first / CHECKPOINT, (1, 1))
    assert latest_checkpoint("mobilenetv3_large") == second / CHECKPOINT
    assert latest_checkpoint() == second / CHECKPOINT
    assert kept_checkpoint(12) == "checkpoint-epoch0012.pt"
