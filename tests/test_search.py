"""Optuna searches: trials in flight without a batch barrier, resumed to exactly n_trials, one HParams experiment."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli
from test_sweep_resume import fingerprint, start

pytestmark = pytest.mark.timeout(600)


def study(sweep: Path):
    import optuna

    from trainrun.sweeps.search import make_storage

    return optuna.load_study(study_name="trainrun", storage=make_storage(f"journal:{sweep / 'optuna.journal'}"))


# trials of very different lengths: 1 or 40 epochs, drawn at random
UNEVEN = ["-m", "hparams_search=random", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=2", "hydra.sweeper.seed=3",
          "hydra.sweeper.pruner.kind=none", "trainer.epochs=choice(1,40)", "data.subset=300", "logger.enabled=false",
          "optimizer.lr=0.001", "regularization.dropout=0", "model.hidden=[64]", "trainer.early_stopping.enabled=false"]


def in_flight_at_asks(sweep: Path) -> list[int]:
    """For each trial after the first two, how many trials were in flight (asked, not yet told) when the
    sweeper asked for it: Optuna's own start and completion times of each trial."""
    trials = sorted(study(sweep).trials, key=lambda t: t.datetime_start)
    return [sum(t.datetime_start <= trial.datetime_start < t.datetime_complete for t in trials if t is not trial)
            for trial in trials[2:]]


@pytest.mark.slow  # everyday tier under 10 min: 24 s of a worker here
def test_n_jobs_trials_are_in_flight_at_all_times(tmp_path):
    """A trial ending frees its worker for the next at once, while the other worker's long trial still runs;
    in batches a short trial's worker waits for the long one of its batch."""
    result = cli(*UNEVEN, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    trials = study(tmp_path / "s").trials
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    epochs = [t.params["trainer.epochs"] for t in trials]
    assert 1 in epochs and 40 in epochs  # the lengths do differ
    # the order of events, not wall time: a new trial is asked for while others still run (one is queued
    # ahead, so a freed worker starts it at once); in batches the sweeper asks only once a batch has ended
    asks = in_flight_at_asks(tmp_path / "s")
    assert min(asks) >= 1
    assert max(asks) >= 2  # both workers busy while the next trial is asked: one worker alone never gets here


@pytest.mark.slow  # submitit's local executor starts a process per job
def test_the_submitit_path_goes_through_hydras_launcher_in_batches(tmp_path):
    """hydra/launcher=submitit_* keeps Hydra's batches (a cluster's queue places the jobs): the third trial is
    asked for only once both of the first batch have ended. The README says so and gives the in-flight path."""
    result = cli(*UNEVEN, "hydra/launcher=submitit_local", "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={tmp_path / 's'}",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert min(in_flight_at_asks(tmp_path / "s")) == 0


@pytest.mark.slow  # a kill and a resume: ~30 s
def test_a_killed_search_resumed_by_repeating_it_ends_with_n_trials(tmp_path):
    args = [*UNEVEN, "trainer.checkpoint.every_n_steps=1", f"hydra.sweep.dir={tmp_path / 's'}"]
    proc = start(args, tmp_path)
    deadline = time.monotonic() + 300
    while not (len(list((tmp_path / "s").glob("*/metrics.json"))) >= 2
               and [p for p in (tmp_path / "s").glob("*/last.pt") if not (p.parent / "metrics.json").exists()]):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ended = {p.parent.name: fingerprint(p.parent) for p in (tmp_path / "s").glob("*/metrics.json")}
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming the search" in again.stdout
    trials = study(tmp_path / "s").trials
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 8  # n_trials is the total, not a number to add
    died = [t for t in trials if t.user_attrs.get("died")]
    assert all(t.state.name == "FAIL" for t in died)
    assert len(trials) == 8 + len(died)
    for name, files in ended.items():
        assert fingerprint(tmp_path / "s" / name) == files
    assert len({t.user_attrs["run_dir"] for t in counted}) == 8  # each trial in a directory of its own


def hparams_content(run_dir: Path) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}


@pytest.mark.slow  # everyday tier under 10 min: 14 s of a worker here
def test_a_sweep_writes_one_hparams_experiment_of_its_swept_keys(tmp_path):
    sweep = tmp_path / "s"
    result = cli("-m", "optimizer=sgd,adam", "optimizer.lr=0.01,0.1", "trainer.epochs=1", "data.subset=200",
                 "logger.log_graph=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    experiment = hparams_content(sweep)["_hparams_/experiment"].experiment
    declared = {h.name: h for h in experiment.hparam_infos}
    assert list(declared) == ["optimizer", "optimizer.lr"]  # the swept keys, nothing constant
    assert [v.string_value for v in declared["optimizer"].domain_discrete.values] == ["adam", "sgd"]
    assert sorted(v.number_value for v in declared["optimizer.lr"].domain_discrete.values) == [0.01, 0.1]
    assert {"summary/test_acc", "summary/val_loss_at_best_epoch"} <= {m.name.tag for m in experiment.metric_infos}
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [r.name for r in runs] == ["0_optimizer-sgd_lr-0.01", "1_optimizer-sgd_lr-0.1",
                                      "2_optimizer-adam_lr-0.01", "3_optimizer-adam_lr-0.1"]
    for run in runs:
        content = hparams_content(run)
        assert "_hparams_/experiment" not in content  # each run writes its session only
        session = content["_hparams_/session_start_info"].session_start_info
        name = run.name.split("_", 1)[1]
        assert session.hparams["optimizer"].string_value in name
        assert f"lr-{session.hparams['optimizer.lr'].number_value:g}" in name  # a number, compared as one


@pytest.mark.slow  # everyday tier under 10 min: 12 s of a worker here
def test_an_optuna_search_shows_no_categorical_warning_and_declares_intervals(tmp_path):
    result = cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.epochs=1", "data.subset=200",
                 "logger.log_graph=false", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Choices for a categorical distribution" not in result.stderr + result.stdout
    declared = {h.name: h for h in hparams_content(tmp_path / "s")["_hparams_/experiment"].experiment.hparam_infos}
    assert declared["optimizer.lr"].domain_interval.min_value == pytest.approx(1e-4)
    assert declared["optimizer.lr"].domain_interval.max_value == pytest.approx(1e-1)
    assert [v.string_value for v in declared["model.hidden"].domain_discrete.values] == ["[128]", "[256,256]", "[512,256]"]


@pytest.mark.parametrize("url", ["nosuchdb://x", "postgresql+psycopg://x@/none?host=/nonexistent"])
def test_a_storage_that_cannot_be_opened_is_one_line_and_leaves_nothing(tmp_path, url):
    result = cli("-m", "hparams_search=optuna", f"hydra.sweeper.storage='{url}'", f"hydra.sweep.dir={tmp_path / 's'}",
                 cwd=tmp_path)
    assert result.returncode == 2 and f"the Optuna storage {url} cannot be opened" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s").exists()


def test_a_lost_race_to_create_the_tables_is_tried_again_and_other_errors_are_one_line(tmp_path, monkeypatch):
    """Sweepers and runs starting together on a new database race to create Optuna's tables: the loser's CREATE
    TABLE fails with PostgreSQL's DuplicateTable, a ProgrammingError, not an IntegrityError (seen in
    test_postgres's two sweepers). The loser opens the storage on its next try; any other error is one line."""
    import optuna
    from sqlalchemy.exc import ProgrammingError

    from trainrun.errors import ConfigError
    from trainrun.sweeps.search import make_storage

    real, failures = optuna.storages.RDBStorage, []

    def racing(url, *args, **kwargs):
        if len(failures) < 2:
            failures.append(url)
            raise ProgrammingError("CREATE TABLE studies (...)", {},
                                   Exception('relation "studies" already exists'))
        return real(url, *args, **kwargs)
    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert isinstance(make_storage(url), real) and len(failures) == 2

    def broken(url, *args, **kwargs):
        raise ProgrammingError("SELECT 1", {}, Exception("permission denied for schema public"))
    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    with pytest.raises(ConfigError, match="cannot be opened: .*permission denied"):
        make_storage(url)


def test_a_trial_another_live_sweeper_is_starting_is_not_taken_for_dead(tmp_path):
    """Its run directory exists before the run locks it; its sweeper's lock on its sweep directory says it lives
    (two sweepers on one PostgreSQL study once closed each other's trials in that window)."""
    import optuna
    from optuna.trial import TrialState

    from hydra_plugins.trainrun_optuna.optuna_sweeper import TrainrunOptunaSweeper
    from trainrun.sweeps.sweep import holding

    study = optuna.create_study()
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1.0)})
    other = tmp_path / "other"
    (other / "0" / ".hydra").mkdir(parents=True)  # started by Hydra, not yet locked by the run
    trial.set_user_attr("sweep_dir", str(other))
    trial.set_user_attr("run_dir", str(other / "0"))
    sweeper = object.__new__(TrainrunOptunaSweeper)  # dead_trials reads only the study
    with holding(other):  # the other sweeper lives
        assert sweeper.dead_trials(study, tmp_path / "mine") == []
        assert study.trials[0].state == TrialState.RUNNING and (other / "0").is_dir()
    assert sweeper.dead_trials(study, tmp_path / "mine") == []  # its sweeper is gone: nothing trained to resume
    assert study.trials[0].state == TrialState.FAIL and not (other / "0").exists()
    assert study.trials[1].system_attrs["fixed_params"] == study.trials[0].params  # asked again


def test_sweepers_that_all_saw_room_for_one_more_trial_run_exactly_n_trials(tmp_path):
    """Two sweepers on one storage each read 7 of n_trials=8 and ask at once (seen in CI: 9 trials ended).
    The storage numbers trials atomically: the one numbered within n_trials runs, the other is closed uncounted;
    a trial that died before its checkpoint (asked again) leaves room for one more."""
    import optuna
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    from hydra_plugins.trainrun_optuna.optuna_sweeper import TrainrunOptunaSweeper, counts

    space = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0)}
    study = optuna.create_study()
    for _ in range(6):
        study.tell(study.ask(space), 1.0)
    dying = study.ask(space)
    sweepers = []
    for name in ("a", "b"):
        sweeper = object.__new__(TrainrunOptunaSweeper)
        sweeper.n_trials, sweeper.config = 8, OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / name)}}})
        (tmp_path / name).mkdir()  # claimed, as a sweeper's directory is before it asks
        sweepers.append(sweeper)
    first, second = (sweeper.ask(study, space) for sweeper in sweepers)  # both had seen 7 counted trials
    assert first is not None and first.number == 7 and second is None
    beyond = study.trials[8]
    assert beyond.state == TrialState.FAIL and not counts(beyond) and beyond.user_attrs["sweep_dir"].endswith("b")
    assert sum(counts(t) for t in study.trials) == 8 and sweepers[0].ask(study, space) is None
    dying.set_user_attr("died", True)  # closed as dead_trials closes it: its parameters are asked again
    study.tell(dying, state=TrialState.FAIL)
    assert sweepers[1].ask(study, space) is not None and sweepers[0].ask(study, space) is None


@pytest.mark.parametrize("attrs", [[], ["sweep_dir"]])
def test_a_trial_whose_sweeper_was_killed_between_asking_and_starting_it_is_asked_again(tmp_path, monkeypatch, attrs):
    """A sweeper killed right after study.ask (before the trial's run_dir, or any attribute, was set) left it
    RUNNING: counted as running, it kept the resumed search one trial short of n_trials (seen: 7 of 8). With
    no attribute, only this sweep's own journal makes it surely dead; on a shared storage, after ASKING_S."""
    import optuna
    from optuna.trial import TrialState

    from hydra_plugins.trainrun_optuna import optuna_sweeper
    from trainrun.sweeps.sweep import holding

    def asked():
        study = optuna.create_study()
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1.0)})
        for name in attrs:
            trial.set_user_attr(name, str(tmp_path / "sweep"))
        return study

    sweeper = object.__new__(optuna_sweeper.TrainrunOptunaSweeper)
    sweeper.storage_url = None  # the sweep's own journal
    (tmp_path / "sweep").mkdir()
    with holding(tmp_path / "sweep"):  # its sweeper lives (the command repeated while it runs): still its
        study = asked()
        assert sweeper.dead_trials(study, tmp_path / "sweep") == [] and study.trials[0].state == TrialState.RUNNING
    study = asked()
    assert sweeper.dead_trials(study, tmp_path / "sweep") == []
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["died"]
    assert study.trials[1].system_attrs["fixed_params"] == study.trials[0].params  # asked again

    sweeper.storage_url = "postgresql+psycopg://shared"  # another sweeper may be asking it this very moment
    study = asked()
    sweeper.dead_trials(study, tmp_path / "sweep")
    assert study.trials[0].state == (TrialState.FAIL if attrs else TrialState.RUNNING)
    monkeypatch.setattr(optuna_sweeper, "ASKING_S", 0)
    sweeper.dead_trials(study, tmp_path / "sweep")
    assert study.trials[0].state == TrialState.FAIL


def test_a_trial_composed_from_the_first_trials_config_equals_hydras_own_compose():
    """The sweeper composes a trial that differs from the first only in values by setting them on a copy
    (Hydra's compose cost a short trial's length): the config, its overrides record and override_dirname are
    those Hydra composes."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf

    import trainrun.cli  # noqa: F401  (its resolvers and sweepers)
    from trainrun.sweeps.compose import JobComposer

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path("pkg://trainrun.conf"))
    config = loader.load_configuration("config", ["hydra.sweep.dir=/tmp/s", "trainer.epochs=5"], RunMode.MULTIRUN)
    context = HydraContext(config_loader=loader, callbacks=None)

    def job(number, lr, hidden):
        return ["hparams_search=optuna", "trainer.epochs=5", f"optimizer.lr={lr}", f"model.hidden={hidden}",
                f"trainer.pruning.trial={number}", f"hydra.sweep.subdir={number}_lr-{lr}"]

    fast = JobComposer(context, config)
    fast.compose(job(0, 0.1, "[128]"), 0)
    copied = fast.compose(job(1, 0.0123, "[512,256]"), 1)
    assert len(fast.templates) == 1  # the second trial took the copy
    composed = JobComposer(context, config).compose(job(1, 0.0123, "[512,256]"), 1)
    assert OmegaConf.to_container(copied) == OmegaConf.to_container(composed)
    assert copied.optimizer.lr == 0.0123 and list(copied.model.hidden) == [512, 256]
    regrouped = fast.compose([*job(2, 0.1, "[128]")[1:], "optimizer=adam"], 2)  # a group: Hydra composes it
    assert regrouped.optimizer.kind == "adam" and len(fast.templates) == 2
    again = fast.compose([*job(3, 0.5, "[64]")[1:], "optimizer=adam"], 3)  # that shape's own template now
    assert len(fast.templates) == 2 and again.optimizer.lr == 0.5 and again.optimizer.kind == "adam"


@pytest.mark.parametrize("chdir", [False, True])
def test_a_trial_runs_as_hydras_run_job_runs_a_launchers_job(tmp_path, monkeypatch, chdir):
    """The workers run a trial with their own lean copy of Hydra's run_job: the same .hydra/ record, the
    same config, Hydra config, environment and working directory inside the job, the same outcome."""
    import pickle

    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job, setup_globals
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf

    import trainrun.cli  # noqa: F401  (its resolvers and sweepers)
    from hydra_plugins.trainrun_optuna import optuna_sweeper

    setup_globals()  # Hydra's resolvers (now), as in a worker
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path("pkg://trainrun.conf"))
    overrides = ["optimizer.lr=0.02", "hparams_search=optuna", f"hydra.job.chdir={chdir}", "++hydra.job.env_set.TRAINRUN_SEEN=yes"]
    config = loader.load_configuration("config", [f"hydra.sweep.dir={tmp_path}", *overrides], RunMode.MULTIRUN)
    context = HydraContext(config_loader=loader, callbacks=Callbacks(config))
    monkeypatch.chdir(tmp_path)

    def task(cfg):
        """What a job sees; a failing job's exception is its outcome."""
        seen.append((OmegaConf.to_container(cfg), OmegaConf.to_container(HydraConfig.get(), resolve=True),
                     os.environ.get("TRAINRUN_SEEN"), os.getcwd()))
        if cfg.optimizer.lr > 0.05:
            raise ValueError("too high")
        return {"objective": cfg.optimizer.lr}

    monkeypatch.setitem(optuna_sweeper.WORKER, "hydra_context", context)
    monkeypatch.setitem(optuna_sweeper.WORKER, "task_function", task)
    outcomes = {}
    for lr in (0.02, 0.1):
        for runner in ("hydra", "trial"):
            composed = loader.load_sweep_config(config, [f"optimizer.lr={lr}", *overrides[1:],
                                                         f"hydra.sweep.subdir={runner}-{lr}"])
            seen = []
            if runner == "hydra":
                result = run_job(task_function=task, config=composed, job_dir_key="hydra.sweep.dir",
                                 job_subdir_key="hydra.sweep.subdir", hydra_context=context)
            else:
                result = optuna_sweeper.execute_trial(pickle.dumps(composed))
            assert seen, result._return_value
            assert os.getcwd() == str(tmp_path)  # back where it was
            outcomes[runner, lr] = result, seen[0]
        (hydra_result, hydra_seen), (trial_result, trial_seen) = outcomes["hydra", lr], outcomes["trial", lr]
        assert trial_seen[2] == "yes" and trial_seen[3] == (str(tmp_path / f"trial-{lr}") if chdir else str(tmp_path))
        same = [str(tmp_path / f"hydra-{lr}"), str(tmp_path / f"trial-{lr}"), f"hydra-{lr}", f"trial-{lr}"]
        unify = lambda text: text.replace(same[0], same[1]).replace(same[2], same[3])  # noqa: E731
        assert unify(repr(hydra_seen)) == repr(trial_seen)
        for record in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            ran, trial = (tmp_path / f"{name}-{lr}" / ".hydra" / record for name in ("hydra", "trial"))
            assert unify(ran.read_text()) == trial.read_text(), record
        assert (trial_result.status, trial_result.task_name, trial_result.overrides) == (
            hydra_result.status, hydra_result.task_name, hydra_result.overrides)
        assert trial_result.working_dir == unify(hydra_result.working_dir)
    assert outcomes["trial", 0.02][0].return_value == {"objective": 0.02}
    assert isinstance(outcomes["trial", 0.1][0]._return_value, ValueError)
