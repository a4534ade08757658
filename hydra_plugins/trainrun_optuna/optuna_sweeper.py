"""A Hydra sweeper on current Optuna, with pruning: `trainrun -m hparams_search=optuna`.

Written for trainrun because hydra-optuna-sweeper (1.3.0) pins optuna<3, whose RDB storage fails with
SQLAlchemy 2, and never prunes (Hydra issue #1954). Trials live in Optuna's own storage (a journal file in
the sweep directory by default, or any RDB URL), so jobs in other processes or on other machines report to
the same study: each run reports its monitored metric every epoch and stops when the pruner says so.

The search space is Hydra's sweep grammar, in `hydra.sweeper.params` or on the command line:
choice(a, b), range(1, 5), interval(0.1, 1.0), tag(log, interval(1e-4, 1e-1)); a plain value is fixed.
"""
# No `from __future__ import annotations` here: Hydra's plugin scan executes this module before it is in
# sys.modules, and dataclasses with string annotations look the module up there.
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from trainrun.config import ConfigError, PrunerConfig, check_node
from trainrun.registry import SEARCH_SAMPLERS
from trainrun.search import make_pruner, make_storage

log = logging.getLogger("trainrun")


@dataclass
class TrainrunOptunaSweeperConf:
    _target_: str = "hydra_plugins.trainrun_optuna.optuna_sweeper.TrainrunOptunaSweeper"
    sampler: str = "tpe"  # tpe | random (Bergstra and Bengio 2012)
    seed: Optional[int] = 0
    n_trials: int = 20
    n_jobs: int = 1  # trials launched at once (give the launcher as many workers)
    study_name: str = "trainrun"
    storage: Optional[str] = None  # null: a journal file in the sweep directory; or an RDB URL (sqlite:///..., postgresql://...)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="trainrun_optuna", node=TrainrunOptunaSweeperConf,
                             provider="trainrun")


def distribution(override: Override):
    """The Optuna distribution for a sweep override, or None for a fixed value."""
    import optuna.distributions as d

    if not override.is_sweep_override():
        return None
    sweep = override.value()
    log_scale = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, ChoiceSweep):
        return d.CategoricalDistribution([v for v in override.sweep_iterator(transformer=lambda x: x)])
    if isinstance(sweep, RangeSweep):
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return d.IntDistribution(sweep.start, sweep.stop - 1, step=sweep.step, log=log_scale)
        return d.CategoricalDistribution(list(override.sweep_iterator(transformer=lambda x: x)))
    if isinstance(sweep, IntervalSweep):
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return d.IntDistribution(sweep.start, sweep.end, log=log_scale)
        return d.FloatDistribution(sweep.start, sweep.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can search")


class TrainrunOptunaSweeper(Sweeper):
    def __init__(self, sampler, seed, n_trials, n_jobs, study_name, storage, pruner, params):
        SEARCH_SAMPLERS[sampler]  # an unknown one is a ConfigError listing the choices
        check_node(pruner, PrunerConfig, "hydra.sweeper.pruner")
        if n_trials < 1 or n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={n_trials} and n_jobs={n_jobs} must be positive")
        self.sampler_kind, self.seed, self.n_trials, self.n_jobs = sampler, seed, n_trials, n_jobs
        self.study_name, self.storage_url = study_name, storage
        self.pruner_cfg = dict(OmegaConf.to_container(pruner) if isinstance(pruner, DictConfig) else vars(pruner))
        self.params = dict(params or {})

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        import optuna

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        parser = OverridesParser.create()
        # the command line replaces the configured space key by key: a fixed value there fixes that key
        by_key = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()])
                  + parser.parse_overrides(arguments)}
        space, fixed = {}, []
        for override in by_key.values():
            try:
                dist = distribution(override)
            except ValueError as error:  # e.g. a log scale over negative values
                raise ConfigError(f"cannot search {override.input_line}: {' '.join(str(error).split())}") from None
            if dist is None:
                fixed.append(override.input_line)
            else:
                space[override.get_key_element()] = dist
        monitor = OmegaConf.select(self.config, "trainer.early_stopping.monitor")
        mode = OmegaConf.select(self.config, "trainer.early_stopping.mode")
        maximize = mode == "max" or (mode == "auto" and monitor.endswith("acc"))
        url = self.storage_url or f"journal:{(sweep_dir / 'optuna.journal').resolve()}"
        sampler = SEARCH_SAMPLERS.create(None, kind=self.sampler_kind, seed=self.seed)
        study = optuna.create_study(study_name=self.study_name, storage=make_storage(url), sampler=sampler,
                                    pruner=make_pruner(self.pruner_cfg), load_if_exists=True,
                                    direction="maximize" if maximize else "minimize")
        log.info("optuna study %s (%s %s) in %s, %d trials", self.study_name, "maximize" if maximize else "minimize",
                 monitor, url, self.n_trials)
        # each run finds its trial in the same storage, and prunes itself with the same pruner
        pruning = [f"trainer.pruning.storage='{url}'", f"trainer.pruning.study={self.study_name}",
                   *(f"trainer.pruning.{k}={v}" for k, v in self.pruner_cfg.items())]
        launched, returns = 0, []
        while launched < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - launched))]
            batch = [[*fixed, *(f"{k}={v}" for k, v in t.params.items()), *pruning, f"trainer.pruning.trial={t.number}"]
                     for t in trials]
            results = self.launcher.launch(batch, initial_job_idx=launched)
            for trial, result in zip(trials, results):
                study.tell(trial, *outcome(result))
            launched += len(trials)
            returns.append(results)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if complete:
            log.info("best trial %d: %s = %s with %s", study.best_trial.number, monitor, study.best_value, study.best_params)
        return returns


def outcome(result) -> tuple:
    """(value, state) for study.tell, from what the job returned: its metrics, or None when it failed."""
    from optuna.trial import TrialState

    try:
        metrics = result.return_value
    except Exception:  # the job raised: a failed trial, not a failed study
        return None, TrialState.FAIL
    if not metrics:
        return None, TrialState.FAIL
    if metrics.get("stop_reason") == "pruned":
        return None, TrialState.PRUNED
    value = metrics.get("objective")
    return (value, TrialState.COMPLETE) if value is not None and value == value else (None, TrialState.FAIL)
