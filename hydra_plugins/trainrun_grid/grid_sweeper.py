"""trainrun's grid sweeper (the default for `trainrun -m`): Hydra's basic sweeper, resumable.

A study's stage may also search at random: with `samples: N`, each of its `interval(low, high)` values
(`tag(log, ...)`: log-uniform; `int(...)`: whole numbers) is drawn N times for every point of its grid of listed
values, from a generator seeded by the stage's `seed` and the point, so a repeated command draws the same runs.

Repeating a sweep's command with the same hydra.sweep.dir continues it: finished runs are never launched
again (their files stay byte-identical), interrupted ones resume from their checkpoints, the rest start.
Every run is named after what it varies (`3_optimizer-adam_lr-0.01`), so its directory is found again
and its TensorBoard legend reads at a glance.
"""
# No `from __future__ import annotations`: Hydra's plugin scan executes this module before it is in sys.modules.
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from trainrun.check import check_job
from trainrun.errors import ConfigError
from trainrun.sweeps.compose import JobComposer
from trainrun.sweeps.sweep import (INTERRUPTED, FINISHED, claim, fill, found_line, resuming, run_names, run_state, stage_params,
                            write_experiment)

log = logging.getLogger("trainrun")


@dataclass
class TrainrunGridSweeperConf:
    _target_: str = "hydra_plugins.trainrun_grid.grid_sweeper.TrainrunGridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None  # the grid in YAML (a study's); the command line replaces a key


ConfigStore.instance().store(group="hydra/sweeper", name="trainrun_grid", node=TrainrunGridSweeperConf,
                             provider="trainrun")


def batches(jobs: list, size: Optional[int]) -> list:
    size = size if size and size > 0 else max(len(jobs), 1)
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


def stage_jobs(overrides: list, samples: Optional[int], seed: int) -> List[List[str]]:
    """The grid of the listed values; with `samples`, each grid point repeated with that many random draws
    of the intervals."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    for knob, value in (("samples", samples), ("seed", seed)):
        if value is not None and (type(value) is not int or value < (1 if knob == "samples" else 0)):
            raise ConfigError(f"a study stage's {knob}: {value!r} is invalid: expected "
                              + ("a positive integer" if knob == "samples" else "an integer >= 0"))
    intervals = [o for o in overrides if o.is_interval_sweep()]
    if intervals and not samples:
        raise ConfigError(f"{intervals[0].input_line}: a grid takes listed values (e.g. 0.01,0.1,1); an interval is "
                          "searched with hparams_search=optuna or random, or drawn by a study stage's `samples: N`")
    if samples and not intervals:
        raise ConfigError(f"a study stage's samples: {samples} draws its interval(low, high) values, and it has none")
    grid = BasicSweeper.split_arguments([o for o in overrides if not o.is_interval_sweep()], None)[0]
    if not intervals:
        return grid
    for o in intervals:
        low, high = o.value().start, o.value().end
        if not low < high or ("log" in o.value().tags and low <= 0):
            raise ConfigError(f"{o.input_line}: needs low < high" + (", both above 0 on a log scale" if low < high else ""))
    jobs = []
    for number, point in enumerate(grid):
        rng = random.Random(seed * 1_000_003 + number)
        for _ in range(samples):
            jobs.append([*point, *(f"{o.get_key_element()}={draw(o.value(), rng)}" for o in intervals)])
    return jobs


def covering(jobs: List[List[str]], keys: set) -> List[List[str]]:
    """The first job, and each job that gives one of `keys` a value no job before it had: between them every
    listed value is seen once (a missing file among data.path=a.csv,b.csv), not every combination."""
    seen, chosen = set(), []
    for job in jobs:
        values = {o for o in job if o.split("=", 1)[0].lstrip("+~") in keys}
        if not chosen or values - seen:
            chosen.append(job)
            seen |= values
    return chosen


def draw(interval, rng: random.Random) -> str:
    low, high = interval.start, interval.end
    whole = isinstance(low, int) and isinstance(high, int)
    if "log" in interval.tags:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return str(round(value)) if whole else f"{value:.4g}"


class TrainrunGridSweeper(Sweeper):
    # Not a subclass of Hydra's BasicSweeper: Hydra's plugin scan executes its module again, which rebinds
    # the class its __init__ names, and super() then fails. Its grid expansion is borrowed as a function.
    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None) -> None:
        self.max_batch_size, self.params = max_batch_size, dict(params or {})

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        """The grid, or a study's stages one after another (each a grid; a later stage's values may name an
        earlier stage's results, e.g. `{find.suggested_lr*0.1}` or `{pretrain.dir}/best.pt`)."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        resumed = resuming(sweep_dir, [str(o) for o in OmegaConf.to_container(self.config.hydra.overrides.task)])
        staged = OmegaConf.select(self.config, "study.stages")
        size = OmegaConf.select(self.config, "study.size")
        stages = [{**stage, "params": stage_params(stage, size)}
                  for stage in (OmegaConf.to_container(staged) if staged else [{"name": None, "params": self.params}])]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for stage in stages:  # what every run of a stage shares is refused now, before anything is written
            if not any("{" in str(v) for v in stage["params"].values()):
                params = parser.parse_overrides([f"{k}={v}" for k, v in stage["params"].items()] + list(arguments))
                listed = {o.get_key_element() for o in params if o.is_sweep_override() and not o.is_interval_sweep()}
                self.check(covering(stage_jobs(params, stage.get("samples"), stage.get("seed", 0)), listed))
        claim(sweep_dir)
        plans, returns, done = list(stages), [], {}
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        if not resumed:  # the swept keys of every stage and of the command line; an earlier stage's result is unknown yet
            given = [f"{k}={v}" for stage in stages for k, v in stage["params"].items() if "{" not in str(v)]
            swept = {k: None for stage in stages for k, v in stage["params"].items() if "{" in str(v)}
            swept |= {o.get_key_element(): (o.value().start, o.value().end) if o.is_interval_sweep()
                      else list(o.sweep_string_iterator())
                      for o in parser.parse_overrides(given + list(arguments)) if o.is_sweep_override()}
            write_experiment(sweep_dir, swept)
        for stage in plans:
            params = {k: fill(str(v), done) for k, v in stage["params"].items()}
            overrides = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + list(arguments))
            jobs = stage_jobs(overrides, stage.get("samples"), stage.get("seed", 0))
            swept = list(dict.fromkeys(o.get_key_element() for o in overrides if o.is_sweep_override()))
            names = [f"{stage['name']}-{n}" if stage["name"] else n for n in run_names(jobs, swept)]
            states = [run_state(sweep_dir / name) for name in names]
            if resumed:
                print(f"resuming the sweep in {sweep_dir}" + (f", stage {stage['name']}" if stage["name"] else "")
                      + f": {found_line(states)}", flush=True)
            batch = [[*job, f"hydra.sweep.subdir={name}",
                      *([f"trainer.resume={sweep_dir / name}"] if state == INTERRUPTED else [])]
                     for job, name, state in zip(jobs, names, states) if state != FINISHED]
            returns += self.launch(batch)
            if stage["name"]:
                done[stage["name"]] = sweep_dir / names[0]
        return returns

    def check(self, jobs: list) -> None:
        """Each job of `covering` (every swept value once) refused as its run would refuse it (trainrun.check):
        a sweep with one bad value is refused before its directory exists, not after its first runs trained."""
        composer = JobComposer(self.hydra_context, self.config)
        for job in jobs:
            check_job(self.hydra_context, self.config, job, composer=composer)

    def launch(self, batch: list) -> list:
        returns, initial_job_idx = [], 0
        composes_first = type(self.launcher).__name__ == "TrainrunStackLauncher"  # it composes every job first
        for chunk in batches(batch, self.max_batch_size) if batch else []:
            if not composes_first:
                self.validate_batch_is_legal(chunk)
            results = self.launcher.launch(chunk, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # a job that raised (a bug, not a bad config) stops the sweep here
            initial_job_idx += len(chunk)
            returns.append(results)
        return returns
