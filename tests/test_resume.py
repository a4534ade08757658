"""Runs that survive: SIGKILL and resume bit for bit, graceful SIGTERM, atomic and checked checkpoints."""
from __future__ import annotations

import importlib.util
import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from omegaconf import OmegaConf

from conftest import ROOT, cli, make_config, quiet_console, read_metrics, train_run

pytestmark = pytest.mark.timeout(600)  # every wait here has a deadline

spec = importlib.util.spec_from_file_location("chaos", ROOT / "scripts" / "chaos.py")
chaos = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chaos)  # the same kill-and-resume cycle as scripts/chaos.py


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    base = tmp_path_factory.mktemp("chaos")
    proc = chaos.trainrun(f"hydra.run.dir={base / 'reference'}")
    assert proc.wait() == 0, proc.stderr.read()
    return base


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh
def test_sigkill_at_random_points_then_resume_is_bit_identical(reference):
    (reference / "cycle").mkdir()
    sent, same_weights, same_metrics = chaos.cycle(reference / "cycle", kills=3, rng=random.Random(7))
    assert sent >= 1 and same_weights and same_metrics  # a fast machine may finish before the third kill
    victim = reference / "cycle" / "victim"
    for tag in ("step/lr", "step/loss", "loss/val", "acc/val"):  # no step missing, none twice, same values
        assert scalars(victim, tag) == scalars(reference / "reference", tag), tag


@pytest.mark.slow  # everyday tier under 10 min: 38 s of a worker here
def test_sigkill_before_the_first_checkpoint_resumes_by_starting_over_bit_identically(reference):
    (reference / "early").mkdir()
    in_time, same_weights, same_metrics = chaos.killed_before_first_checkpoint(reference / "early")
    assert in_time, "the process wrote a checkpoint before it could be killed"
    assert same_weights and same_metrics


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh
def test_a_completed_run_resumed_with_more_epochs_continues_where_it_ended(tmp_path):
    args = ["trainer.deterministic=true", "data.subset=300", "logger.enabled=false", "trainer.early_stopping.patience=100"]
    straight = cli(*args, "trainer.epochs=4", f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    short = cli(*args, "trainer.epochs=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert straight.returncode == 0 and short.returncode == 0, short.stderr
    longer = cli(f"trainer.resume={tmp_path / 'run'}", "trainer.epochs=4", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr
    assert "completed 2 epochs; continuing to trainer.epochs=4" in longer.stdout.replace("\n", "")
    ours, theirs = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "straight")
    assert ours["epochs_run"] == 4 and ours["steps"] == theirs["steps"]
    assert {k: v for k, v in ours.items() if k != "wall_time_s"} == {k: v for k, v in theirs.items() if k != "wall_time_s"}
    again = cli(f"trainer.resume={tmp_path / 'run'}", cwd=tmp_path)  # the run's own epochs now: nothing left
    assert again.returncode == 0 and "already finished (completed)" in again.stdout.replace("\n", "")


@pytest.mark.slow  # everyday tier under 10 min: 34 s of a worker here
def test_a_resume_on_another_thread_count_says_results_are_equal_up_to_rounding(tmp_path):
    args = ["data.subset=200", "logger.enabled=false", "trainer.early_stopping.patience=100"]
    one = {"OMP_NUM_THREADS": "1"}
    first = cli(*args, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=one)
    assert first.returncode == 0, first.stderr
    same = cli(f"trainer.resume={tmp_path / 'run'}", "trainer.epochs=2", cwd=tmp_path, env=one)
    assert same.returncode == 0 and "up to rounding" not in same.stdout  # the same count: bit for bit
    other = cli(f"trainer.resume={tmp_path / 'run'}", "trainer.epochs=3", cwd=tmp_path, env={"OMP_NUM_THREADS": "2"})
    assert other.returncode == 0, other.stderr
    said = " ".join(other.stdout.split())
    assert "resumed on 2 threads, where it ran on 1" in said and "up to rounding, not bit for bit" in said


def test_a_sweep_job_restarted_before_its_first_checkpoint_keeps_its_launchers_thread_share(tmp_path):
    from trainrun.run import distributed
    from trainrun.run.trainer import resumed

    # what Hydra wrote before the job started: the composed config, where trainer.threads is still unset
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(make_config(["data.subset=200"]), tmp_path / ".hydra" / "config.yaml")
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- data.subset=200\n")
    cfg = make_config(["data.subset=200", f"trainer.resume={tmp_path}"])
    cfg.trainer.threads = 1  # the parallel launcher's share, set by the command line before train()
    cfg, saved = resumed(cfg, tmp_path, {"data.subset": "200"}, quiet_console(), distributed.environment())
    assert saved == {"step": 0}  # started over: bit for bit only on the thread count the sweep ran on
    assert cfg.trainer.threads == 1


@pytest.mark.parametrize("scheduler", ["onecycle", pytest.param("cosine", marks=pytest.mark.slow)])
def test_resuming_a_run_length_schedule_with_more_epochs_is_refused(tmp_path, scheduler):
    run = cli(f"scheduler={scheduler}", "trainer.epochs=2", "data.subset=200", "logger.enabled=false",
              f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    before = (tmp_path / "run" / "last.pt").read_bytes()
    result = cli(f"trainer.resume={tmp_path / 'run'}", "trainer.epochs=4", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"scheduler={scheduler} is shaped by the run's length (trainer.epochs=2 when it started)" in result.stderr
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


@pytest.mark.slow  # everyday tier under 10 min: 15 s of a worker here
def test_resume_into_another_run_directory_is_refused(tmp_path):
    assert cli("trainer.epochs=1", "data.subset=200", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path).returncode == 0
    result = cli(f"trainer.resume={tmp_path / 'run'}", f"hydra.run.dir={tmp_path / 'elsewhere'}", cwd=tmp_path)
    assert result.returncode == 2 and "trainer.resume continues in the run's own directory" in result.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_nonfinite_metrics_are_null_in_strict_json(tmp_path):
    train_run(tmp_path, ["optimizer=sgd", "optimizer.lr=1e6", "trainer.early_stopping.stop_on_nonfinite=false",
                         "trainer.epochs=2"])
    text = (tmp_path / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert metrics["stop_reason"] == "diverged" and "train/loss" in metrics["nonfinite"]
    assert metrics["train/loss"] is None


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh
def test_sigterm_checkpoints_says_how_to_resume_and_resumes_exactly(reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = chaos.trainrun(f"hydra.run.dir={run_dir}")
    chaos.wait_for_new_checkpoint(proc, run_dir / "last.pt", 0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    stopped = read_metrics(run_dir)
    assert stopped["stop_reason"] == "interrupted"
    assert not list(run_dir.glob("*.tmp"))
    resumed = subprocess.run([sys.executable, "-m", "trainrun", *chaos.RUN, f"trainer.resume={run_dir}"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert chaos.compare(reference / "reference", run_dir) == (True, True)


def test_sigint_message_names_the_resume_command(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "trainrun", "trainer.epochs=50", "data.subset=null",
                             "trainer.checkpoint.every_n_epochs=1",
                             "trainer.early_stopping.enabled=false", f"hydra.run.dir={tmp_path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chaos.wait_for_new_checkpoint(proc, tmp_path / "last.pt", 0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"trainrun trainer.resume={tmp_path}" in out.replace("\n", "")
    assert "Traceback" not in err
    assert torch.load(tmp_path / "last.pt", weights_only=True)["stop_reason"] == "interrupted"


def test_a_crash_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from trainrun.run import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def dies_half_way(obj, f):
        f.write(b"\x00" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", dies_half_way)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device; the previous checkpoint is intact"):
        checkpoint.save_atomic({"step": 2}, path)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_corrupt_checkpoint_is_refused_and_left_alone(tmp_path):
    train_run(tmp_path / "run", [])
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])
    truncated = last.read_bytes()
    result = cli(f"trainer.resume={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unreadable (truncated or corrupt" in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert last.read_bytes() == truncated and (tmp_path / "run" / "best.pt").is_file()


def test_checkpoints_load_weights_only(tmp_path):
    """A checkpoint that would run code when unpickled is refused, not executed."""
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    train_run(tmp_path / "run", [])
    (tmp_path / "run" / "last.pt").write_bytes(pickle.dumps({"model": Payload()}))
    result = cli(f"trainer.resume={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and "unreadable" in result.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("schedule, expected", [
    # every 60 s: a short run writes at the end of its first epoch (so a kill never loses it all), then at the end
    ([], [("best.pt", 1), ("last.pt", 4), ("best.pt", 4), ("last.pt", 16)]),
    (["trainer.checkpoint.every_n_epochs=2"], [("best.pt", 1), ("last.pt", 4), ("best.pt", 2), ("last.pt", 8),
                                               ("best.pt", 4), ("last.pt", 16)]),
    (["trainer.checkpoint.every_n_steps=3"], [("last.pt", 3), ("best.pt", 1), ("last.pt", 6), ("best.pt", 2),
                                              ("last.pt", 9), ("best.pt", 3), ("last.pt", 12), ("last.pt", 15),
                                              ("best.pt", 4), ("last.pt", 16)]),
    (["trainer.checkpoint.every_n_seconds=1e-9"], [("last.pt", s) for s in range(1, 4)] + [("best.pt", 1)]
     + [("last.pt", s) for s in range(4, 8)] + [("best.pt", 2)] + [("last.pt", s) for s in range(8, 12)]
     + [("best.pt", 3)] + [("last.pt", s) for s in range(12, 16)] + [("best.pt", 4), ("last.pt", 16)]),
])
def test_checkpoints_follow_their_schedule_and_best_pt_travels_with_them(tmp_path, monkeypatch, schedule, expected):
    """4 epochs of 4 steps, each epoch better than the last: which file is written after which step (last.pt)
    or for which epoch (best.pt, written only when it changed)."""
    from trainrun.run import checkpoint

    written = []
    real_save = checkpoint.BackgroundWriter.save

    def recording_save(self, state, path, copy=True, previous=None):
        written.append((path.name, state["step"] if path.name == "last.pt" else state["epoch"]))
        return real_save(self, state, path, copy, previous)

    monkeypatch.setattr(checkpoint.BackgroundWriter, "save", recording_save)
    train_run(tmp_path, ["data.subset=256", "data.batch_size=64", "trainer.epochs=4", "optimizer.lr=0.01",
                         "trainer.early_stopping.monitor=train/loss", *schedule])
    assert written == expected
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 4


def test_resume_refuses_another_configuration(tmp_path):
    train_run(tmp_path / "run", [])
    result = cli(f"trainer.resume={tmp_path / 'run'}", "optimizer.lr=0.5", cwd=tmp_path)
    assert result.returncode == 2
    assert "this run was trained with optimizer.lr=0.001, not 0.5" in result.stderr


@pytest.mark.slow  # everyday tier under 10 min: 18 s of a worker here
def test_resume_last_picks_the_newest_run_and_a_finished_run_is_left_as_is(tmp_path):
    first = cli("trainer.epochs=1", "data.subset=200", "logger.enabled=false", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = next(tmp_path.glob("outputs/*/*"))
    before = read_metrics(run_dir)
    again = cli("trainer.resume=last", cwd=tmp_path)
    assert again.returncode == 0 and "already finished (completed)" in again.stdout.replace("\n", "")
    assert read_metrics(run_dir) == before and len(list(tmp_path.glob("outputs/*/*"))) == 1


def test_resume_last_without_runs_is_a_clear_error(tmp_path):
    result = cli("trainer.resume=last", cwd=tmp_path)
    assert result.returncode == 2 and "trainer.resume=last: no run under" in result.stderr


def test_an_unwritable_output_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the run directory would go")
    result = cli(f"hydra.run.dir={blocker}/run", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot write") and blocker.read_text().startswith("a file")


def test_truncated_dataset_file_is_a_clear_error(tmp_path):
    from trainrun.errors import DataError

    good = ROOT.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    if not good.is_file():
        pytest.skip("../shared/data/mnist is not here")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(good.read_bytes()[:5000])
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes((good.parent / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is truncated or corrupt"):
        train_run(tmp_path / "run", ["data=mnist", f"data.root={tmp_path}", "data.test_set_only=true"])


def test_a_corrupt_generated_dataset_cache_is_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TRAINRUN_DATA", str(tmp_path))
    cache = tmp_path / "mnist1d" / "mnist1d_5000_seed42.npz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not an npz file")
    with caplog.at_level("WARNING", logger="trainrun"):
        metrics = train_run(tmp_path / "run", ["data=mnist1d", "model=cnn1d"])
    assert "unreadable; generating it again" in caplog.text and metrics["stop_reason"] == "completed"


def test_divergence_keeps_the_best_checkpoint_and_is_recorded(tmp_path):
    # the lr grows 1000x per epoch: epoch 1 learns, later epochs blow up
    metrics = train_run(tmp_path, ["optimizer=sgd", "optimizer.lr=0.05", "scheduler=exponential",
                                   "scheduler.gamma=1000", "trainer.epochs=6", "data.subset=null"])
    assert metrics["stop_reason"] == "diverged" and metrics["best_epoch"] >= 1
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == metrics["best_epoch"]
    assert metrics["test/acc"] > 0.5  # measured with the restored best weights


def test_divergence_in_a_sweep_is_reported_not_fatal(tmp_path):
    result = cli("-m", "optimizer=sgd", "optimizer.lr=1e9,0.05", "trainer.epochs=2", "data.subset=200",
                 "logger.enabled=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reasons = sorted(json.loads(p.read_text())["stop_reason"] for p in tmp_path.glob("outputs/multirun/*/*/*/metrics.json"))
    assert reasons == ["completed", "diverged"]
