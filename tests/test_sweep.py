"""Sweeps: the summary of every multirun, failed runs kept in it, parallel launchers, seeds, trainrun-report."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli

TINY = ["trainer.epochs=2", "data.subset=200", "logger.enabled=false"]


def sweep_dir(base):
    dirs = list(base.glob("outputs/multirun/*/*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def summary(base) -> list[dict]:
    with open(sweep_dir(base) / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # everyday tier under 10 min: 12 s of a worker here
def test_grid_sweep_summary_is_sorted_marks_the_best_and_keeps_a_failed_run(tmp_path):
    # a layer to freeze that the built model lacks: only building tells, so those runs fail (a bad config value
    # is refused before the sweep starts)
    result = cli("-m", "optimizer=sgd,adam", "model.freeze=[fc1],[nope]", *TINY, cwd=tmp_path)
    assert result.returncode == 1  # one sweep, two failed runs: reported, not hidden
    assert "error: 2 of 4 runs failed" in result.stderr and "Traceback" not in result.stderr
    rows = summary(tmp_path)
    assert [r["state"] for r in rows] == ["complete", "complete", "failed", "failed"]
    losses = [float(r["val/loss"]) for r in rows[:2]]
    assert losses == sorted(losses) and rows[0]["best"] == "True" and rows[1]["best"] == "False"
    assert all("model.freeze: no layer 'nope'" in r["error"] for r in rows[2:])
    assert "★ 1" in result.stdout
    assert "run 1_optimizer-sgd_freeze-nope failed: model.freeze: no layer 'nope'" in result.stdout.replace("\n", "")
    assert (sweep_dir(tmp_path) / "summary.md").read_text().count("\n") >= 6


@pytest.mark.slow  # everyday tier under 10 min: 14 s of a worker here
def test_seeds_give_mean_and_spread_per_configuration(tmp_path):
    result = cli("-m", "trainer.seed=0,1,2", "optimizer=sgd,adam", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    md = (sweep_dir(tmp_path) / "summary.md").read_text()
    assert "| configuration | runs | complete | val/loss mean | val/loss std | test/acc mean | test/acc std |" in md
    assert "| optimizer=sgd | 3 | 3 |" in md and "| optimizer=adam | 3 | 3 |" in md


@pytest.mark.parametrize("launcher", [pytest.param("joblib", marks=pytest.mark.slow),  # parallel is joblib x 2
                                      "parallel", "submitit_local"])
@pytest.mark.slow  # everyday tier under 10 min: 54 s of a worker here
def test_parallel_launchers_share_the_cores(tmp_path, launcher):
    result = cli("-m", f"hydra/launcher={launcher}", "optimizer=sgd,adam", *TINY, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = summary(tmp_path)
    assert sorted(r["state"] for r in rows) == ["complete", "complete"]
    if launcher in ("joblib", "parallel"):  # n_jobs workers split the cores: no oversubscription
        import os

        from omegaconf import OmegaConf
        n_jobs = OmegaConf.load(sweep_dir(tmp_path) / "multirun.yaml").hydra.launcher.n_jobs
        cores = os.cpu_count() or 1
        threads = max(1, cores // (n_jobs if n_jobs > 0 else cores))
        logs = [p.read_text() for p in sweep_dir(tmp_path).glob("*/trainrun.log")]
        assert len(logs) == 2 and all(f"torch threads: {threads}" in log for log in logs)


@pytest.mark.slow  # everyday tier under 10 min: 13 s of a worker here
def test_report_shows_the_summary_again(tmp_path):
    assert cli("-m", "optimizer=sgd,adam", *TINY, cwd=tmp_path).returncode == 0
    directory = sweep_dir(tmp_path)
    (directory / "summary.csv").unlink()
    report = subprocess.run([sys.executable, "-c", "from trainrun.sweeps.summary import main; main()", str(directory)],
                            capture_output=True, text=True)
    assert report.returncode == 0 and "sorted by val/loss (min)" in " ".join(report.stdout.split())  # the title may wrap
    assert len(summary(tmp_path)) == 2
    missing = subprocess.run([sys.executable, "-c", "from trainrun.sweeps.summary import main; main()", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


def optuna_states(sweep: Path) -> dict:
    import optuna

    from trainrun.sweeps.search import make_storage

    study = optuna.load_study(study_name="trainrun", storage=make_storage(f"journal:{sweep / 'optuna.journal'}"))
    return {t.number: (t.state.name, t.params) for t in study.trials}


SEARCH = ["hparams_search=optuna", "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=8",
          "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=1",
          "optimizer.lr=choice(1e-7,1e-2)", "regularization.dropout=0", "model.hidden=[256,256]",
          "trainer.epochs=4", "data.subset=300", "logger.enabled=false"]  # lr alone decides: 1e-7 cannot learn


@pytest.mark.slow  # everyday tier under 10 min: 17 s of a worker here
def test_optuna_search_prunes_the_clearly_worse_trials(tmp_path):
    result = cli("-m", *SEARCH, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = sweep_dir(tmp_path)
    states = optuna_states(sweep)
    assert len(states) == 8
    pruned = [params for state, params in states.values() if state == "PRUNED"]
    complete = [params for state, params in states.values() if state == "COMPLETE"]
    assert pruned and len(complete) >= 2
    assert all(p["optimizer.lr"] == 1e-7 for p in pruned)  # only the hopeless learning rate is cut short
    rows = summary(tmp_path)
    assert sorted(r["state"] for r in rows).count("pruned") == len(pruned)
    assert rows[0]["state"] == "complete" and "optimizer.lr=0.01" in rows[0]["overrides"]
    assert "trainer.pruning" not in rows[0]["overrides"]


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh; submitit's path is
@pytest.mark.parametrize("launcher", ["parallel"])  # test_search's submitit test (70 s more here, past CI's budget)
def test_optuna_trials_in_parallel_processes_share_one_study(tmp_path, launcher):
    result = cli("-m", *SEARCH, "hydra.sweeper.n_jobs=2", f"hydra/launcher={launcher}", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted({r["state"] for r in summary(tmp_path)}) in (["complete"], ["complete", "pruned"])
    states = optuna_states(sweep_dir(tmp_path))
    assert len(states) == 8 and {s for s, _ in states.values()} <= {"COMPLETE", "PRUNED"}
    assert "COMPLETE" in {s for s, _ in states.values()}


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh
def test_optuna_study_in_an_rdb_url(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    result = cli("-m", *SEARCH, "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={url}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="trainrun", storage=url)
    assert len(study.trials) == 4 and study.best_trial.params["optimizer.lr"] == 0.01


@pytest.mark.parametrize("bad,message", [
    ("hydra.sweeper.sampler=bogus", "unknown hydra.sweeper.sampler 'bogus'; choose one of: random, tpe"),
    ("hydra.sweeper.pruner.kind=bogus", "hydra.sweeper.pruner.kind=bogus is invalid: expected one of median, successive_halving, hyperband, none"),
    ("hydra.sweeper.n_trials=0", "must be positive"),
])
def test_bad_search_settings_are_one_clear_line(tmp_path, bad, message):
    result = cli("-m", "hparams_search=optuna", bad, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: ") and message in result.stderr


@pytest.mark.parametrize("kind,pruner,knob,value", [
    ("median", "MedianPruner", "_n_startup_trials", 3), ("successive_halving", "SuccessiveHalvingPruner", "_min_resource", 2),
    ("hyperband", "HyperbandPruner", "_min_resource", 2), ("none", "NopPruner", None, None)])
def test_each_pruner_is_built_with_its_knobs(kind, pruner, knob, value):
    from trainrun.sweeps.search import make_pruner

    built = make_pruner({"kind": kind, "n_startup_trials": 3, "n_warmup_steps": 1, "min_resource": 2})
    assert type(built).__name__ == pruner
    if knob:
        assert getattr(built, knob) == value


@pytest.mark.parametrize("kind,sampler", [("tpe", "TPESampler"), ("random", "RandomSampler")])
def test_each_search_sampler_is_built(kind, sampler):
    from trainrun.registry import SEARCH_SAMPLERS

    assert type(SEARCH_SAMPLERS.create(None, kind=kind, seed=0)).__name__ == sampler


def test_a_config_error_in_one_run_of_a_sweep_is_one_line_without_a_traceback(tmp_path):
    result = cli("-m", "optimizer=nesterov", "optimizer.momentum=0,0.9", *TINY, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr  # a failed run is reported, not hidden
    assert "optimizer=nesterov: Nesterov momentum requires a momentum and zero dampening" in result.stderr
    assert sorted(r["state"] for r in summary(tmp_path)) == ["complete", "failed"]


def test_a_bad_search_space_is_one_line(tmp_path):
    result = cli("-m", "hparams_search=optuna", "optimizer.lr=tag(log, interval(-1, 0.1))", *TINY, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot search optimizer.lr=tag(log, interval(-1, 0.1))" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_a_sweep_reads_at_a_glance_in_80_columns(tmp_path):
    """One line per finished run, then a summary whose names and values are whole at 80 columns (rich's width
    without a terminal); `logger.console=full` shows each run whole."""
    result = cli("-m", "optimizer=sgd,momentum,adam", "init=xavier_uniform,kaiming_normal", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    ends = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    assert len(ends) == 6 and all(", val/loss " in line and " at epoch " in line for line in ends), ends
    assert "╭─ trainrun" not in result.stdout and not any(line.startswith("epoch ") for line in result.stdout.splitlines())
    table = result.stdout[result.stdout.index("sweep "):]
    assert "…" not in table and "val/" in table and "kaiming_normal" in table and "xavier_uniform" in table
    assert all(len(line) <= 80 for line in table.splitlines()[1:]), table
    full = cli("-m", "optimizer=sgd,adam", "logger.console=full", *TINY, cwd=tmp_path)
    assert full.returncode == 0 and full.stdout.count("╭─ trainrun") == 2, full.stdout[-2000:]
