#!/usr/bin/env python
"""Where a sweep's time goes: a trainrun command run in this process with wall-clock timers on its phases.

    python scripts/profile_sweep.py -m optimizer.lr=0.0003,0.001,0.003,0.01 trainer.seed=0,1,2,3 trainer.epochs=20

Prints, after the command's own output, each phase's total seconds, calls and milliseconds a call: a run's set-up
before it trains (`hold`: Hydra's job record, the checks, the build), the stack's steps and their parts (forward,
backward, optimizer), each run's bookkeeping after a step (`stepped`), its evaluation and checkpoints at an
epoch's end (`close_epoch`), its end (`leave`), a lone run's steps, and Optuna's ask, tell and pruning. Phases
nest (a step holds its forward); the process's start before the first job is the total minus the rest. Timers
cost ~1 us a call; cProfile's per-call cost would inflate the Python-heavy phases instead.
"""
from __future__ import annotations

import atexit
import collections
import functools
import inspect
import runpy
import sys
import time

SPENT: collections.Counter = collections.Counter()
CALLS: collections.Counter = collections.Counter()


def timed(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[label] += time.perf_counter() - started
            CALLS[label] += 1

    setattr(owner, name, staticmethod(wrapper) if isinstance(inspect.getattr_static(owner, name), staticmethod)
            else wrapper)


def instrument() -> None:
    import optuna
    import torch

    from hydra_plugins.trainrun_stack.stack_launcher import TrainrunStackLauncher
    from trainrun.run.trainer import Training
    from trainrun.stack.optimizers import StackedOptimizer
    from trainrun.stack.training import Stack

    phases = [(TrainrunStackLauncher, "hold", "run set-up (hold)"), (Stack, "advance", "stack: advance"),
              (Stack, "step", "  step"), (Stack, "batches", "    batches"), (Stack, "forward", "    forward"),
              (torch.Tensor, "backward", "    backward"), (StackedOptimizer, "step", "    optimizer"),
              (Training, "stepped", "  each run: stepped"), (Training, "close_epoch", "  each run: close_epoch"),
              (Stack, "leave", "  each run: leave"), (Training, "train_epoch", "alone: train_epoch"),
              (Training, "optimizer_step", "  optimizer_step"), (optuna.Study, "ask", "optuna: ask"),
              (optuna.Study, "tell", "optuna: tell"), (optuna.Trial, "report", "optuna: report")]
    for owner, name, label in phases:
        timed(owner, name, label)
    order = [label for _, _, label in phases]
    atexit.register(lambda: show(order, time.perf_counter()))


def show(order: list[str], ended: float) -> None:
    if not CALLS:  # refused before any run started: its error line is the whole story
        return
    print(f"\n{'phase':28s} {'s':>8s} {'calls':>7s} {'ms/call':>8s}   (whole command {ended - STARTED:.2f} s)",
          file=sys.stderr)
    for label in order:
        if CALLS[label]:
            print(f"{label:28s} {SPENT[label]:8.3f} {CALLS[label]:7d} {1e3 * SPENT[label] / CALLS[label]:8.3f}",
                  file=sys.stderr)


STARTED = time.perf_counter()

if __name__ == "__main__":
    instrument()
    sys.argv = ["trainrun", *sys.argv[1:]]
    runpy.run_module("trainrun", run_name="__main__")
