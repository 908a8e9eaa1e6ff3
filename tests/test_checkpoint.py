"""Pretraining checkpoints (lwzoo/checkpoint.py): atomic writes, RNG states, and clear errors on reading."""

import random

import numpy as np
import pytest
import torch

from lwzoo import checkpoint
from lwzoo.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lwzoo.errors import LwzooError
from lwzoo.run_folder import CHECKPOINT
from lwzoo.version import __version__


class Opaque:
    """A Python object that only unpickling could rebuild."""


def required_fields(step: int = 0) -> dict:
    return {**dict.fromkeys(checkpoint.REQUIRED_KEYS, 0), "step": step}


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / CHECKPOINT
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(LwzooError, match="corrupt"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(LwzooError, match="not an lwzoo pretraining checkpoint"):
        load_checkpoint(other)
    with pytest.raises(LwzooError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_save_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    fields = {"format": checkpoint.FORMAT, **dict.fromkeys(checkpoint.REQUIRED_KEYS, 0)}
    good = checkpoint.atomic_save({**fields, "step": 1}, tmp_path / CHECKPOINT)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_save({**fields, "step": 2}, good)
    monkeypatch.undo()
    assert load_checkpoint(good)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # no temp file left behind


def test_a_saved_checkpoint_carries_its_format_version_and_rng_and_loads_from_its_folder(tmp_path):
    path = save_checkpoint({**required_fields(step=7), "model": {"w": torch.arange(3.0)}}, tmp_path / CHECKPOINT)
    ckpt = load_checkpoint(tmp_path)  # a run folder reads its checkpoint-last.pt
    assert path == tmp_path / CHECKPOINT and ckpt["step"] == 7 and torch.equal(ckpt["model"]["w"], torch.arange(3.0))
    assert ckpt["format"] == checkpoint.FORMAT and ckpt["lwzoo_version"] == __version__
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python"}


def test_restoring_the_rng_state_repeats_every_generators_draws(tmp_path):
    """What a resumed run relies on: torch, numpy and Python's random draw the same numbers after a restore,
    also through a save and load (weights_only, so the states must be plain tensors and builtins)."""
    save_checkpoint(required_fields(), tmp_path / CHECKPOINT)
    state = load_checkpoint(tmp_path / CHECKPOINT)["rng"]

    def draws():
        return torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)]

    first = draws()
    set_rng_state(state)
    assert draws() == first
    set_rng_state(rng_state())  # the state now, not the saved one: the next draws are new
    assert draws() != first


def test_a_folder_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(LwzooError, match=f"holds no {CHECKPOINT}: no run has saved a checkpoint there yet"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_missing_a_required_key_is_a_clear_error(tmp_path):
    fields = {"format": checkpoint.FORMAT, **dict.fromkeys(checkpoint.REQUIRED_KEYS, 0)}
    del fields["optimizer"]
    torch.save(fields, tmp_path / "edited.pt")
    with pytest.raises(LwzooError, match="is missing 'optimizer': it is damaged or was edited"):
        load_checkpoint(tmp_path / "edited.pt")


def test_a_checkpoint_holding_python_objects_is_refused_without_unpickling_them(tmp_path):
    torch.save({"format": checkpoint.FORMAT, "payload": Opaque()}, tmp_path / "pickled.pt")
    with pytest.raises(LwzooError, match="holds Python objects that lwzoo does not load") as raised:
        load_checkpoint(tmp_path / "pickled.pt")
    assert "weights_only" not in str(raised.value)  # torch's advice to unpickle is not passed on
