#!/usr/bin/env python
"""Kill a real trainrun process with SIGKILL at random points, resume it, and compare with a run never killed.

    python scripts/chaos.py --cycles 10            # 10 cycles of kill-and-resume on the same run config
    python scripts/chaos.py --cycles 5 --kills 3   # each cycle killed 3 times before it may finish
    python scripts/chaos.py --early                # also: killed in its first second, before any checkpoint

Each cycle trains the same deterministic run in a fresh directory, sends SIGKILL at random moments
(checkpoints are written every step, so many kills land inside a checkpoint write), resumes with
trainer.resume=<dir> until the run finishes, then checks that the final weights are bit-identical to
the uninterrupted run's and that metrics.json agrees. Prints how many cycles ended identical.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RUN = ["trainer.deterministic=true", "trainer.epochs=5", "trainer.checkpoint.every_n_steps=1", "model=cnn",
       "regularization=dropout", "augmentation=[noise,flip]", "trainer.early_stopping.patience=100"]


def trainrun(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainrun", *RUN, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


DEADLINE_S = 300  # no wait here is open-ended: a hung run fails the check instead of hanging it


def wait_for(proc: subprocess.Popen, ready) -> bool:
    """Poll `ready()` until it is true (True) or the process exits (False); a TimeoutError past the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while proc.poll() is None:
        if ready():
            return True
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"trainrun did not get there within {DEADLINE_S} s")
        time.sleep(0.01)
    return False


def wait_for_new_checkpoint(proc: subprocess.Popen, last_pt: Path, seen: int) -> int:
    """Block until the process writes a checkpoint newer than `seen` (or exits); returns its mtime."""
    if wait_for(proc, lambda: last_pt.exists() and last_pt.stat().st_mtime_ns != seen):
        return last_pt.stat().st_mtime_ns
    return seen


def killed_before_first_checkpoint(workdir: Path) -> tuple[bool, bool, bool]:
    """SIGKILL once Hydra has made the run directory and before any last.pt; resume; compare.
    Returns (killed in time, weights equal, metrics equal)."""
    run_dir = workdir / "victim"
    proc = trainrun(f"hydra.run.dir={run_dir}")
    wait_for(proc, lambda: (run_dir / ".hydra" / "overrides.yaml").exists())  # Hydra's record, written last
    in_time = not (run_dir / "last.pt").exists() and proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = trainrun(f"trainer.resume={run_dir}")
    if resumed.wait(timeout=DEADLINE_S) != 0:
        raise SystemExit(f"the resumed run failed: {resumed.stderr.read()[-500:]}")
    return in_time, *compare(workdir.parent / "reference", run_dir)


def cycle(workdir: Path, kills: int, rng: random.Random) -> tuple[int, bool, bool]:
    """One run killed up to `kills` times and resumed to the end: (kills sent, weights equal, metrics equal)."""
    run_dir, sent, seen = workdir / "victim", 0, 0
    proc = trainrun(f"hydra.run.dir={run_dir}")
    while True:
        seen = wait_for_new_checkpoint(proc, run_dir / "last.pt", seen)
        if sent < kills:
            time.sleep(rng.uniform(0, 0.5))
        if proc.poll() is not None or sent == kills:
            if proc.wait() != 0:
                raise SystemExit(f"a resumed run failed: {proc.stderr.read()[-500:]}")
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sent += 1
        proc = trainrun(f"trainer.resume={run_dir}")
    return sent, *compare(workdir.parent / "reference", run_dir)


def compare(reference: Path, run_dir: Path) -> tuple[bool, bool]:
    ours = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    theirs = torch.load(reference / "last.pt", weights_only=True)["model"]
    same_weights = ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference)]
    for m in metrics:
        m.pop("wall_time_s")
    return same_weights, metrics[0] == metrics[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs per cycle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--early", action="store_true", help="also a cycle killed before its first checkpoint")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        reference = trainrun(f"hydra.run.dir={base / 'reference'}")
        if reference.wait() != 0:
            raise SystemExit(f"the reference run failed: {reference.stderr.read()[-500:]}")
        identical = 0
        for i in range(1, args.cycles + 1):
            (base / f"cycle{i}").mkdir()
            sent, weights, metrics = cycle(base / f"cycle{i}", args.kills, rng)
            identical += weights and metrics
            print(f"cycle {i}: {sent} SIGKILLs, weights {'bit-identical' if weights else 'DIFFER'}, "
                  f"metrics {'identical' if metrics else 'DIFFER'}", flush=True)
        if args.early:
            (base / "early").mkdir()
            in_time, weights, metrics = killed_before_first_checkpoint(base / "early")
            identical += weights and metrics
            print(f"killed before its first checkpoint ({'in time' if in_time else 'TOO LATE'}): weights "
                  f"{'bit-identical' if weights else 'DIFFER'}, metrics {'identical' if metrics else 'DIFFER'}")
    cycles = args.cycles + args.early
    print(f"{identical}/{cycles} cycles ended bit-identical to the uninterrupted run")
    sys.exit(0 if identical == cycles else 1)


if __name__ == "__main__":
    main()
