"""Shared helpers: compose a config exactly as the CLI does, and train in-process (fast) or via the CLI."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

# Two workers on two cores: torch running each test's run on both cores oversubscribed them. One thread per
# run (here and in every `trainrun` a test starts) took tests/test_cli.py and test_resume.py from 237 s to 197 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402  (torch, imported below, reads OMP_NUM_THREADS once)
from hydra import compose, initialize_config_module
from rich.console import Console

from trainrun.check import check
from trainrun.config import register
from trainrun.console import RunConsole

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
CONF = ROOT / "conf"
register()

# Tiny and quick: a few hundred digits, two epochs, no TensorBoard unless a test asks for it.
TINY = ["data.subset=300", "trainer.epochs=2", "logger.enabled=false"]


def make_config(overrides=()):
    with initialize_config_module("trainrun.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    check(cfg)
    return cfg


def quiet_console() -> RunConsole:
    return RunConsole(Console(file=io.StringIO(), width=120))


def train_run(tmp_path, overrides=(), tiny=True):
    """Train in this process; returns metrics (also in tmp_path/metrics.json)."""
    from trainrun.trainer import train

    cfg = make_config([*(TINY if tiny else []), *overrides])
    return train(cfg, tmp_path, quiet_console())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def cli(*args, cwd, env=None, timeout=300):
    """`trainrun ...` through a real subprocess, as a user runs it."""
    full_env = {**os.environ, "TRAINRUN_DATA": str(cwd / "data"), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "trainrun", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    """Generated datasets (mnist1d) are cached once per session, never in the home directory."""
    monkeypatch.setenv("TRAINRUN_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def pytest_collection_modifyitems(items):
    """The slow tier's long tests first: collected last, they left one of the two workers running alone for
    minutes at the end of ./scripts/test.sh; started first, the short ones fill in around them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
