"""A search's trials in the slots of stacks: `hparams_search=optuna` (or random) with hydra/launcher=stack.

K slots in this process. Each trial is a run prepared as its job (its directory, its .hydra record, the checks)
and held (run/trainer.HELD), then admitted into the stack of its shape: trials whose models differ (the default
space's model.hidden) train in one stack per shape, every stack one step per round. When a trial ends (pruned,
stopped early, done or diverged) its slot takes the next asked trial at once: no process starts, no batch waits
for its slowest; the new trial joins at its own step 0, with its own generators, as it would start alone. A
trial whose config or model cannot stack trains alone in its turn, and the sweep says why once.
"""
from __future__ import annotations

from typing import Callable

from ..run.trainer import Held
from .launch import one_by_one, runs_that_fit
from .model import NotStackable
from .training import Stack

ALONE = None  # the key of a trial that cannot stack


class Slots:
    def __init__(self, capacity: int, memory_gb: float | None = None):
        self.capacity, self.memory_gb, self.fitted = capacity, memory_gb, False
        self.stacks: dict[str, Stack] = {}
        self.alone: dict[str, str] = {}  # shapes whose model cannot stack, and why
        self.reported: set[int] = set()
        self.interrupted = self.exhausted = False

    def active(self) -> int:
        return sum(len(stack.active) for stack in self.stacks.values())

    def run(self, fill: Callable[[int], list[tuple[str | None, Held]]],
            ended: Callable[[Held, dict | None], None]) -> None:
        """`fill(n)`: up to n newly held trials with their stack keys (none when the search has no more);
        `ended(held, metrics)`: a trial's run has ended (its metrics.json, or None)."""
        while not self.interrupted:
            entries = self.asked(fill)
            self.place(entries, ended)  # a trial that cannot stack trains (alone) here
            if not self.active():
                if self.exhausted:
                    break
                continue
            signals = next(s for s in self.stacks.values() if s.active).active[0].run.rules
            with signals.catching_signals():  # one handler: Ctrl-C or SIGTERM stops every trial at the same step
                while self.active():
                    self.step(signals.signal, fill, ended)
        if self.interrupted:
            raise KeyboardInterrupt

    def step(self, signal, fill, ended) -> None:
        """One step of every stack; the trials that ended are reported and their slots filled."""
        for stack in self.stacks.values():
            if stack.active:
                stack.advance(signal)
        self.report(ended)
        if self.active() < self.capacity and not self.interrupted and not self.exhausted:
            self.place(self.asked(fill), ended)

    def asked(self, fill) -> list:
        """Trials for the free slots; once the search gives fewer than asked, it has no more (it is not asked
        again every step)."""
        free = self.capacity - self.active() if self.fitted else 1  # the first measures what a trial takes
        entries = fill(free)
        self.exhausted = len(entries) < free
        return entries

    def place(self, entries: list[tuple[str | None, Held]], ended) -> None:
        for key, h in entries:
            if not self.fitted:  # the first trial measured: as many slots as fit the memory budget
                self.fitted, wanted = True, self.capacity
                self.capacity = runs_that_fit(h, self.capacity, self.memory_gb)
                if self.capacity < wanted:
                    print(f"slots: {self.capacity} of {wanted} fit the memory budget", flush=True)
            if key is ALONE or key in self.alone:
                self.alone_run(h, ended)
            elif key in self.stacks:
                self.stacks[key].admit([h])
            else:
                try:
                    stack = self.stacks[key] = Stack([h], per_run=True)
                except NotStackable as why:
                    print(f"alone: trials of this shape train one after another: {why}", flush=True)
                    self.alone[key] = str(why)
                    self.alone_run(h, ended)
                    continue
                stack.start(stack.active)
            self.report(ended)

    def alone_run(self, h: Held, ended) -> None:
        """A trial that cannot stack, trained to its end now (Ctrl-C stops the search there too)."""
        metrics = one_by_one([h])[0]
        self.interrupted |= bool(metrics and metrics.get("stop_reason") == "interrupted")
        ended(h, metrics)

    def report(self, ended) -> None:
        """Each trial that left a stack, once; its stack forgets it (its tensors are its own by now)."""
        for stack in self.stacks.values():
            for m in stack.members:
                if m not in stack.active and id(m) not in self.reported:
                    self.reported.add(id(m))
                    self.interrupted |= bool(m.metrics and m.metrics.get("stop_reason") == "interrupted")
                    ended(m.held, m.metrics)
            stack.members = [m for m in stack.members if m in stack.active]
