"""What the stack launcher (hydra_plugins/trainrun_stack) does besides Hydra's part: plan the stacks, say so
once, and train the runs it held, as one stack or, where their models cannot be stacked, one after another."""
from __future__ import annotations

import logging
import os
import time
from collections import Counter

import torch

from ..errors import ConfigError
from ..run.checkpoint import set_rng_states
from ..run.trainer import Held, completed
from .model import NotStackable
from .training import Stack

log = logging.getLogger("trainrun")


def announce(groups: list, names: list[str]) -> None:
    """One line for the stacks, one per run that trains alone and why."""
    sizes = sorted((len(members) for members, why in groups if why is None and len(members) > 1), reverse=True)
    if sizes:
        counts = ", ".join(f"{n} x {size}" if n > 1 else str(size) for size, n in Counter(sizes).items())
        print(f"stacked: {sum(sizes)} runs train together in {len(sizes)} stack{'s' * (len(sizes) > 1)} "
              f"(runs per stack: {counts}); hydra/launcher=basic trains one at a time", flush=True)
    for members, why in groups:
        if why:
            print(f"alone: run {names[members[0]]}: {why}", flush=True)


def train_held(held: list[Held], memory_gb: float | None = None, between=None) -> dict[int, dict | None]:
    """Train the held runs; each one's job return value (its metrics and objective) by id(held run).

    Runs stand where they start: at step 0, or where a resume found each (a killed stack resumes from each run's
    last.pt); runs at the same step train as stacks of as many as fit the memory budget. `between`: what
    Stack calls before each epoch (population-based training), for runs that must train as one stack."""
    results, interrupted = {}, False
    chunks = stacks(held, memory_gb)
    if between is not None and len(chunks) > 1:
        raise ConfigError(f"the population's {len(held)} runs do not train as one stack: "
                          + (f"{len(chunks[0])} fit the memory budget ({budget_text(held[0], memory_gb)})"
                             if len({h.run.step for h in held}) == 1 else "their checkpoints stand at different steps"))
    for chunk in chunks:
        started = time.perf_counter()
        try:
            metrics = Stack(chunk, between).fit() if len(chunk) > 1 or between else one_by_one(chunk)
            if len(chunk) > 1:
                print(f"stacked: {len(chunk)} runs trained in {time.perf_counter() - started:.2f} s", flush=True)
        except NotStackable as why:
            if between is not None:
                raise ConfigError(f"the population cannot train as one stack: {why}") from None
            print(f"alone: {len(chunk)} runs of one shape train one after another: {why}", flush=True)
            metrics = one_by_one(chunk)
        results |= {id(h): returned(h, m) for h, m in zip(chunk, metrics)}
        interrupted = interrupted or any(m and m.get("stop_reason") == "interrupted" for m in metrics)
        if interrupted:  # Ctrl-C or SIGTERM: the runs not started yet stay as they are, for the resume
            break
    if interrupted:
        raise KeyboardInterrupt
    return results


def stacks(held: list[Held], memory_gb: float | None) -> list[list[Held]]:
    """The held runs by the step they start from, each group cut into stacks that fit the memory budget."""
    by_step: dict[tuple, list[Held]] = {}
    for h in held:
        by_step.setdefault((h.run.step, h.run.progress.epoch, h.run.progress.steps_done), []).append(h)
    out = []
    for group in by_step.values():
        size = runs_that_fit(group[0], len(group), memory_gb)
        out += [group[i:i + size] for i in range(0, len(group), size)]
        if size < len(group):
            print(f"stacked: {size} runs per stack fit the memory budget ({budget_text(group[0], memory_gb)})",
                  flush=True)
    return out


def budget(device: torch.device, memory_gb: float | None) -> float:
    """Bytes a stack may take: hydra.launcher.memory_gb, else half the accelerator's free memory or half the
    host's available memory."""
    if memory_gb is not None:
        return memory_gb * 2**30
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2


def run_bytes(h: Held) -> int:
    """One run's share of a stack: its weights, gradients and up to two optimizer moments, and the activations a
    training step keeps for the backward pass, counted on one batch of its own (measured, not guessed)."""
    parts = h.run.parts
    weights = sum(p.numel() * p.element_size() for p in parts.model.parameters())
    saved = 0

    def count(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    buffers = {name: b.clone() for name, b in parts.model.named_buffers()}
    with torch.random.fork_rng(devices=[parts.device] if parts.device.type == "cuda" else []), \
            torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        x, _ = parts.data.fetch(parts.data.train, slice(0, parts.batches.batch_size))
        parts.model.train()
        parts.model(parts.data.normalize(x))
    with torch.no_grad():
        for name, b in parts.model.named_buffers():
            b.copy_(buffers[name])
    return 4 * weights + saved


def runs_that_fit(h: Held, runs: int, memory_gb: float | None) -> int:
    return max(1, min(runs, int(budget(h.run.parts.device, memory_gb) // max(run_bytes(h), 1))))


def budget_text(h: Held, memory_gb: float | None) -> str:
    where = "hydra.launcher.memory_gb" if memory_gb is not None else "half the free memory"
    return (f"{run_bytes(h) / 2**20:.1f} MiB a run measured on a step, {budget(h.run.parts.device, memory_gb) / 2**20:.0f} "
            f"MiB: {where}")


def one_by_one(held: list[Held]) -> list[dict]:
    """Each run as it trains alone, from the random states it was held with."""
    out = []
    for h in held:
        set_rng_states(h.rng)
        h.run.fit()
        out.append(completed(h.run, h.overrides))
    return out


def returned(h: Held, metrics: dict | None) -> dict | None:
    """The job's return value, as cli.run returns it for a run alone."""
    if not metrics:
        return None
    return {**metrics, "objective": metrics.get(h.run.parts.cfg.trainer.early_stopping.monitor)}
