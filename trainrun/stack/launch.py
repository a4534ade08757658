"""What the stack launcher (hydra_plugins/trainrun_stack) does besides Hydra's part: plan the stacks, say so
once, and train the runs it held, as one stack or, where their models cannot be stacked, one after another."""
from __future__ import annotations

import logging
from collections import Counter

from ..run.checkpoint import set_rng_states
from ..run.trainer import Held, completed
from .grouping import plan
from .model import NotStackable
from .training import Stack

log = logging.getLogger("trainrun")


def plan_jobs(configs) -> list[tuple[list[int], str | None]]:
    return plan(configs)


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


def train_held(held: list[Held]) -> dict[int, dict | None]:
    """Train the held runs; each one's job return value (its metrics and objective) by id(held run)."""
    if not held:
        return {}
    try:
        metrics = Stack(held).fit() if len(held) > 1 else one_by_one(held)
    except NotStackable as why:
        print(f"alone: {len(held)} runs of one shape train one after another: {why}", flush=True)
        metrics = one_by_one(held)
    results = {id(h): returned(h, m) for h, m in zip(held, metrics)}
    if any(m and m.get("stop_reason") == "interrupted" for m in metrics):
        raise KeyboardInterrupt
    return results


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
