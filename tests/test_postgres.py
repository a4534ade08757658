"""The cluster path against a real PostgreSQL server: two sweeper processes, one study, pruning each other.

The server is Debian's `postgresql` (scripts/setup.sh installs it where it can), started here on a Unix
socket in a temporary directory and stopped at the end; the test is skipped, with the reason, where the
binaries or the driver (psycopg, in the `cluster` extra) are absent.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from test_sweep_resume import start

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install 'trainrun[cluster]'")
    base = Path(tempfile.mkdtemp(prefix="trainrun-pg-"))
    # PostgreSQL refuses to run as root: then the server runs as nobody, in a directory it may write
    as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
    os.chmod(base, 0o777)
    data = base / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "trainrun", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                    "-o", f"-k {base} -c listen_addresses=''", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://trainrun@/postgres?host={base}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_two_sweepers_share_one_study_in_postgresql_and_prune_each_others_trials(tmp_path, postgres_url):
    import optuna

    search = ["-m", "hparams_search=optuna", "hydra.sweeper.sampler=random", f"hydra.sweeper.storage='{postgres_url}'",
              "hydra.sweeper.study_name=shared", "hydra.sweeper.pruner.n_startup_trials=2",
              "hydra.sweeper.pruner.n_warmup_steps=1", "regularization.dropout=0", "model.hidden=[256,256]",
              "trainer.epochs=4", "data.subset=300", "logger.enabled=false"]  # lr alone decides: 1e-7 cannot learn
    # two sweepers at once (as two cluster workers would start): they create the tables together, and share the trials
    workers = [start([*search, "hydra.sweeper.n_trials=8", f"hydra.sweeper.seed={seed}", "optimizer.lr=choice(1e-7,1e-2)",
                      f"hydra.sweep.dir={tmp_path / name}"], tmp_path) for seed, name in ((0, "a"), (1, "b"))]
    for worker in workers:
        _, err = worker.communicate(timeout=500)
        assert worker.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    ended = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(ended) == 8  # n_trials is the study's total, whichever sweeper ran them
    assert {Path(t.user_attrs["sweep_dir"]).name for t in ended} == {"a", "b"}  # both worked on the one study
    assert any(t.state.name == "COMPLETE" and t.params["optimizer.lr"] == 1e-2 for t in ended)

    # a third sweeper, with only the hopeless lr: it has no completed trial of its own, so its trials can only
    # be pruned by the others' results
    third = start([*search, "hydra.sweeper.n_trials=10", "optimizer.lr=1e-7", f"hydra.sweep.dir={tmp_path / 'c'}"],
                  tmp_path)
    _, err = third.communicate(timeout=500)
    assert third.returncode == 0, err[-2000:]
    mine = [t for t in optuna.load_study(study_name="shared", storage=postgres_url).trials
            if Path(t.user_attrs["sweep_dir"]).name == "c"]
    assert len(mine) == 2 and all(t.state.name == "PRUNED" for t in mine)


def ready(_) -> bool:
    import trainrun.sweeps.search  # noqa: F401  (and optuna, sqlalchemy, psycopg through it when opening)
    import optuna  # noqa: F401

    return True


def open_storage_at(url: str, start: float) -> str:
    """In a process of its own: wait for the common start, then open the storage as a sweeper or a run does."""
    import time

    from trainrun.sweeps.search import make_storage

    time.sleep(max(0.0, start - time.time()))
    make_storage(url)
    return "opened"


def test_workers_opening_a_new_database_at_once_all_open_it(postgres_url):
    """Optuna creates its tables on first use; four processes at the same instant race to create them (the
    losers' CREATE TABLE meets the winner's table). Each, on a fresh database, must open the storage. (The race
    is rare here: the rule is held deterministically by test_search's test_a_lost_race_to_create_...)"""
    import time
    from concurrent.futures import ProcessPoolExecutor

    import psycopg

    base = postgres_url.split("host=")[1]
    with psycopg.connect(host=base, user="trainrun", dbname="postgres", autocommit=True) as admin:
        for n in range(3):
            admin.execute(f"CREATE DATABASE race{n}")
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(ready, range(4)))  # the processes up, with their imports, before the race
        for n in range(3):
            url = postgres_url.replace("/postgres?", f"/race{n}?")
            start = time.time() + 1.0
            assert list(pool.map(open_storage_at, [url] * 4, [start] * 4)) == ["opened"] * 4
