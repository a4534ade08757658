"""A Hydra sweeper on current Optuna, with pruning: `trainrun -m hparams_search=optuna`.

Written for trainrun because hydra-optuna-sweeper (1.3.0) pins optuna<3, whose RDB storage fails with
SQLAlchemy 2, and never prunes (Hydra issue #1954). Trials live in Optuna's own storage (a journal file in
the sweep directory by default, or any RDB URL), so jobs in other processes or on other machines report to
the same study: each run reports its monitored metric every epoch and stops when the pruner says so.

The search space is Hydra's sweep grammar, in `hydra.sweeper.params` or on the command line:
choice(a, b), range(1, 5), interval(0.1, 1.0), tag(log, interval(1e-4, 1e-1)); a plain value is fixed.

No batch barrier: with n_jobs=K, K trials are in flight at all times in K long-lived worker processes (a
process start costs more than a digits trial); when one ends, the next is asked for and started at once.
Hydra's launcher API takes batches and waits for all of each, so this path launches jobs itself; with the
submitit launcher (a cluster) trials still go in batches of n_jobs through Hydra's launcher.

A search resumes by repeating its command: hydra.sweeper.n_trials is the total the study reaches; a trial
whose process died (no process holds its run directory) resumes from its checkpoint, or is closed as
failed and its parameters tried again.
"""
# No `from __future__ import annotations` here: Hydra's plugin scan executes this module before it is in
# sys.modules, and dataclasses with string annotations look the module up there.
import json
import logging
import os
import pickle
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from trainrun.check import check_job, check_node
from trainrun.config import PrunerConfig, direction
from trainrun.errors import ConfigError
from trainrun.registry import SEARCH_SAMPLERS
from trainrun.sweeps.compose import JobComposer
from trainrun.sweeps.jobs import run_composed
from trainrun.sweeps.search import domain, first_point, make_pruner, make_storage, probe_jobs, search_space
from trainrun.sweeps.sweep import claim, ended, held, holding, resuming, run_name, write_experiment

log = logging.getLogger("trainrun")
SAMPLER = "sampler.pkl"  # the sampler as it stood after the last ask (its random state), for a resume
ASKING_S = 60  # a trial on a shared storage without attributes this long after its start was asked by a dead sweeper


@dataclass
class TrainrunOptunaSweeperConf:
    _target_: str = "hydra_plugins.trainrun_optuna.optuna_sweeper.TrainrunOptunaSweeper"
    sampler: str = "tpe"  # tpe | random (Bergstra and Bengio 2012)
    seed: Optional[int] = 0
    n_trials: int = 20
    n_jobs: int = 1  # > 1: trials in flight at once, each in a worker process of its own
    # with hydra/launcher=stack (the default) and n_jobs 1: trials trained at once as stacks in this process;
    # null: the pruner's n_startup_trials, at least 2, as memory allows (until that many trials ended the pruner
    # prunes none, so more slots at the start train trials that cannot be cut short: measured in bench_sweep.py)
    slots: Optional[int] = None
    in_flight: bool = True  # false: through Hydra's launcher, in batches of n_jobs that wait for their slowest
    study_name: str = "trainrun"
    storage: Optional[str] = None  # null: a journal file in the sweep directory; or an RDB URL (sqlite:///..., postgresql://...)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="trainrun_optuna", node=TrainrunOptunaSweeperConf,
                             provider="trainrun")


WORKER: dict = {}  # in each worker process: what every trial shares, sent once when the worker starts


def start_worker(hydra_context, task_function, singleton_state, threads: int) -> None:
    """A worker's start: Hydra's state and the task, once (sending them with every trial cost ~0.1 s of a
    trial's ~0.3 s here), and its share of the cores (trainer.threads, where set, still decides)."""
    import gc

    import torch
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    torch.set_num_threads(threads)
    import torch._dynamo  # noqa: F401  (torch's optimizers import it on their first step: here, before any trial)
    import trainrun.run.trainer  # noqa: F401

    setup_globals()
    Singleton.set_state(singleton_state)
    # loky collects garbage after a task once a second has passed; a full collection over the ~340,000 objects
    # of torch and trainrun took 0.25-0.3 s, most of a worker's idle time between two trials: what the imports
    # made is never garbage, so it leaves the collector's view
    gc.freeze()
    WORKER.update(hydra_context=hydra_context, task_function=task_function)


def execute_trial(composed: bytes):
    """One trial in a worker process, run as Hydra's `run_job` runs a launcher's job (sweeps/jobs.py)."""
    config, task_cfg = pickle.loads(composed), pickle.loads(composed)  # its own copies (~10 ms)
    return run_composed(config, task_cfg, WORKER["hydra_context"].callbacks, WORKER["task_function"])


class TrainrunOptunaSweeper(Sweeper):
    def __init__(self, sampler, seed, n_trials, n_jobs, slots, in_flight, study_name, storage, pruner, params):
        SEARCH_SAMPLERS[sampler]  # an unknown one is a ConfigError listing the choices
        check_node(pruner, PrunerConfig, "hydra.sweeper.pruner")
        if n_trials < 1 or n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={n_trials} and n_jobs={n_jobs} must be positive")
        if slots is not None and slots < 1:
            raise ConfigError(f"hydra.sweeper.slots={slots} is invalid: expected a positive integer, or null")
        self.sampler_kind, self.seed, self.n_trials, self.n_jobs = sampler, seed, n_trials, n_jobs

        self.in_flight_wanted = in_flight
        self.study_name, self.storage_url = study_name, storage
        self.pruner_cfg = dict(OmegaConf.to_container(pruner) if isinstance(pruner, DictConfig) else vars(pruner))
        self.slots = min(n_trials, slots if slots is not None else max(2, self.pruner_cfg.get("n_startup_trials", 3)))
        self.params = dict(params or {})

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        import optuna

        sweep_dir = Path(self.config.hydra.sweep.dir)
        resumed = resuming(sweep_dir, [str(o) for o in OmegaConf.to_container(self.config.hydra.overrides.task)])
        space, fixed = search_space(self.params, arguments)
        self.monitor = monitor = OmegaConf.select(self.config, "trainer.early_stopping.monitor")
        maximize = direction(monitor, OmegaConf.select(self.config, "trainer.early_stopping.mode")) == "max"
        for overrides in probe_jobs(space, fixed):  # refused as its runs would be, before anything is written
            check_job(self.hydra_context, self.config, overrides)
        url = self.storage_url or f"journal:{(sweep_dir / 'optuna.journal').resolve()}"
        study = self.open_study(sweep_dir, url, maximize)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        if not resumed:
            write_experiment(sweep_dir, {key: domain(dist) for key, dist in space.items()})
        # each run finds its trial in the same storage, and prunes itself with the same pruner
        pruning = [f"trainer.pruning.storage='{url}'", f"trainer.pruning.study={self.study_name}",
                   *(f"trainer.pruning.{k}={v}" for k, v in self.pruner_cfg.items())]

        def job(trial) -> list:
            """A trial's overrides; its directory is named by its number, so no later trial writes into it."""
            run_dir = Path(trial.user_attrs.get("run_dir") or (sweep_dir / run_name(
                trial.number, {k: short(v) for k, v in trial.params.items()}, list(space))).resolve())
            if isinstance(trial, optuna.Trial):  # where it runs and who asked, for a resume by any sweeper
                trial.set_user_attr("sweep_dir", str(sweep_dir.resolve()))
                trial.set_user_attr("run_dir", str(run_dir))  # last: dead_trials reads a trial that has it
            name = run_dir.name
            resume = [f"trainer.resume={run_dir}"] if (run_dir / "last.pt").is_file() else []
            return [*fixed, *(f"{k}={v}" for k, v in trial.params.items()), *pruning,
                    f"trainer.pruning.trial={trial.number}", f"hydra.sweep.subdir={name}", *resume]

        unfinished = self.dead_trials(study, sweep_dir)
        ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        done = sum(t.state in ended and counts(t) for t in study.trials)
        if resumed:
            print(f"resuming the search in {sweep_dir}: {done} of {self.n_trials} trials ended, "
                  f"{len(unfinished)} interrupted (resuming)", flush=True)
        log.info("optuna study %s (%s %s) in %s, %d trials", self.study_name, "maximize" if maximize else "minimize",
                 monitor, url, self.n_trials)
        def more() -> bool:
            """Whether the study still needs a trial: the ended ones and those running anywhere (other sweepers
            on the same storage too) fall short of n_trials. Read again before every ask."""
            counted = study.get_trials(deepcopy=False, states=(*ended, optuna.trial.TrialState.RUNNING))
            return sum(counts(t) for t in counted) < self.n_trials

        with holding(sweep_dir):  # while held, the trials this sweeper asked are its own, queued or running
            template = job(optuna.trial.FixedTrial(first_point(space)))
            if self.in_stacks():
                return self.in_slots(study, space, job, unfinished, more, template)
            if self.launcher_batches():
                return self.batched(study, space, job, unfinished, more)
            return self.in_flight(study, space, job, unfinished, more, template)

    def open_study(self, sweep_dir: Path, url: str, maximize: bool):
        """The sweep's directory claimed and its study created or loaded; a storage that cannot be opened
        leaves nothing behind."""
        import optuna

        created = not sweep_dir.exists()
        claim(sweep_dir)
        try:
            storage = make_storage(url)
        except ConfigError:
            if created:
                sweep_dir.rmdir()
            raise
        # a repeated command continues the sampler's random stream where the stopped sweeper left it (re-seeded,
        # it would draw the first trials' values again)
        saved = sweep_dir / SAMPLER
        sampler = pickle.loads(saved.read_bytes()) if saved.is_file() else \
            SEARCH_SAMPLERS.create(None, kind=self.sampler_kind, seed=self.seed)
        return optuna.create_study(study_name=self.study_name, storage=storage, sampler=sampler,
                                   pruner=make_pruner(self.pruner_cfg), load_if_exists=True,
                                   direction="maximize" if maximize else "minimize")

    def dead_trials(self, study, sweep_dir: Path) -> list:
        """Trials left running by processes that died (see `abandoned`). A run that finished (its
        metrics.json) is told to the study and never launched again; those with a checkpoint are resumed; the
        others are closed as failed (not counted) and their parameters asked again."""
        from optuna.trial import TrialState

        resumable = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not self.abandoned(trial, sweep_dir):
                continue
            run_dir = Path(trial.user_attrs["run_dir"]) if "run_dir" in trial.user_attrs else None
            if run_dir and ended(run_dir):  # it finished; the sweeper died before it heard
                metrics = json.loads((run_dir / "metrics.json").read_text())
                study.tell(trial.number, *outcome_of({**metrics, "objective": metrics.get(self.monitor)}))
            elif run_dir and (run_dir / "last.pt").is_file():
                resumable.append(study._storage.get_trial(trial._trial_id))
            else:  # nothing trained to keep: its directory goes (the summary and TensorBoard show each run once)
                study._storage.set_trial_user_attr(trial._trial_id, "died", True)
                study.tell(trial.number, state=TrialState.FAIL)
                study.enqueue_trial(trial.params)
                if run_dir and run_dir.is_dir():
                    shutil.rmtree(run_dir)
                log.info("trial %d died before its first checkpoint; its parameters are tried again", trial.number)
        return resumable

    def abandoned(self, trial, sweep_dir: Path) -> bool:
        """Whether no live process has `trial` (running in the study): neither its run nor the sweeper that
        asked for it holds its directory. A sweeper sets the trial's sweep_dir, then its run_dir, a moment
        after asking: a trial killed in between has neither. Then on this sweep's own journal only a sweeper
        of this directory can have asked it (it is dead unless the directory is held), while on a shared
        storage another may be asking it this very moment, and is given ASKING_S."""
        attrs = trial.user_attrs
        if "sweep_dir" not in attrs:
            if self.storage_url is None:
                return not held(sweep_dir)
            return (datetime.now() - trial.datetime_start).total_seconds() > ASKING_S
        # a live run, or one of a live sweeper (another on the storage: this one holds its directory only
        # after this check), queued or starting: a run takes its own lock only once its job is set up
        return not (held(Path(attrs["sweep_dir"])) or "run_dir" in attrs and held(Path(attrs["run_dir"])))

    def ask(self, study, space):
        """The next trial, or None where the study has its n_trials already. Sweepers on one storage that ask at
        once may each have seen room for one more; the storage numbers trials atomically (under a lock on the
        study's row, or in the journal's order), so exactly the first n_trials that count are run, and a trial
        numbered beyond them is closed uncounted before anything of it is written."""
        from optuna.trial import TrialState

        trial = study.ask(space)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        (sweep_dir / f"{SAMPLER}.partial").write_bytes(pickle.dumps(study.sampler))
        os.replace(sweep_dir / f"{SAMPLER}.partial", sweep_dir / SAMPLER)
        earlier = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE,
                                                           TrialState.PRUNED, TrialState.FAIL))
        if sum(counts(t) for t in earlier if t.number < trial.number) < self.n_trials:
            return trial
        study._storage.set_trial_user_attr(trial._trial_id, "sweep_dir", str(Path(self.config.hydra.sweep.dir).resolve()))
        study._storage.set_trial_user_attr(trial._trial_id, "beyond_n_trials", True)
        study.tell(trial.number, state=TrialState.FAIL)
        return None

    def in_stacks(self) -> bool:
        """Trials in the slots of stacks in this process: the stack launcher (the default) with one job."""
        return (type(self.launcher).__name__ == "TrainrunStackLauncher" and self.n_jobs == 1
                and self.in_flight_wanted)

    def in_slots(self, study, space, job, unfinished, more, template: list) -> list:
        """`self.slots` trials at once (trainrun/stack/slots.py): each asked trial's job is prepared and held by
        the stack launcher, then trained in the stack of its shape; when one ends it is told and the next
        asked trial takes its slot."""
        from trainrun.stack.grouping import alone_because, splits, stack_key
        from trainrun.stack.launch import returned
        from trainrun.stack.slots import ALONE, Slots

        composer, results, asked = JobComposer(self.hydra_context, self.config), [], {}
        composer.compose(template, 0)

        def fill(n: int) -> list:
            entries = []
            while len(entries) < n and (unfinished or more()):
                trial = unfinished.pop(0) if unfinished else self.ask(study, space)
                if trial is None:
                    break
                overrides = job(trial)
                composed = composer.compose(overrides, trial.number)
                ret, held = self.launcher.hold((trial.number, overrides, composed))
                if held is None:  # it ended at once: a run that had finished, or one that failed to start
                    study.tell(trial.number, *outcome(ret))
                    results.append(ret)
                    continue
                asked[id(held)] = (trial, ret)
                entries.append((ALONE if alone_because(composed) else stack_key(composed), held))
            return entries

        def ended(held, metrics) -> None:
            trial, ret = asked.pop(id(held))
            ret.return_value = returned(held, metrics)
            if not (metrics and metrics.get("stop_reason") == "interrupted"):  # a resume continues it
                study.tell(trial.number, *outcome(ret))
            results.append(ret)

        splitting = [key for key in space if splits(key)]
        print(f"optuna: {self.slots} trials at once in this process (hydra.sweeper.slots), trials of one shape "
              "as one stack" + (f" ({', '.join(splitting)}: a stack per value)" if splitting else "")
              + "; a trial that ends gives its slot to the next", flush=True)
        Slots(self.slots, self.launcher.memory_gb).run(fill, ended)
        return [results]

    def launcher_batches(self) -> bool:
        """Hydra's launchers take a batch and wait for all of it; trainrun runs trials itself unless the
        launcher is one that must place them (submitit: a cluster's queue)."""
        return (self.n_jobs == 1 or not self.in_flight_wanted
                or "submitit" in str(OmegaConf.select(self.config, "hydra.launcher._target_")))

    def batched(self, study, space, job, unfinished, more) -> list:
        """Through Hydra's launcher: n_jobs trials at a time, each batch waited for whole."""
        returns = []
        while unfinished or more():
            trials, unfinished = unfinished[:self.n_jobs], unfinished[self.n_jobs:]
            while len(trials) < self.n_jobs and more() and (trial := self.ask(study, space)) is not None:
                trials.append(trial)
            if not trials:
                break
            results = self.launcher.launch([job(t) for t in trials], initial_job_idx=trials[0].number)
            for trial, result in zip(trials, results):
                study.tell(trial.number, *outcome(result))
            returns.append(results)
        return returns

    def in_flight(self, study, space, job, unfinished, more, template: list) -> list:
        """n_jobs trials in flight at all times, in long-lived worker processes: when one ends, the next
        is asked for and started (loky: joblib's process pool, which pickles the task function as joblib's
        launcher does). `template`: a job shaped as the trials' are, composed through Hydra before the first
        trial is asked, so every trial of that shape, the first too, is composed from it (~10 ms, not ~0.4 s)."""
        from concurrent.futures import FIRST_COMPLETED, wait

        from hydra.core.singleton import Singleton
        from joblib.externals.loky import get_reusable_executor

        threads = max(1, (os.cpu_count() or 1) // self.n_jobs)  # no oversubscription: n_jobs trials share the cores
        pool = get_reusable_executor(max_workers=self.n_jobs, reuse=False, initializer=start_worker,
                                     initargs=(self.hydra_context, self.task_function, Singleton.get_state(), threads))
        # the workers start (python, torch, trainrun: ~4 s here) before the first trial is asked, so a trial's
        # start in the study is when a worker can run it, not when the pool began to start
        wait([pool.submit(os.getpid) for _ in range(self.n_jobs)])
        running, results, composer = {}, [], JobComposer(self.hydra_context, self.config)
        composer.compose(template, 0)
        # one trial more than workers is queued, so a worker that ends one starts the next at once, while
        # this process tells the result and asks for the one after
        while True:
            while len(running) < self.n_jobs + 1 and (unfinished or more()):
                trial = unfinished.pop(0) if unfinished else self.ask(study, space)
                if trial is None:
                    break
                composed = composer.compose(job(trial), trial.number)
                running[pool.submit(execute_trial, pickle.dumps(composed))] = trial
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                trial = running.pop(future)
                result = future.result()
                study.tell(trial.number, *outcome(result))
                results.append(result)
        pool.shutdown(wait=True)
        return [results]


def counts(trial) -> bool:
    """Whether a trial counts toward n_trials: not one that died before its first checkpoint (its parameters are
    asked again), nor one asked beyond n_trials by sweepers asking at once."""
    return not (trial.user_attrs.get("died") or trial.user_attrs.get("beyond_n_trials"))


def short(value) -> str:
    """A sampled value for a run's name: four significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def outcome(result) -> tuple:
    """(value, state) for study.tell, from what the job returned: its metrics, or None when it failed."""
    from optuna.trial import TrialState

    try:
        metrics = result.return_value
    except Exception:  # the job raised: a failed trial, not a failed study
        return None, TrialState.FAIL
    return outcome_of(metrics)


def outcome_of(metrics: dict | None) -> tuple:
    """(value, state) for study.tell from a run's metrics (with `objective`: the monitored one)."""
    from optuna.trial import TrialState

    if not metrics:
        return None, TrialState.FAIL
    if metrics.get("stop_reason") == "pruned":
        return None, TrialState.PRUNED
    value = metrics.get("objective")
    return (value, TrialState.COMPLETE) if value is not None and value == value else (None, TrialState.FAIL)
