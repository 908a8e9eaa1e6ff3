import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lwzoo.checkpoint import load_checkpoint
from lwzoo.data import builtin_images
from lwzoo.distributed import SINGLE, DistContext, from_environment, teardown
from lwzoo.metrics import read_metrics
from lwzoo.pretrain import pretrain
from lwzoo.run_folder import CHECKPOINT

from .conftest import TINY

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Two gloo processes on this CPU; a hang (a known gloo teardown hazard) fails the test, not the suite."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in {timeout}s (teardown deadlock?): {e.stderr}")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun(str(Path(__file__).with_name("ddp_worker.py")), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_queues_and_weights_stay_identical_across_ranks(ranks):
    a, b = ranks
    assert torch.equal(a["queue"], b["queue"]) and a["ptr"] == b["ptr"]
    assert all(torch.equal(a["backbone"][k], b["backbone"][k]) for k in a["backbone"] if "running" not in k)


def test_losses_are_finite(ranks):
    for r in ranks:
        assert len(r["losses"]) == 4 and all(torch.isfinite(torch.tensor(r["losses"])))


def test_ranks_get_disjoint_halves_of_each_global_batch(ranks):
    a, b = ranks
    assert a["shards"].shape == (4, 16, 3, 16, 16)
    full = [images for images, _ in builtin_images("val", 16).batches(32, epoch=0, seed=3)][:4]
    for i in range(4):
        assert torch.equal(torch.cat([a["shards"][i], b["shards"][i]]), full[i])


def test_cross_rank_shuffle_bn_returns_each_rank_its_own_keys(ranks):
    assert all(r["keys_err"] < 1e-5 for r in ranks)


def test_cli_ddp_run_resumes_in_a_single_process(tmp_path):
    sets = [a for pair in [*TINY, "optim.warmup_epochs=0.5"] for a in ("--set", pair)]
    out = tmp_path / "run"
    proc = torchrun(
        "-m",
        "lwzoo",
        "pretrain",
        "mobilenetv3_large",
        "--data",
        "builtin:val",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--until-step",
        "5",
        *sets,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("paused at step 5/16") == 1  # only rank 0 speaks
    ckpt = load_checkpoint(out / CHECKPOINT)
    assert ckpt["step"] == 5 and ckpt["world_size"] == 2
    result = pretrain("mobilenetv3_large", resume=out, until_step=8, device="cpu")
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"]
    assert [r["step"] for r in rows] == [4, 5, 8]  # the single process continues the two processes' log
    assert result.step == 8 and result.loss == rows[-1]["loss"]
    # Logits are cosines / T in [-1/T, 1/T], so each -log softmax over the 1 + K keys lies in (0, 2/T + ln(1 + K)):
    # the mean loss is finite and inside that range (about 15.5 here; measured 5.57).
    t, k = ckpt["recipe"]["moco"]["temperature"], ckpt["recipe"]["moco"]["queue_size"]
    assert 0 < result.loss < 2 / t + math.log(1 + k)
    # Three steps after the resume, still in the warmup, the loss is beside the two processes' last one
    # (measured 5.565 at step 5, 5.574 at step 8): no jump where the world size changed.
    assert abs(result.loss - rows[1]["loss"]) < 0.5, rows


def test_batch_must_divide_over_processes(tmp_path):
    proc = torchrun(
        "-m",
        "lwzoo",
        "pretrain",
        "mobilenetv3_large",
        "--data",
        "builtin:val",
        "--batch-size",
        "63",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode != 0 and "must divide evenly over 2 processes" in proc.stderr


def test_every_collective_gets_tensors_on_the_context_device_and_the_stop_check_is_per_window(tmp_path):
    """NCCL refuses CPU tensors, so a tensor lwzoo hands a collective must live on the rank's device; and the
    stop check agrees across ranks once per log window (8 steps, log_every 4: 2 checks), not every step."""
    proc = torchrun(str(Path(__file__).with_name("ddp_collectives_worker.py")), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"collectives{rank}.json").read_text())
        assert seen["steps"] == 8 and seen["records"]
        for record in seen["records"]:
            assert set(record["devices"]) <= {seen["context_device"]}, record
            if record["op"] == "broadcast_object_list":
                assert "device" in record["kwargs"], record  # object lists travel as tensors on the context's device
        reductions = [r for r in seen["records"] if r["op"] == "all_reduce"]
        # per log window: the loss mean and the stop check (DDP's gradient all-reduce goes through its reducer)
        assert len(reductions) == 2 * 2, [r["op"] for r in seen["records"]]


def test_a_single_process_context_is_the_identity(monkeypatch):
    """Without torchrun every collective returns its input, so the same code runs in one process."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = from_environment(torch.device("cpu"))
    assert ctx == SINGLE == DistContext() and ctx.is_main and not ctx.enabled
    keys = torch.randn(4, 3)
    assert ctx.gather(keys) is keys and torch.equal(ctx.mean(keys.sum()), keys.sum())
    assert ctx.any(True) and not ctx.any(False) and ctx.broadcast({"step": 3}) == {"step": 3}
    ctx.barrier()
    teardown(ctx, release=lambda: pytest.fail("a single process has no process group to release"))
