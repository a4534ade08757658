"""`trainrun` end to end through a subprocess, as a user meets it."""
from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, cli, options, read_metrics

GROUPS = ("activation", "augmentation", "data", "init", "loss", "model", "norm", "optimizer", "regularization", "scheduler")


def only_run_dir(base: Path) -> Path:
    runs = [p.parent for p in base.glob("outputs/*/*/metrics.json") if "multirun" not in p.parts]
    assert len(runs) == 1, runs
    return runs[0]


def test_default_run_end_to_end(tmp_path):
    result = cli(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    run_dir = only_run_dir(tmp_path)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}", f"{run_dir.parent.name}/{run_dir.name}")
    metrics = read_metrics(run_dir)
    assert metrics["test/acc"] > 0.9 and metrics["stop_reason"] in ("early_stopping", "completed")
    assert {"train/loss", "val/loss", "val/acc", "test/loss", "best_epoch", "epochs_run", "wall_time_s"} <= set(metrics)
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "last.pt", "best.pt", "trainrun.log"):
        assert (run_dir / name).exists(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert "data=digits" in out and "model=mlp" in out and "device=cpu" in out  # the panel
    assert "test/acc" in out and f"tensorboard --logdir {run_dir}" in out.replace("\n", "")
    if metrics["stop_reason"] == "early_stopping":
        assert "early stopping: val/loss has not improved" in out
    assert "Traceback" not in result.stderr


def test_overrides_reach_the_run(tmp_path):
    result = cli("model=cnn", "activation=leaky_relu", "init=kaiming_normal", "norm=batch", "optimizer=nesterov",
                 "optimizer.lr=0.05", "scheduler=onecycle", "regularization=dropout", "augmentation=[crop,flip]",
                 "trainer.epochs=2", "logger.enabled=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path)
    composed = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "kind: nesterov" in composed and "lr: 0.05" in composed and "crop:" in composed and "flip:" in composed
    assert read_metrics(run_dir)["epochs_run"] == 2


@pytest.mark.slow  # everyday tier under 10 min: 13 s of a worker here
def test_multirun_sweep_gives_one_directory_per_run(tmp_path):
    result = cli("-m", "optimizer=sgd,adam", "init=xavier_uniform,kaiming_normal", "trainer.epochs=1",
                 "data.subset=200", "logger.log_graph=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = sorted(tmp_path.glob("outputs/multirun/*/*/*/metrics.json"))
    assert len(runs) == 4
    # named after what they vary, numbered in the grid's order
    assert sorted(p.parent.name for p in runs) == ["0_optimizer-sgd_init-xavier_uniform", "1_optimizer-sgd_init-kaiming_normal",
                                                  "2_optimizer-adam_init-xavier_uniform", "3_optimizer-adam_init-kaiming_normal"]
    seen = {(c["optimizer"]["kind"], c["init"]["kind"]) for c in
            (_yaml(p.parent / ".hydra" / "config.yaml") for p in runs)}
    assert seen == {("sgd", "xavier_uniform"), ("sgd", "kaiming_normal"), ("adam", "xavier_uniform"), ("adam", "kaiming_normal")}
    assert all(list(p.parent.glob("events.out.tfevents.*")) for p in runs)


def _yaml(path):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


def test_help_lists_every_group_and_option_without_torch(tmp_path):
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in GROUPS:
        line = next(l for l in result.stdout.splitlines() if l.startswith(f"{group}:"))
        assert [o.strip() for o in line.split(":", 1)[1].split(",")] == options(group)
    probe = subprocess.run([sys.executable, "-c", "import sys, trainrun.cli; sys.argv=['trainrun','--help']\n"
                            "try:\n    trainrun.cli.main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.strip().endswith("False")
    assert not (tmp_path / "outputs").exists()


def test_debug_flag_shows_the_traceback(tmp_path):
    result = cli("--debug", "optimizer.lr=-1", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_pip_install_ships_the_configs(tmp_path):
    """A regular (non-editable) install carries conf/ and runs from any directory."""
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert (target / "trainrun" / "conf" / "optimizer" / "nesterov.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -S: no .pth files, so the checkout's editable install cannot shadow the installed copy
    env = {"PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-S", "-m", "trainrun", "--cfg", "job", "optimizer=nesterov"],
                            cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "kind: nesterov" in result.stdout
    where = subprocess.run([sys.executable, "-S", "-c", "import trainrun; print(trainrun.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True).stdout
    assert where.startswith(str(target))


@pytest.mark.slow  # everyday tier under 10 min: 29 s of a worker here
@pytest.mark.parametrize("env", [{}, {"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_without_a_terminal_each_epoch_is_one_clean_line(tmp_path, env):
    """SLURM logs, CI, `| tee`: 80 columns, no terminal. One line per epoch, no control codes."""
    result = cli("trainer.epochs=3", "data.subset=300", "logger.enabled=false", cwd=tmp_path,
                 env={"COLUMNS": "80", **env})
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3 and all(line.endswith("s") and "val/acc" in line for line in epochs)
    after = [result.stdout.splitlines()[result.stdout.splitlines().index(e) + 1] for e in epochs[:-1]]
    assert all(line.startswith("epoch ") for line in after)  # no stray "0.02s" fragment after an epoch
    run_dir = next(tmp_path.glob("outputs/*/*"))
    assert f"run directory: {run_dir}" in result.stdout.splitlines()  # the whole path on one line


def test_a_run_directory_that_holds_a_run_is_never_written_into(tmp_path):
    run_dir = tmp_path / "run"
    assert cli("trainer.epochs=1", "data.subset=200", f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
    again = cli("trainer.epochs=3", "data.subset=200", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"{run_dir} already holds a run; continue it with: trainrun trainer.resume={run_dir}" in again.stderr
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # .hydra/ included: nothing changed


@pytest.mark.slow  # three processes at once
def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "trainrun", "trainer.epochs=1", "data.subset=200",
                               "logger.enabled=false"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    runs = sorted(tmp_path.glob("outputs/*/*"))
    assert len(runs) == 3 and all((r / "metrics.json").is_file() for r in runs)


