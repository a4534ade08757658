"""A Hydra sweeper for population-based training: `trainrun -m hparams_search=pbt` (trainrun/stack/pbt.py).

The population's members are drawn from the searched space (Hydra's sweep grammar, as for Optuna) by a generator
seeded with `seed`, each with its own trainer.seed (the configured one plus its number), and trained as one stack
by the stack launcher, which calls the population before every epoch. Repeating the command resumes the
population: each member from its last.pt, its lineage from pbt.json.
"""
# No `from __future__ import annotations`: Hydra's plugin scan executes this module before it is in sys.modules.
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from trainrun.check import check_job
from trainrun.config import declared, direction
from trainrun.errors import ConfigError
from trainrun.sweeps.compose import JobComposer
from trainrun.sweeps.search import domain, probe_jobs, search_space
from trainrun.sweeps.sweep import claim, resuming, run_state, write_experiment, FINISHED, INTERRUPTED

log = logging.getLogger("trainrun")


@dataclass
class TrainrunPbtSweeperConf:
    _target_: str = "hydra_plugins.trainrun_pbt.pbt_sweeper.TrainrunPbtSweeper"
    population: int = 16  # members, trained as one stack
    interval: int = 4  # epochs between two exploits
    quantile: float = 0.25  # the bottom share copies a member of the top share (Ray Tune's quantile_fraction)
    resample_probability: float = 0.25  # a copied knob is drawn again from its space, else multiplied by a factor
    factors: List[float] = field(default_factory=lambda: [0.8, 1.2])
    seed: int = 0  # the members' starting values and every exploit's draws
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="trainrun_pbt", node=TrainrunPbtSweeperConf,
                             provider="trainrun")


def refused_settings(population, interval, quantile, resample_probability, factors, seed) -> str:
    """The first setting out of range, as `hydra.sweeper.KEY=VALUE is invalid: expected ...`, or ''."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    rules = [
        ("population", population, whole(population) and population >= 2, "an integer >= 2"),
        ("interval", interval, whole(interval) and interval >= 1, "a whole number of epochs >= 1"),
        ("quantile", quantile, number(quantile) and 0 < quantile <= 0.5, "a fraction in (0, 0.5]"),
        ("resample_probability", resample_probability,
         number(resample_probability) and 0 <= resample_probability <= 1, "a probability in [0, 1]"),
        ("factors", factors, isinstance(factors, (list, tuple)) and len(factors) > 0
         and all(number(f) and f > 0 for f in factors), "a list of numbers > 0, e.g. [0.8,1.2]"),
        ("seed", seed, whole(seed) and seed >= 0, "an integer >= 0"),
    ]
    return next((f"hydra.sweeper.{key}={value} is invalid: expected {expected}"
                 for key, value, ok, expected in rules if not ok), "")


class TrainrunPbtSweeper(Sweeper):
    def __init__(self, population, interval, quantile, resample_probability, factors, seed, params):
        factors = list(factors) if OmegaConf.is_config(factors) else factors
        why = refused_settings(population, interval, quantile, resample_probability, factors, seed)
        if why:
            raise ConfigError(why)
        from trainrun.stack.pbt import Exploration

        self.population = population
        self.exploration = Exploration(interval, float(quantile), float(resample_probability),
                                       tuple(float(f) for f in factors), seed)
        self.params = dict(params or {})

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        import numpy as np

        from trainrun.stack.grouping import plan
        from trainrun.stack.pbt import Population, aligned, plot, sample

        if type(self.launcher).__name__ != "TrainrunStackLauncher":
            raise ConfigError("hparams_search=pbt trains its population as one stack: it needs hydra/launcher=stack "
                              "(the default)")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        resumed = resuming(sweep_dir, [str(o) for o in OmegaConf.to_container(self.config.hydra.overrides.task)])
        space, fixed = search_space(self.params, arguments)
        refuse_space(space)
        composer = JobComposer(self.hydra_context, self.config)
        tc = self.checked_trainer(space, fixed, composer)

        rng = np.random.default_rng(self.exploration.seed)
        names = [f"member-{i:02d}" for i in range(self.population)]
        initial = {name: {key: sample(dist, rng) for key, dist in space.items()} for name in names}
        if resumed:
            aligned([sweep_dir / name for name in names if run_state(sweep_dir / name) == INTERRUPTED])
        # each member its own initialization, batches and draws, but one split: a member that copies another's
        # weights is never validated or tested on rows those weights were trained on
        split = [] if tc.split_seed is not None else [f"data.split_seed={tc.seed}"]
        jobs = [[*fixed, *split, *(f"{k}={v!r}" for k, v in initial[name].items()), f"trainer.seed={tc.seed + i}",
                 f"hydra.sweep.subdir={name}",
                 *([f"trainer.resume={sweep_dir / name}"] if run_state(sweep_dir / name) == INTERRUPTED else [])]
                for i, name in enumerate(names) if run_state(sweep_dir / name) != FINISHED]
        groups = plan([composer.compose(job, i) for i, job in enumerate(jobs)])
        if len(groups) > 1 or any(why for _, why in groups):
            why = next((why for _, why in groups if why), "its members differ in a key that splits stacks")
            raise ConfigError(f"hparams_search=pbt trains its population as one stack, and this one cannot: {why}")

        created = not sweep_dir.exists() or not any(sweep_dir.iterdir())
        claim(sweep_dir)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        if not resumed:
            write_experiment(sweep_dir, {key: domain(dist) for key, dist in space.items()})
        maximize = direction(tc.monitor, tc.mode) == "max"
        population = Population(space, self.exploration, sweep_dir, initial, tc.monitor, maximize, tc.epochs)
        population.write()
        print(f"population-based training: {self.population} members, exploit every {self.exploration.interval} "
              f"epochs on {tc.monitor}" + (f", resuming {len(jobs)} unfinished" if resumed else ""), flush=True)
        self.launcher.between = population
        try:
            returns = self.launcher.launch(jobs, initial_job_idx=0) if jobs else []
        except ConfigError:
            if created and not resumed:  # nothing trained: nothing of this sweep is left
                shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
        finally:
            self.launcher.between = None
        plot(sweep_dir, {key for key, dist in space.items() if getattr(dist, "log", False)})  # the summary says where
        return [returns]

    def checked_trainer(self, space: dict, fixed: list, composer) -> SimpleNamespace:
        """Every value of the space checked as its runs would check it, and the settings the population needs
        from the trainer: (seed, epochs, monitor, mode, split_seed) of a member's composed config."""
        for overrides in probe_jobs(space, fixed):  # refused as its runs would be, before anything is written
            check_job(self.hydra_context, self.config, overrides)
        first = composer.compose(probe_jobs(space, fixed)[0], 0)
        tc, interval = first.trainer, self.exploration.interval
        if interval >= tc.epochs:
            raise ConfigError(f"hydra.sweeper.interval={interval} leaves no exploit in trainer.epochs={tc.epochs}: "
                              "give an interval below the epochs")
        if interval % tc.eval_every:
            raise ConfigError(f"hydra.sweeper.interval={interval} is not a multiple of trainer.eval_every="
                              f"{tc.eval_every}: members are ranked on an evaluated epoch")
        monitor = tc.early_stopping.monitor
        if not monitor.startswith(("val", "train")):
            raise ConfigError(f"trainer.early_stopping.monitor={monitor}: members are ranked on a train/ or val/ metric")
        return SimpleNamespace(seed=tc.seed, epochs=tc.epochs, monitor=monitor, mode=tc.early_stopping.mode,
                               split_seed=first.data.split_seed)


def refuse_space(space: dict) -> None:
    """A space PBT can perturb: numbers the optimizer reads at every step (the schema's `perturbable` keys)."""
    if not space:
        raise ConfigError("hparams_search=pbt has nothing to search: give a knob a space, e.g. "
                          "'optimizer.lr=tag(log, interval(1e-3, 1))'")
    for key, dist in space.items():
        f = declared(key)
        if f is None or not f.metadata.get("perturbable"):
            raise ConfigError(f"{key} cannot change during a run, so hparams_search=pbt cannot perturb it: it "
                              "perturbs the optimizer's numeric knobs (optimizer.lr, momentum, weight_decay, eps, "
                              "...); search it with hparams_search=optuna")
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in getattr(dist, "choices", [0])):
            raise ConfigError(f"{key}: hparams_search=pbt perturbs numbers; its choices {list(dist.choices)} are not")
