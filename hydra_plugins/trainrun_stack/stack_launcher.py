"""trainrun's stack launcher (`hydra/launcher=stack`, the default): a sweep's runs that differ only in knobs
that can be stacked train together in this process as one stacked model (trainrun/stack); each is still its own
run, with its own directory and files, equal to the run trained alone up to rounding. A run that cannot be
stacked trains alone, as Hydra's basic launcher runs it, and the sweep says why once.
"""
# No `from __future__ import annotations`: Hydra's plugin scan executes this module before it is in sys.modules.
import logging
from pathlib import Path
from typing import List, Optional, Sequence

from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig

log = logging.getLogger("trainrun")


# its config is conf/hydra/launcher/stack.yaml (found wherever trainrun.conf is, without importing this module)


class TrainrunStackLauncher(Launcher):
    def __init__(self, memory_gb: Optional[float] = None) -> None:
        import math

        from trainrun.errors import ConfigError

        number = isinstance(memory_gb, (int, float)) and not isinstance(memory_gb, bool)
        if memory_gb is not None and not (number and math.isfinite(memory_gb) and memory_gb > 0):
            raise ConfigError(f"hydra.launcher.memory_gb={memory_gb} is invalid: expected a number of GiB > 0, "
                              "or null (half the free memory)")
        self.config: Optional[DictConfig] = None
        self.memory_gb = memory_gb
        self.between = None  # what the stack calls before each epoch: set by the PBT sweeper (hparams_search=pbt)

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from trainrun.stack.grouping import plan
        from trainrun.stack.launch import announce
        from trainrun.sweeps.compose import JobComposer

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        # every job composed before any runs: a bad one is refused before anything trains (the sweeper's own
        # validate_batch_is_legal, Hydra's compose again for every job, is skipped for this launcher)
        composer = JobComposer(self.hydra_context, self.config)
        jobs = [(idx, overrides, composer.compose(overrides, idx, job_id=idx))
                for idx, overrides in enumerate(job_overrides, initial_job_idx)]
        groups = plan([config for _, _, config in jobs])
        announce(groups, [Path(str(config.hydra.sweep.subdir)).name for _, _, config in jobs])
        returns: dict = {}
        for members, _ in groups:
            chosen = [jobs[i] for i in members]
            returns.update(self.run_stack(chosen) if len(chosen) > 1 else {chosen[0][0]: self.run_alone(chosen[0])})
        return [returns[idx] for idx, _, _ in jobs]

    def run_alone(self, job) -> JobReturn:
        """A job as Hydra's basic launcher runs it, through the lean run_job (sweeps/jobs.py: ~50 ms a job less)."""
        from trainrun.sweeps.compose import copied
        from trainrun.sweeps.jobs import run_composed

        idx, overrides, config = job
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        ret = run_composed(config, copied(config), self.hydra_context.callbacks, self.task_function)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def hold(self, job) -> tuple:
        """A job's run prepared as Hydra runs a job (its directory, its .hydra record, the checks) and held
        before it trains: (its JobReturn, its held run; None where it ended at once: finished, or failed)."""
        from trainrun.run import trainer

        trainer.HELD = held = []
        try:
            returned = self.run_alone(job)
        finally:
            trainer.HELD = None
        return returned, held[0] if held else None

    def run_stack(self, jobs: List) -> dict:
        """Each job's run held, then all of them trained as one stack, and each job's return value set."""
        from trainrun.stack.launch import train_held

        returns, holding = {}, []
        for job in jobs:
            returns[job[0]], h = self.hold(job)
            holding.append((job[0], h))
        results = train_held([h for _, h in holding if h is not None], self.memory_gb, self.between)
        for idx, h in holding:
            if h is not None:
                returns[idx].return_value = results[id(h)]
        return returns
