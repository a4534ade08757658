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
from typing import Callable, Iterator

import numpy as np
import torch
from torch.func import vmap

from ..options.loss import metric
from ..registry import LOSSES, OPTIMIZERS, lazy
from ..run.checkpoint import set_rng_states
from ..run.console import StackDisplay
from ..run.trainer import EpochSums, Held, Training, completed
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
    sums: EpochSums | None = None  # its open epoch's sums (None between two epochs)
    batches: Iterator | None = None  # its open epoch's batches still to train

    @property
    def run(self) -> Training:
        return self.held.run


class Stack:
    """`between(stack)`, where given, is called before each epoch (population-based training exploits there);
    `per_run`: each run's own optimizer steps its slice on any device (runs join later: stack/slots.py)."""

    def __init__(self, held: list[Held], between: Callable[["Stack"], None] | None = None, per_run: bool = False):
        self.members = [Member(h, RunRandom(h.rng)) for h in held]
        runs = [m.run for m in self.members]
        self.model = StackedModel([r.parts.model for r in runs], [m.random.torch for m in self.members])
        self.between = between
        for m in self.members:  # once stacked (a model that cannot be leaves its runs to train alone, as they were)
            self.prepare(m)
        for sp in self.model.params:  # its param group in each run's optimizer (model.weights' lower lr)
            sp.group = next(g for g, group in enumerate(runs[0].parts.optimizer.param_groups)
                            if any(p is sp.members[0] for p in group["params"]))
        step = lazy(OPTIMIZERS.trait(runs[0].parts.cfg.optimizer, "stacked_step"))
        # each run's own torch.optim step on the CPU, and wherever runs join later (a fresh run's state is made
        # by its own first step)
        self.optimizer = StackedOptimizer(step, self.model.params, [r.parts.optimizer for r in runs],
                                          per_run=per_run or runs[0].parts.device.type == "cpu")
        self.active = list(self.members)  # in the order of the stacked slices
        self.knobs: dict[str, torch.Tensor] = {}  # regularization knobs over the active runs (Stack.knob)
        self.one_loss: bool | None = None  # whether the active runs' losses are one function (Stack.same_loss)

    def prepare(self, m: Member) -> None:
        m.run.checkpointer.rng_states = m.random.current
        # runs that exchange weights resume only from one step they all reached: a kill between their writes
        # leaves some a step ahead, each with its previous checkpoint (stack/pbt.py: aligned)
        m.run.checkpointer.keep_previous = self.between is not None
        m.run.parts.optimizer._opt_called = True  # its schedule steps it through the stack: torch's warning is wrong

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train every run to its end; returns each run's metrics (metrics.json), in the order held."""
        self.start(self.active)
        if not self.active:
            return [m.metrics for m in self.members]
        signals = self.active[0].run.rules  # one handler: Ctrl-C or SIGTERM stops every run at the same step
        display = StackDisplay([m.run for m in self.members])
        try:
            with signals.catching_signals():
                while self.active:
                    if self.advance(signals.signal):  # some run ended an epoch
                        display.update()
        finally:
            display.stop()
        return [m.metrics for m in self.members]

    def start(self, members: list[Member]) -> None:
        # a run restored from one that had stopped (killed before it wrote metrics.json) only ends
        self.leave([(m, None) for m in members if m.run.stop])
        for m in members:
            if not m.run.stop:
                m.run.begin()

    def advance(self, signal) -> list[Member]:
        """One optimizer step of every active run, each in its own epoch (runs that started together stay
        together; a run admitted later keeps its own count); returns the runs that ended an epoch with it."""
        if self.between and all(m.sums is None for m in self.active):
            self.between(self)
        for m in self.active:
            if m.sums is None:
                m.sums = m.run.start_epoch()
                m.batches = m.run.epoch_batches(m.run.progress.epoch)
        stepping = list(self.active)
        losses, scores, prepared = self.step(stepping, [next(m.batches) for m in stepping])
        closed, leaving = [], []
        for i, m in enumerate(stepping):
            m.run.rules.signal = signal
            stop, last_step = m.run.stepped(losses[i], scores[i], prepared[i], m.sums)
            if stop:  # divergence or a signal: as Training.fit, the epoch ends here, unevaluated
                leaving.append((m, None))
            elif last_step:  # its epoch's end, or trainer.max_steps inside it: evaluated on what it trained
                epoch = m.run.progress.epoch
                stop = m.run.close_epoch(epoch, m.sums)
                m.sums = m.batches = None
                closed.append(m)
                if stop or m.run.out_of_steps() or epoch >= m.run.parts.cfg.trainer.epochs:
                    leaving.append((m, stop))
        self.leave(leaving)
        return closed

    def admit(self, held: list[Held]) -> list[Member]:
        """Runs that join the stack now, from where each stands (a search's next trials in freed slots)."""
        new = [Member(h, RunRandom(h.rng)) for h in held]
        self.model.admit([m.run.parts.model for m in new], [m.random.torch for m in new])
        self.optimizer.admit([m.run.parts.optimizer for m in new])
        for m in new:
            self.prepare(m)
        self.members += new
        self.active += new
        self.knobs.clear()
        self.one_loss = None
        self.start(new)
        return new

    def step(self, stepping: list[Member], micro: list) -> tuple[torch.Tensor, torch.Tensor, list]:
        """One optimizer step of every stepping run on its own batch: (losses [R], metric sums [R], batches)."""
        prepared = self.batches(stepping, micro)
        for sp in self.model.params:
            sp.data.grad.zero_()
        out = self.forward([batch[0][0] for batch in prepared])
        losses, scores = self.losses(stepping, out, [batch[0][1] for batch in prepared])
        losses = losses + self.penalties()
        losses.sum().backward()
        for sp in self.model.params:
            if sp.data.grad is not sp.aliased_grad:  # autograd replaced the gradient instead of adding to it
                sp.alias()
        self.clip()
        self.optimizer.step()
        self.constrain()
        return losses.detach(), scores, prepared

    def losses(self, stepping: list[Member], out, ys: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each run's loss and metric sum on its batch ([R] each): where every run's loss is the same function
        (its kind and knobs, label smoothing) of targets of one shape, one call for the stack through
        torch.func.vmap (64 runs: 1.0 ms against 3.8 ms a call a run, equal to rounding), else a call a run."""
        task = stepping[0].run.parts.data.task
        if self.same_loss(stepping) and isinstance(out, torch.Tensor) and all(y.shape == ys[0].shape for y in ys):
            y = torch.stack(ys)
            return (vmap(stepping[0].run.parts.criterion)(out, y),
                    vmap(lambda o, t: metric(o, t, task))(out.detach(), y))
        return (torch.stack([m.run.parts.criterion(out[i], ys[i]) for i, m in enumerate(stepping)]),
                torch.stack([metric(out[i].detach(), ys[i], task) for i in range(len(stepping))]))

    def same_loss(self, stepping: list[Member]) -> bool:
        """Whether every stepping run's loss is one function that vmap can run (the loss's `vmaps` trait)."""
        if self.one_loss is None:  # made again when a run joins or leaves
            losses = {(repr(m.run.parts.cfg.loss), m.run.parts.cfg.regularization.label_smoothing) for m in stepping}
            self.one_loss = len(losses) == 1 and LOSSES.trait(stepping[0].run.parts.loss_name, "vmaps")
        return self.one_loss

    @staticmethod
    def batches(stepping: list[Member], micro: list) -> list[list]:
        """Each stepping run's batch, prepared by its run; runs that take the same rows of the same (shared) data
        without augmentation (a seed's runs: the same order, epoch and step) share one gathered batch."""
        prepared, gathered = [], {}
        for m, batch in zip(stepping, micro):
            if m.run.parts.augment is not None:
                with m.random.drawing():
                    prepared.append([m.run.prepare(idx) for idx in batch])
                continue
            key = (id(m.run.parts.data.train), m.run.parts.batches.order, m.run.progress.epoch,
                   m.run.progress.steps_done)
            if key not in gathered:
                gathered[key] = [m.run.prepare(idx) for idx in batch]
            prepared.append(gathered[key])
        return prepared

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Every active run's outputs ([R, B, outputs]); runs whose batches differ in size (one at its epoch's
        shorter last batch, beside runs that joined later) pass in one pass per size."""
        sizes = [len(x) for x in xs]
        with self.active[0].run.parts.autocast():
            if len(set(sizes)) == 1:
                return self.model(xs).float()
            out: list = [None] * len(xs)
            for size in dict.fromkeys(sizes):
                rows = [r for r, s in enumerate(sizes) if s == size]
                for r, o in zip(rows, self.model([xs[r] for r in rows], rows).float()):
                    out[r] = o
            return out

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
    def leave(self, leaving: list[tuple[Member, object]]) -> None:
        """Runs that end at this step (each with how its last epoch ended, a Stop or None): their slices become
        their own tensors (the rest restacked once), their last checkpoints are started, then each is tested and
        its files are written while the others' checkpoints are written in the background."""
        going = [m for m, _ in leaving if m in self.active]
        if going:
            rows = [i for i, other in enumerate(self.active) if other not in going]
            self.optimizer.keep(rows)
            self.model.release(rows)
            self.optimizer.alias()
            self.active = [m for m in self.active if m not in going]
            self.knobs.clear()
            self.one_loss = None
        for m, stop in leaving:
            if m in going:
                m.run.completed = m.run.stop is None and stop is None
                m.run.end()
        for m, _ in leaving:
            with m.random.everywhere():
                m.metrics = completed(m.run, m.held.overrides)
