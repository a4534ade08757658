#!/usr/bin/env python
"""Sweeps side by side, in one sitting: worker utilization of a search, and the cost of resuming a killed grid.

    python scripts/bench_sweep.py [--trials 24] [--grid 16]

1. A 24-trial Optuna search with median pruning on digits, 2 workers on the 2 cores: Hydra-style batches
   (hydra.sweeper.in_flight=false: n_jobs trials launched, the next batch when all have ended) against trials
   in flight (the default). Reports wall time and worker utilization = sum of trial durations / (workers x wall
   time), trial durations from Optuna's own start and completion times.
2. A 16-run grid sweep killed (SIGKILL to its process group) after about half its runs, then resumed by
   repeating its command: total wall time against the same sweep uninterrupted, and how many runs were redone.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def trainrun(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainrun", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - started


def utilization(sweep: Path, workers: int, wall: float) -> tuple[float, dict]:
    import optuna

    from trainrun.search import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="trainrun", storage=make_storage(f"journal:{sweep / 'optuna.journal'}")).trials
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    states: dict = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return busy / (workers * wall), states


def search(tmp: Path, trials: int) -> None:
    common = ["-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.n_jobs=2",
              "trainer.epochs=8", "logger.enabled=false"]
    print(f"{trials}-trial Optuna search (TPE, median pruning) on digits, 8 epochs, 2 workers:")
    for label, extra in (("batches (Hydra's launcher)", ["hydra.sweeper.in_flight=false"]), ("in flight", [])):
        sweep = tmp / label.split()[0]
        wall = trainrun([*common, *extra, f"hydra.sweep.dir={sweep}"], tmp)
        used, states = utilization(sweep, 2, wall)
        print(f"  {label:27s} wall {wall:6.1f} s, utilization {used:.2f}  ({states})")


def grid(tmp: Path, runs: int) -> None:
    lrs = ",".join(str(0.001 * (i + 1)) for i in range(runs // 2))
    common = ["-m", "optimizer=sgd,adam", f"optimizer.lr={lrs}", "trainer.epochs=6", "logger.enabled=false",
              "trainer.deterministic=true"]
    whole = trainrun([*common, f"hydra.sweep.dir={tmp / 'whole'}"], tmp)
    sweep = tmp / "killed"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trainrun", *common, f"hydra.sweep.dir={sweep}"], cwd=tmp,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(sweep.glob("*/metrics.json"))) < runs // 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = time.perf_counter() - started
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    resumed = trainrun([*common, f"hydra.sweep.dir={sweep}"], tmp)
    redone = sum(p.stat().st_mtime_ns != finished_before[p.parent.name] for p in sweep.glob("*/metrics.json")
                 if p.parent.name in finished_before)
    print(f"{runs}-run grid on digits, 6 epochs each, killed after {len(finished_before)} runs and resumed:")
    print(f"  uninterrupted {whole:.1f} s; killed at {first:.1f} s + resumed {resumed:.1f} s = {first + resumed:.1f} s "
          f"({(first + resumed) / whole:.2f}x); finished runs redone: {redone}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--grid", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        search(Path(tmp), args.trials)
        grid(Path(tmp), args.grid)


if __name__ == "__main__":
    main()
