"""Every environment variable lwzoo reads goes through lwzoo.env, and each does what its table says."""

import re
from pathlib import Path

from lwzoo import env

PACKAGE = Path(__file__).parents[1] / "lwzoo"


def test_no_module_but_env_reads_the_environment():
    readers = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "env.py" and re.search(r"os\.environ|os\.getenv", p.read_text())
    )
    assert readers == []


def test_runs_and_cache_follow_their_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("LWZOO_RUNS", str(tmp_path / "r"))
    monkeypatch.setenv("LWZOO_CACHE", str(tmp_path / "c"))
    assert env.runs_root() == tmp_path / "r" and env.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LWZOO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert env.cache_dir() == tmp_path / "x" / "lwzoo"


def test_torchrun_and_debug(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert env.torchrun() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env.torchrun() == (4, 3, 1)
    monkeypatch.setenv("LWZOO_DEBUG", "0")
    assert not env.debug()
    monkeypatch.setenv("LWZOO_DEBUG", "1")
    assert env.debug()


def test_hub_variables(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert env.hub_endpoint() == "http://127.0.0.1:9" and env.hub_offline() and env.hub_token_env() == "hf_x"
