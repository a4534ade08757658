"""Population-based training (Jaderberg et al. 2017) inside a stack: `trainrun -m hparams_search=pbt`.

A population of runs trains as one stack (trainrun/stack). Every `interval` epochs the members are ranked by the
monitored metric; each member of the bottom `quantile` takes the weights, optimizer state, schedule and
hyperparameters of a member of the top `quantile` drawn at random (exploit: a copy between two slices of the
stacked tensors, where Ray Tune writes a checkpoint and restores it in another trial), then each searched knob
is resampled from its space with `resample_probability`, else multiplied by one of `factors` and kept inside
its space (explore). Only knobs the optimizer reads at every step can change during a run: the schema marks them
`perturbable` (config.py).

Each member stays a run of its own (its directory, curves, best.pt, metrics.json); its lineage, which member it
copied at which epoch and its hyperparameters over time, goes to the sweep's pbt.json, drawn in pbt.png. The
draws of an exploit come from a generator seeded by (seed, epoch), and an exploit happens before the epoch after
its boundary, so a population killed and started again from its members' last.pt exploits exactly as it did.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .training import Member, Stack

LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # every lr a param group keeps for its schedule
SCHEDULE_LRS = ("base_lrs", "_last_lr", "max_lrs")  # and its scheduler


@dataclass(frozen=True)
class Exploration:
    interval: int  # epochs between two exploits
    quantile: float  # the share of the population that copies, and that is copied from
    resample_probability: float
    factors: tuple[float, ...]
    seed: int


def sample(dist, rng: np.random.Generator):
    """A value of an Optuna distribution (the searched space in Hydra's grammar, sweeps/search.py)."""
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    if isinstance(dist, d.IntDistribution):
        if dist.log:
            return int(min(dist.high, max(dist.low, round(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))))))
        return int(dist.low + dist.step * rng.integers((dist.high - dist.low) // dist.step + 1))
    if dist.log:
        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
    return float(rng.uniform(dist.low, dist.high))


def perturbed(dist, value, factor: float, shift: int):
    """`value` multiplied by `factor` and kept inside the space; a choice moves `shift` places along its list."""
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        index = dist.choices.index(value) if value in dist.choices else 0
        return dist.choices[min(len(dist.choices) - 1, max(0, index + shift))]
    moved = min(dist.high, max(dist.low, value * factor))
    return int(round(moved)) if isinstance(dist, d.IntDistribution) else float(moved)


def quantile_size(members: int, quantile: float) -> int:
    """Ray Tune's rule: ceil(members * quantile), at most half the population."""
    return min(math.ceil(members * quantile), members // 2)


class Population:
    """The stack's `between`: before each epoch after an `interval` boundary, the bottom copy the top."""

    def __init__(self, space: dict, exploration: Exploration, sweep_dir: Path, initial: dict[str, dict],
                 monitor: str, maximize: bool, epochs: int):
        self.space, self.exploration, self.monitor, self.maximize = space, exploration, monitor, maximize
        self.path = sweep_dir / "pbt.json"
        self.members = {name: {"hyperparameters": [{"epoch": 0, **values}], "exploits": []}
                        for name, values in initial.items()}
        if self.path.is_file():  # a resumed population: its lineage so far
            self.members |= json.loads(self.path.read_text())["members"]
        self.epochs = epochs

    def __call__(self, stack: "Stack") -> None:
        lead = stack.active[0].run
        done = lead.progress.epoch - 1
        if lead.progress.steps_done or done < 1 or done % self.exploration.interval or done >= self.epochs:
            return
        self.forget(done)  # a population resumed from the end of this epoch's checkpoints exploits it again
        self.exploit(stack, done)
        self.write()

    def values(self, name: str) -> dict:
        return {k: v for k, v in self.members[name]["hyperparameters"][-1].items() if k != "epoch"}

    def objective(self, m: "Member") -> float:
        value = m.run.judged.get(self.monitor)
        if value is None or not math.isfinite(value):
            return math.inf  # ranked last
        return -value if self.maximize else value

    def exploit(self, stack: "Stack", epoch: int) -> None:
        ex = self.exploration
        rng = np.random.default_rng([ex.seed, epoch])
        members = list(stack.active)
        scores = [self.objective(m) for m in members]
        order = sorted(range(len(members)), key=lambda i: (scores[i], i))  # best first
        n = quantile_size(len(members), ex.quantile)
        if n == 0:
            return
        top, bottom = order[:n], order[len(order) - n:]
        for i in bottom:
            j = top[int(rng.integers(len(top)))]
            source, target = members[j], members[i]
            name, source_name = target.run.run_dir.name, source.run.run_dir.name
            before = self.values(source_name)
            after = {key: sample(dist, rng) if rng.random() < ex.resample_probability
                     else perturbed(dist, before[key], float(rng.choice(ex.factors)), int(rng.choice((-1, 1))))
                     for key, dist in self.space.items()}
            stack.copy(source, target)
            set_hyperparameters(target, before, after)
            record = self.members[name]
            record["hyperparameters"].append({"epoch": epoch, **after})
            record["exploits"].append({"epoch": epoch, "from": source_name, "objective": self.value(scores[i]),
                                       "source_objective": self.value(scores[j])})
            print(f"pbt: epoch {epoch}: {name} copies {source_name} "
                  f"({', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in after.items())})",
                  flush=True)

    def value(self, score: float) -> float | None:
        """The monitored value back from its rank score."""
        return None if math.isinf(score) else -score if self.maximize else score

    def forget(self, epoch: int) -> None:
        for record in self.members.values():
            record["hyperparameters"] = [h for h in record["hyperparameters"] if h["epoch"] < epoch or h["epoch"] == 0]
            record["exploits"] = [e for e in record["exploits"] if e["epoch"] < epoch]

    def write(self) -> None:
        """pbt.json, replaced atomically: the settings and each member's lineage."""
        ex = self.exploration
        text = json.dumps({"interval": ex.interval, "quantile": ex.quantile,
                           "resample_probability": ex.resample_probability, "factors": list(ex.factors),
                           "seed": ex.seed, "monitor": self.monitor, "epochs": self.epochs,
                           "members": self.members}, indent=2) + "\n"
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(text)
        os.replace(partial, self.path)


def set_hyperparameters(m: "Member", before: dict, after: dict) -> None:
    """The run's optimizer (and its schedule) as it stood copied from a member with `before`, moved to `after`:
    a knob's every param group value scaled by after / before (model.weights' lower backbone lr keeps its ratio),
    set where it was 0; an lr scales every lr the schedule keeps."""
    parts = m.run.parts
    for key, value in after.items():
        name = key.split(".", 1)[1]
        ratio = value / before[key] if before[key] else None
        for group in parts.optimizer.param_groups:
            for k in LR_KEYS if name == "lr" else (name,):
                if k in group:
                    group[k] = group[k] * ratio if ratio is not None else value
        if name == "lr" and parts.scheduler is not None:
            for attr in SCHEDULE_LRS:
                if isinstance(getattr(parts.scheduler, attr, None), list):
                    setattr(parts.scheduler, attr, [v * ratio for v in getattr(parts.scheduler, attr)])


def aligned(run_dirs: list[Path]) -> None:
    """A killed population's members set back to the last step all of them checkpointed: members trained as one
    stack and exchange weights, and a kill between their writes leaves some a checkpoint ahead; those go back to
    their previous one (kept beside it), or start over where the others have none yet (the same draws make the
    same steps again)."""
    from ..run.checkpoint import PREVIOUS
    from ..runfiles import read_checkpoint

    steps = {d: read_checkpoint(d / "last.pt")["step"] if (d / "last.pt").is_file() else 0 for d in run_dirs}
    if not steps:
        return
    common = min(steps.values())
    for run_dir, step in steps.items():
        if step == common:
            continue
        previous = run_dir / PREVIOUS
        if common and previous.is_file() and read_checkpoint(previous)["step"] == common:
            os.replace(previous, run_dir / "last.pt")
        else:
            (run_dir / "last.pt").unlink()
            (run_dir / "best.pt").unlink(missing_ok=True)
        print(f"pbt: {run_dir.name} goes back to step {common}, where every member checkpointed", flush=True)


def plot(sweep_dir: Path, log_keys: set[str]) -> Path | None:
    """pbt.png: each searched knob of every member over the epochs, a dot where it copied another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = sweep_dir / "pbt.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    members = saved["members"]
    keys = [k for k in next(iter(members.values()))["hyperparameters"][0] if k != "epoch"]
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 3 * len(keys)), squeeze=False, sharex=True)
    for ax, key in zip(axes[:, 0], keys):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 distinct colours: a population of 16 by default
        for name, record in sorted(members.items()):
            points = record["hyperparameters"]
            metrics = sweep_dir / name / "metrics.json"  # a member that stopped early ends there
            end = json.loads(metrics.read_text()).get("epochs_run", saved["epochs"]) if metrics.is_file() else saved["epochs"]
            xs = [p["epoch"] for p in points] + [end]
            ys = [p[key] for p in points] + [points[-1][key]]
            line, = ax.step(xs, ys, where="post", label=name, linewidth=1.2)
            ax.plot([p["epoch"] for p in points[1:]], [p[key] for p in points[1:]], "o", color=line.get_color(),
                    markersize=3)
        ax.set_ylabel(key)
        if key in log_keys:
            ax.set_yscale("log")
    axes[-1, 0].set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[0, 0].set_title(f"population-based training: {len(members)} members, exploit every {saved['interval']} "
                         "epochs (a dot: copied another member)", fontsize=9)
    fig.tight_layout()
    out = sweep_dir / "pbt.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def report(sweep_dir: Path) -> None:
    """After the sweep's table (conf/hparams_search/pbt.yaml adds it): the table shows each member's starting
    values; the best member's hyperparameters over the epochs, and where the lineage is."""
    from ..errors import ConfigError
    from ..runfiles import DamagedRun
    from ..sweeps.summary import best_run

    if not (sweep_dir / "pbt.json").is_file():  # stopped before the population started
        return
    saved = json.loads((sweep_dir / "pbt.json").read_text())
    try:
        best = best_run(sweep_dir).name
    except (ConfigError, DamagedRun):  # no member finished, or one cannot be ranked: the table said which
        return
    steps = "; ".join(f"from epoch {h['epoch']} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                             for k, v in h.items() if k != "epoch")
                      for h in saved["members"][best]["hyperparameters"])
    print(f"pbt: the table shows each member's starting values; the best, {best}, trained {steps}")
    print(f"pbt: every member's lineage in {sweep_dir / 'pbt.json'}, drawn in {sweep_dir / 'pbt.png'}")
