"""A sweep is resumed by repeating its command: finished runs untouched, interrupted ones resumed, the rest run."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli

pytestmark = pytest.mark.timeout(600)

# deterministic, checkpointed every step, slow enough per run to be killed inside one
GRID = ["-m", "optimizer=sgd,adam", "optimizer.lr=0.01,0.05", "trainer.deterministic=true", "trainer.epochs=4",
        "data.subset=600", "trainer.checkpoint.every_n_steps=1", "logger.enabled=false", "model.hidden=[512,512]"]


def fingerprint(run_dir: Path) -> dict:
    """Every file of a run: its content hash and modification time."""
    return {str(p.relative_to(run_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def final_metrics(sweep: Path) -> dict:
    out = {}
    for metrics in sweep.glob("*/metrics.json"):
        values = json.loads(metrics.read_text())
        values.pop("wall_time_s")
        out[metrics.parent.name] = values
    return out


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TRAINRUN_DATA": str(cwd / "data")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "trainrun", *args], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_after_two_finished(proc: subprocess.Popen, sweep: Path) -> None:
    """SIGKILL the whole sweep (every worker process too) once two runs finished and a third checkpointed."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        finished = list(sweep.glob("*/metrics.json"))
        checkpointed = [p for p in sweep.glob("*/last.pt") if not (p.parent / "metrics.json").exists()]
        if len(finished) >= 2 and checkpointed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.02)
    raise TimeoutError


# the stack launcher (the default: the grid is two stacks, sgd's and adam's, each checkpointing every step) and
# the basic one: joblib's and submitit's resume is the same sweeper code under another pool (each took 70-100 s of
# CI's 30 minutes; their launchers' sweeps are run in test_sweep.py and test_search.py)
@pytest.mark.slow  # everyday tier under 10 min: 68 s of a worker here
@pytest.mark.parametrize("launcher", ["stack", "basic"])
def test_a_killed_grid_sweep_is_finished_by_repeating_its_command(tmp_path, launcher):
    launch = [] if launcher == "stack" else [f"hydra/launcher={launcher}"]
    # the reference under the same launcher: its thread count decides the last bits of every sum
    reference = cli(*GRID, *launch, f"hydra.sweep.dir={tmp_path / 'reference'}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]

    sweep = tmp_path / "sweep"
    proc = start([*GRID, *launch, f"hydra.sweep.dir={sweep}"], tmp_path)
    kill_after_two_finished(proc, sweep)
    finished = {p.parent.name: fingerprint(p.parent) for p in sweep.glob("*/metrics.json")}
    # started and killed: with a checkpoint, or (a parallel launcher's other run) before its first one
    interrupted = [p.parents[1].name for p in sweep.glob("*/.hydra/overrides.yaml") if p.parents[1].name not in finished]
    # a stack's other run may be killed between its start and its first checkpoint: it starts over
    checkpointed = [name for name in interrupted if (sweep / name / "last.pt").exists()]
    assert checkpointed
    resumed = cli(*GRID, *launch, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    counts = f"{len(finished)} finished, {len(interrupted)} interrupted (resuming), {4 - len(finished) - len(interrupted)} to run"
    assert counts in resumed.stdout
    for name, files in finished.items():  # never launched again: every file byte-identical, mtimes too
        assert fingerprint(sweep / name) == files, name
    for name in interrupted:
        assert (sweep / name / ".hydra" / "resumed").is_dir()
    unwrapped = "".join(resumed.stdout.split())  # the console wraps long lines
    for name in checkpointed:  # resumed from its checkpoint, not started over
        assert "".join(f"resuming {sweep / name} at epoch".split()) in unwrapped
    assert final_metrics(sweep) == final_metrics(tmp_path / "reference")  # as if never interrupted
    with open(sweep / "summary.csv") as f:
        assert len(f.readlines()) == 1 + 4  # the whole sweep, each run once


def tiny_sweep(tmp_path, *extra):
    return cli("-m", "optimizer=sgd,adam", "trainer.epochs=1", "data.subset=200", "logger.enabled=false", *extra,
               f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)


@pytest.mark.slow  # everyday tier under 10 min: 17 s of a worker here
def test_a_finished_sweep_repeated_runs_nothing_and_a_failed_run_stays_failed(tmp_path):
    first = tiny_sweep(tmp_path, "model.freeze=[fc1],[nope]")
    assert first.returncode == 1  # two runs failed building: no layer 'nope' to freeze
    before = {p.name: fingerprint(p) for p in (tmp_path / "sweep").iterdir() if p.is_dir()}
    again = tiny_sweep(tmp_path, "model.freeze=[fc1],[nope]")
    assert "4 finished, 0 interrupted (resuming), 0 to run" in again.stdout
    assert again.returncode == 1 and "error: 2 of 4 runs failed" in again.stderr  # still reported
    assert {p.name: fingerprint(p) for p in (tmp_path / "sweep").iterdir() if p.is_dir()} == before


@pytest.mark.slow  # everyday tier under 10 min: 15 s of a worker here
def test_a_sweep_refused_before_it_starts_leaves_its_directory_free_for_the_corrected_command(tmp_path):
    base = ["-m", "trainer.epochs=1", "data.subset=200", "logger.enabled=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    refused = cli(*base, "optimizer.lrr=0.1,0.2", cwd=tmp_path)
    assert refused.returncode == 2 and "unknown key 'optimizer.lrr' (did you mean lr?)" in refused.stderr
    assert not (tmp_path / "sweep").exists()
    corrected = cli(*base, "optimizer.lr=0.1,0.2", cwd=tmp_path)
    assert corrected.returncode == 0, corrected.stderr
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2


@pytest.mark.parametrize("change,message", [
    (["optimizer=sgd,rmsprop"], "holds a different sweep: optimizer=sgd,rmsprop here, optimizer=sgd,adam there"),
    pytest.param(["optimizer=sgd,adam", "optimizer.lr=0.1"], "holds a different sweep: optimizer.lr=0.1 here, not set there",
                 marks=pytest.mark.slow),
])
@pytest.mark.slow  # everyday tier under 10 min: 15 s of a worker here
def test_a_different_sweep_into_a_sweeps_directory_is_refused_and_changes_nothing(tmp_path, change, message):
    base = ["-m", "trainer.epochs=1", "data.subset=200", "logger.enabled=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert cli(*base, "optimizer=sgd,adam", cwd=tmp_path).returncode == 0
    before = fingerprint(tmp_path / "sweep")
    refused = cli(*base, *change, cwd=tmp_path)
    assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) <= 2
    assert fingerprint(tmp_path / "sweep") == before


@pytest.mark.parametrize("prepare,message", [
    (lambda d: (d / "notes.txt").write_text("mine"), "holds no trainrun sweep (no multirun.yaml)"),
    (lambda d: (d / "multirun.yaml").write_text("a: [unclosed"), "multirun.yaml is unreadable"),
    (lambda d: (d / "multirun.yaml").write_text("hydra:\n  job:\n    name: someone_else\n"), "is not a trainrun sweep's record"),
])
def test_a_sweep_directory_holding_something_else_is_refused(tmp_path, prepare, message):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    prepare(sweep)
    before = fingerprint(sweep)
    refused = tiny_sweep(tmp_path)
    assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr
    assert fingerprint(sweep) == before


def test_an_unwritable_sweep_directory_is_one_line(tmp_path):
    refused = cli("-m", "optimizer=sgd,adam", "hydra.sweep.dir=/proc/trainrun-sweep", cwd=tmp_path)
    assert refused.returncode == 2 and "cannot write the sweep directory /proc/trainrun-sweep" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_run_names_stay_valid_in_a_path_and_an_override():
    from trainrun.sweeps.sweep import run_names

    names = run_names([["model.hidden=[64,64]", "optimizer.lr=0.01", "+model.params.width=8"]],
                      ["model.hidden", "optimizer.lr", "+model.params.width"])
    assert names == ["0_hidden-64-64_lr-0.01_width-8"]
    clash = run_names([["optimizer.lr=0.1", "scheduler.lr=0.2"]], ["optimizer.lr", "scheduler.lr"])
    assert clash == ["0_optimizer.lr-0.1_scheduler.lr-0.2"]  # the short names would collide: the full keys
