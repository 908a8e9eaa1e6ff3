"""Run metrics (lwzoo/metrics.py): one JSON row per line, a resumed run drops the rows a crash made stale."""

import json

from lwzoo.metrics import MetricsLog, read_metrics


def test_rows_are_json_lines_in_the_order_logged(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        log.log("step", 2, loss=5.5, lr=0.1)
        log.log("epoch", 4, epoch=1, loss=5.25)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"kind": "step", "step": 2, "loss": 5.5, "lr": 0.1},
        {"kind": "epoch", "step": 4, "epoch": 1, "loss": 5.25},
    ]


def test_a_resumed_log_drops_rows_after_the_checkpoint_and_appends(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False) as log:
        for step in (2, 4, 6):
            log.log("step", step, loss=float(step))
    with MetricsLog(tmp_path, resume_step=4, tensorboard=False) as log:  # the checkpoint was at step 4
        log.log("step", 6, loss=60.0)
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(2, 2.0), (4, 4.0), (6, 60.0)]


def test_a_disabled_log_writes_nothing(tmp_path):
    with MetricsLog(tmp_path, tensorboard=False, enabled=False) as log:  # a DDP rank other than 0
        log.log("step", 1, loss=1.0)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "step", "step": 1, "loss": 2.0}\n{"kind": "step", "st')
    assert read_metrics(path) == [{"kind": "step", "step": 1, "loss": 2.0}]
