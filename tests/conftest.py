"""Shared helpers: compose a config exactly as the CLI does, and train in-process (fast) or via the CLI."""
from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Two workers on two cores: torch running each test's run on both cores oversubscribed them. One thread per
# run (here and in every `trainrun` a test starts) took tests/test_cli.py and test_resume.py from 237 s to 197 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402  (torch, imported below, reads OMP_NUM_THREADS once)
from hydra import compose, initialize_config_module
from rich.console import Console

from trainrun.check import check
from trainrun.config import register
from trainrun.run.console import RunConsole

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
    from trainrun.run.trainer import train

    cfg = make_config([*(TINY if tiny else []), *overrides])
    return train(cfg, tmp_path, quiet_console())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def cli(*args, cwd, env=None, timeout=300):
    """`trainrun ...` in a new process, as a user runs it: forked from a process that has imported torch (see
    forkserver.py), or started cold where the test sets its own environment."""
    full_env = {**os.environ, "TRAINRUN_DATA": str(cwd / "data"), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    # several processes start cold: torchrun's launcher runs a C++ store whose threads, in a child forked from a
    # process that had imported torch, once ended it in "terminate called without an active exception" (CI)
    several = any(str(a).startswith("trainer.devices=") and str(a) != "trainer.devices=1" for a in args)
    if env is None and not several:
        return forked(["trainrun", *map(str, args)], cwd, full_env, timeout)
    return subprocess.run([sys.executable, "-m", "trainrun", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


class ForkServer:
    """This worker's tests/forkserver.py: one command at a time, over its stdin and stdout."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("forkserver.py"))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        self.pending = b""
        assert self.reply(None) == "ready"

    def reply(self, timeout):
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.process.stdout], [], [], timeout)
            chunk = os.read(self.process.stdout.fileno(), 4096) if ready else None
            if chunk is None:
                return None
            if not chunk:
                raise RuntimeError("tests/forkserver.py ended")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode() if line == b"ready" else json.loads(line)

    def run(self, argv, cwd, env, timeout) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as io_dir:
            out, err = Path(io_dir) / "stdout", Path(io_dir) / "stderr"
            request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
            pid = self.reply(None)["pid"]
            done = self.reply(timeout)
            if done is None:
                os.killpg(pid, signal.SIGKILL)
                self.reply(None)
                raise subprocess.TimeoutExpired(argv, timeout, out.read_bytes(), err.read_bytes())
            return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(done["status"]),
                                               out.read_text(errors="replace"), err.read_text(errors="replace"))


_server: ForkServer | None = None


def forked(argv, cwd, env, timeout) -> subprocess.CompletedProcess:
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = ForkServer()
    return _server.run(argv, cwd, env, timeout)


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
