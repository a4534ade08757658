"""A search's trials in the slots of stacks (hparams_search=optuna with the stack launcher, the default): a freed
slot takes the next trial at once, which trains as it would alone; the study gets exactly n_trials; a search
stopped and repeated ends as if never stopped."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import cli
from test_stack import events
from test_sweep_resume import final_metrics, start
from trainrun.sweeps.sweep import ended

pytestmark = pytest.mark.timeout(600)

# lrs from far too small to far too large: the median pruner stops some trials after their first epochs
SEARCH = ["-m", "hparams_search=random", "hydra.sweeper.n_trials=7", "hydra.sweeper.slots=3", "trainer.epochs=4",
          "data.subset=500", "model.hidden=[64]", "regularization.dropout=0.1",
          "optimizer.lr=tag(log, interval(1e-5, 10.0))", "hydra.sweeper.pruner.n_startup_trials=1",
          "hydra.sweeper.pruner.n_warmup_steps=0", "trainer.log_every_n_steps=1", "trainer.early_stopping.enabled=false"]


def study(sweep: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal")))
    return optuna.load_study(study_name="trainrun", storage=storage)


def started_order(sweep: Path) -> list[str]:
    """The trials' runs by when each started (its .hydra record) and ended (metrics.json)."""
    return sorted((p.parents[1].name for p in sweep.glob("*/.hydra/config.yaml")),
                  key=lambda name: (sweep / name / ".hydra" / "config.yaml").stat().st_mtime_ns)


def test_a_freed_slot_takes_the_next_trial_which_trains_as_it_would_alone(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli(*SEARCH, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "optuna: 3 trials at once in this process" in done.stdout and "a stack per value" not in done.stdout
    trials = study(sweep).trials
    states = [t.state for t in trials]
    assert len(trials) == 7 and states.count(optuna.trial.TrialState.RUNNING) == 0
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [t.state for t in trials]  # the test needs a slot freed by pruning
    runs = {json.loads((p.parent / "metrics.json").read_text())["stop_reason"] for p in sweep.glob("*/metrics.json")}
    assert len(list(sweep.glob("*/metrics.json"))) == 7 and "pruned" in runs
    # a trial asked after a pruned one ended took its slot: its run trains as the same run alone
    first_pruned_end = min((sweep / Path(t.user_attrs["run_dir"]).name / "metrics.json").stat().st_mtime_ns
                           for t in pruned)
    later = [t for t in trials if (Path(t.user_attrs["run_dir"]) / ".hydra" / "config.yaml").stat().st_mtime_ns
             > first_pruned_end]
    assert later
    trial = later[0]
    run = Path(trial.user_attrs["run_dir"])
    overrides = [o for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
                 if not o.startswith(("trainer.pruning.", "hydra.", "hparams_search="))]
    alone = cli(*overrides, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'alone'}", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-2000:]
    ours, theirs = events(run)["step/loss"], events(tmp_path / "alone")["step/loss"]
    assert len(theirs) >= 5
    for a, b in zip(ours, theirs):  # the first epoch's every step: from its own initialization and batches
        assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.slow
def test_a_search_in_slots_stopped_and_repeated_ends_as_the_uninterrupted_one(tmp_path):
    deterministic = [*SEARCH, "trainer.deterministic=true", "trainer.checkpoint.every_n_steps=1"]
    reference = cli(*deterministic, f"hydra.sweep.dir={tmp_path / 'reference'}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    sweep = tmp_path / "sweep"
    proc = start([*deterministic, f"hydra.sweep.dir={sweep}"], tmp_path)
    deadline = time.monotonic() + 300
    while len(list(sweep.glob("*/metrics.json"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the search ended before it could be stopped"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)  # every trial in flight checkpoints at the same step
    proc.wait()
    unfinished = [p.parent.name for p in sweep.glob("*/last.pt") if not ended(p.parent)]
    assert unfinished  # stopped at the same step, each with its checkpoint
    resumed = cli(*deterministic, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(unfinished)} interrupted (resuming)" in resumed.stdout
    assert final_metrics(sweep) == final_metrics(tmp_path / "reference")  # the same trials, ended the same way
    ours = sorted((t.number, t.state, t.value, tuple(sorted(t.params.items()))) for t in study(sweep).trials
                  if not t.user_attrs.get("died"))
    theirs = sorted((t.number, t.state, t.value, tuple(sorted(t.params.items())))
                    for t in study(tmp_path / "reference").trials)
    assert ours == theirs


def test_the_keys_that_split_stacks_are_read_from_the_schema():
    from trainrun.stack.grouping import splits

    # the default search space: model.hidden splits (one stack per value), the others stack
    assert [splits(k) for k in ("model.hidden", "optimizer.lr", "regularization.dropout")] == [True, False, False]
    # a whole section declared stackable (the scheduler), a field inside one that is not (amsgrad), an unknown key
    assert [splits(k) for k in ("scheduler.gamma", "optimizer.amsgrad", "trainer.seed", "model.nope")] == \
        [False, True, False, True]


def test_trials_that_cannot_stack_train_alone_in_their_turn_and_the_search_ends_with_n_trials(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli("-m", "hparams_search=random", "hydra.sweeper.n_trials=5", "hydra.sweeper.slots=2",
               "optimizer=choice(adam,adadelta)", "model.hidden=choice([32],[64])", "trainer.epochs=2",
               "data.subset=300", "logger.enabled=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(model.hidden, optimizer: a stack per value)" in done.stdout
    trials = study(sweep).trials
    assert len(trials) == 5 and all(t.state.is_finished() for t in trials)
    assert {t.params["optimizer"] for t in trials} == {"adam", "adadelta"}  # adadelta's have no stacked step
    assert len(list(sweep.glob("*/metrics.json"))) == 5


@pytest.mark.parametrize("value, message", [
    ("0", "hydra.sweeper.slots=0 is invalid: expected a positive integer, or null"),
    ("-3", "hydra.sweeper.slots=-3 is invalid"),
    ("abc", "hydra.sweeper.slots: Value 'abc' of type 'str' could not be converted to Integer"),
])
def test_a_bad_slot_count_is_refused_in_one_line_before_the_search(tmp_path, value, message):
    sweep = tmp_path / "sweep"
    done = cli("-m", "hparams_search=optuna", f"hydra.sweeper.slots={value}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not sweep.exists()
