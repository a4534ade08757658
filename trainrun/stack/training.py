"""Training a stack: its runs in lockstep, one stacked forward, backward and optimizer step for all of them.

Everything else is each run's own, done by its own `Training` (run/trainer.py) as when it trains alone: its
batches (its own permutation of its own split), augmentation, the counters, schedule, stop rules, TensorBoard,
evaluation, early stopping, checkpoints and its end. Every random draw of a run comes from its own generators,
started where the run alone would start training: augmentation runs with the process's generator set to the
run's, dropout draws from the run's generator directly, and its checkpoints save the run's own states, so a
stacked run's last.pt resumes it alone. A run that stops (early stopping, divergence, pruning) or ends leaves
the stack at once: its tensors become its own, it is tested and its files are written, and the rest go on
without its slice.
"""
from __future__ import annotations

import contextlib
import copy
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..options.loss import metric
from ..registry import OPTIMIZERS, lazy
from ..run.checkpoint import set_rng_states
from ..run.console import StackDisplay
from ..run.trainer import Held, Training, completed
from .model import StackedModel
from .optimizers import StackedOptimizer


class RunRandom:
    """A run's random generators while it trains in a stack: torch's as a Generator, numpy's and Python's
    states as they stood when the run was held (nothing in a step draws from those two)."""

    def __init__(self, states: dict):
        self.states = states
        self.torch = torch.Generator()
        self.torch.set_state(states["torch"])

    def current(self) -> dict:
        """In checkpoint.rng_states' form, for the run's checkpoints."""
        return {**self.states, "torch": self.torch.get_state()}

    @contextlib.contextmanager
    def drawing(self):
        """Code that draws from the process's torch generator (augmentation) draws from the run's."""
        torch.set_rng_state(self.torch.get_state())
        try:
            yield
        finally:
            self.torch.set_state(torch.get_rng_state())

    @contextlib.contextmanager
    def everywhere(self):
        """Every process generator set to the run's (its test: MC dropout draws), and put back after."""
        before = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        set_rng_states(self.current())
        try:
            yield
        finally:
            self.torch.set_state(torch.get_rng_state())
            torch.set_rng_state(before[0])
            np.random.set_state(before[1])
            random.setstate(before[2])


@dataclass
class Member:
    """One run of the stack."""

    held: Held
    random: RunRandom
    metrics: dict | None = None  # metrics.json once it has left the stack

    @property
    def run(self) -> Training:
        return self.held.run


class Stack:
    """`between(stack)`, where given, is called before each epoch (population-based training exploits there)."""

    def __init__(self, held: list[Held], between: Callable[["Stack"], None] | None = None):
        self.members = [Member(h, RunRandom(h.rng)) for h in held]
        runs = [m.run for m in self.members]
        self.model = StackedModel([r.parts.model for r in runs], [m.random.torch for m in self.members])
        for m in self.members:  # once stacked (a model that cannot be leaves its runs to train alone, as they were)
            m.run.checkpointer.rng_states = m.random.current
            # runs that exchange weights resume only from one step they all reached: a kill between their writes
            # leaves some a step ahead, each with its previous checkpoint (stack/pbt.py: aligned)
            m.run.checkpointer.keep_previous = between is not None
        for sp in self.model.params:  # its param group in each run's optimizer (model.weights' lower lr)
            sp.group = next(g for g, group in enumerate(runs[0].parts.optimizer.param_groups)
                            if any(p is sp.members[0] for p in group["params"]))
        for r in runs:  # its schedule steps it, through the stack: torch's warning that it never stepped is wrong
            r.parts.optimizer._opt_called = True
        step = lazy(OPTIMIZERS.trait(runs[0].parts.cfg.optimizer, "stacked_step"))
        self.optimizer = StackedOptimizer(step, self.model.params, [r.parts.optimizer for r in runs],
                                          per_run=runs[0].parts.device.type == "cpu")
        self.active = list(self.members)  # in the order of the stacked slices
        self.knobs: dict[str, torch.Tensor] = {}  # regularization knobs over the active runs (Stack.knob)
        self.between = between

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train every run to its end; returns each run's metrics (metrics.json), in the order held."""
        for m in list(self.active):
            if m.run.stop:  # restored from a run that had stopped, killed before it wrote metrics.json
                self.leave(m)
            else:
                m.run.begin()
        if self.active:
            signals = self.active[0].run.rules  # one handler: Ctrl-C or SIGTERM stops every run at the same step
            display = StackDisplay([m.run for m in self.members])
            try:
                with signals.catching_signals():
                    while self.active:
                        if self.between:
                            self.between(self)
                        self.epoch(signals)
                        display.update()
            finally:
                display.stop()
        return [m.metrics for m in self.members]

    def epoch(self, signals) -> None:
        """One epoch of every active run (they stand at the same step: they started and went on together)."""
        lead = self.active[0].run
        epoch = lead.progress.epoch
        sums = {id(m): m.run.start_epoch() for m in self.active}
        batches = {id(m): m.run.epoch_batches(epoch) for m in self.active}
        for _ in range(lead.parts.steps_per_epoch - lead.progress.steps_done):
            stepping = list(self.active)
            losses, scores, prepared = self.step(stepping, {id(m): next(batches[id(m)]) for m in stepping})
            for i, m in enumerate(stepping):
                m.run.rules.signal = signals.signal
                stop, _ = m.run.stepped(losses[i], scores[i], prepared[i], sums[id(m)])
                if stop:  # divergence or a signal: as Training.fit, the epoch ends here, unevaluated
                    self.leave(m)
                elif m.run.out_of_steps():  # trainer.max_steps inside the epoch: evaluated on what it trained
                    self.leave(m, m.run.close_epoch(epoch, sums[id(m)]))
            if not self.active:
                return
        for m in list(self.active):
            stop = m.run.close_epoch(epoch, sums[id(m)])
            if stop or m.run.out_of_steps() or epoch >= m.run.parts.cfg.trainer.epochs:
                self.leave(m, stop)

    def step(self, stepping: list[Member], micro: dict) -> tuple[torch.Tensor, torch.Tensor, list]:
        """One optimizer step of every stepping run on its own batch: (losses [R], metric sums [R], batches)."""
        prepared = []
        for m in stepping:
            with m.random.drawing() if m.run.parts.augment is not None else contextlib.nullcontext():
                prepared.append([m.run.prepare(idx) for idx in micro[id(m)]])
        first = stepping[0].run.parts
        for sp in self.model.params:
            sp.data.grad.zero_()
        with first.autocast():
            out = self.model([batch[0][0] for batch in prepared]).float()
        losses = torch.stack([m.run.parts.criterion(out[i], prepared[i][0][1]) for i, m in enumerate(stepping)])
        losses = losses + self.penalties()
        losses.sum().backward()
        for sp in self.model.params:
            if sp.data.grad is not sp.aliased_grad:  # autograd replaced the gradient instead of adding to it
                sp.alias()
        self.clip()
        self.optimizer.step()
        self.constrain()
        detached = out.detach()
        scores = torch.stack([metric(detached[i], batch[0][1], first.data.task) for i, batch in enumerate(prepared)])
        return losses.detach(), scores, prepared

    # -- regularization, per run (options/regularization.py's, over the stacked tensors) --------------------------
    def knob(self, name: str, missing: float) -> torch.Tensor:
        """A regularization knob of every active run, as a tensor over the stack (made again when a run leaves)."""
        if name not in self.knobs:
            values = [getattr(m.run.parts.cfg.regularization, name) for m in self.active]
            self.knobs[name] = torch.tensor([missing if v is None else float(v) for v in values])
        return self.knobs[name]

    def penalties(self) -> torch.Tensor | float:
        """0.5 * weight_decay * sum ||W||^2 + l1 * sum |W| of each run's weight matrices and kernels."""
        l2, l1 = self.knob("weight_decay", 0.0), self.knob("l1", 0.0)
        weights = [sp.data for sp in self.model.params if sp.penalized]
        total = 0.0
        if bool(l2.any()):
            total = total + 0.5 * l2 * sum(w.pow(2).flatten(1).sum(1) for w in weights)
        if bool(l1.any()):
            total = total + l1 * sum(w.abs().flatten(1).sum(1) for w in weights)
        return total

    @torch.no_grad()
    def clip(self) -> None:
        grads = [sp.data.grad for sp in self.model.params]
        value = self.knob("grad_clip_value", float("inf"))
        if bool(torch.isfinite(value).any()):
            for g in grads:
                shape = (-1, *[1] * (g.dim() - 1))
                torch.clamp(g, -value.view(shape), value.view(shape), out=g)
        norm = self.knob("grad_clip_norm", float("inf"))
        if bool(torch.isfinite(norm).any()):
            total = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
            scale = (norm / (total + 1e-6)).clamp(max=1.0)
            for g in grads:
                g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))

    @torch.no_grad()
    def constrain(self) -> None:
        """Max-norm: each neuron's incoming weights rescaled to norm <= max_norm (torch.renorm's rule)."""
        bound = self.knob("max_norm", float("inf"))
        if not bool(torch.isfinite(bound).any()):
            return
        for sp in self.model.params:
            if sp.penalized:
                w = sp.data
                norms = w.flatten(2).norm(dim=2)  # [R, out]
                limit = bound.view(-1, 1)
                scale = torch.where(norms > limit, limit / (norms + 1e-7), torch.ones_like(norms))
                w.mul_(scale.view(*scale.shape, *[1] * (w.dim() - 2)))

    def copy(self, source: Member, target: Member) -> None:
        """`target` takes `source`'s weights, optimizer state and hyperparameters, schedule and weight average;
        its counters, generators, early stopping and files stay its own."""
        i, j = self.active.index(source), self.active.index(target)
        self.model.copy(i, j)
        self.optimizer.copy(i, j)
        theirs, own = source.run.parts, target.run.parts
        for a, b in zip(theirs.optimizer.param_groups, own.optimizer.param_groups):
            b.update({k: v for k, v in a.items() if k != "params"})
        for part in ("scheduler", "average"):
            if getattr(own, part) is not None:
                getattr(own, part).load_state_dict(copy.deepcopy(getattr(theirs, part).state_dict()))

    # -- leaving ---------------------------------------------------------------------------------------------
    def leave(self, m: Member, stop=None) -> None:
        """The run ends (`stop`: how its last epoch ended): its slice becomes its own tensors, and its last
        checkpoint, test and files are written."""
        if m in self.active:
            m.run.completed = m.run.stop is None and stop is None
            rows = [i for i, other in enumerate(self.active) if other is not m]
            self.optimizer.keep(rows)
            self.model.release(rows)
            self.optimizer.alias()
            self.active.remove(m)
            self.knobs.clear()
            m.run.end()
        with m.random.everywhere():
            m.metrics = completed(m.run, m.held.overrides)
