"""Debugging a run: trainer.overfit_batches (can the model fit a few batches at all?) and trainer.profile (where
a step's time goes)."""
from __future__ import annotations

import json

import pytest

from conftest import read_metrics, train_run


def test_the_default_mlp_fits_one_batch_and_says_so(tmp_path):
    metrics = train_run(tmp_path, ["trainer.overfit_batches=1", "trainer.epochs=100", "augmentation=[noise]"],
                        tiny=False)
    assert metrics["overfit_fits"] is True and metrics["train/loss"] < 0.05
    assert metrics["epochs_run"] == 100  # early stopping is off: the same batch every epoch, to the end
    assert read_metrics(tmp_path)["overfit_batches"] == 1


def test_a_model_that_cannot_learn_is_said_to_have_a_bug(tmp_path, capsys):
    from rich.console import Console

    from conftest import make_config
    from trainrun.run.console import RunConsole
    from trainrun.run.trainer import train

    cfg = make_config(["trainer.overfit_batches=1", "trainer.epochs=30", "optimizer.lr=1e-9", "logger.enabled=false"])
    shown = Console(width=200, record=True)
    metrics = train(cfg, tmp_path, RunConsole(shown))
    assert metrics["overfit_fits"] is False and metrics["train/loss"] > 1.0
    said = shown.export_text()
    assert "overfit_batches=1: the training loss only reached" in said and "a model that cannot fit them has a bug" in said


def test_overfit_batches_trains_on_the_same_rows_in_the_same_batches(tmp_path):
    from conftest import make_config
    from trainrun.run.build import build
    from trainrun.run.distributed import World

    parts = build(make_config(["trainer.overfit_batches=2", "data.batch_size=16", "augmentation=[flip]"]), World())
    assert len(parts.data.train) == 32 and parts.augment is None and not parts.stopper.enabled
    first, second = list(parts.batches.epoch(1)), list(parts.batches.epoch(2))
    assert [list(map(int, b)) if not isinstance(b, slice) else b for b in first] == \
           [list(map(int, b)) if not isinstance(b, slice) else b for b in second]


def test_profile_writes_a_trace_and_a_table_of_operators(tmp_path):
    metrics = train_run(tmp_path, ["trainer.profile=3", "trainer.epochs=3"])
    assert metrics["stop_reason"] in ("completed", "early_stopping")
    trace = json.loads((tmp_path / "profile.json").read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert {"aten::addmm", "aten::mm"} & names and any(name.startswith("aten::_fused_adam") for name in names)
    table = (tmp_path / "profile.txt").read_text()
    assert "Self CPU" in table and "aten::" in table


@pytest.mark.parametrize("knob", ["trainer.overfit_batches=-1", "trainer.profile=-2", "trainer.overfit_batches=1.5"])
def test_bad_debugging_values_are_refused(knob):
    from conftest import make_config
    from trainrun.errors import ConfigError

    with pytest.raises(Exception) as refused:
        make_config([knob])
    assert knob.split("=")[0] in str(refused.value) or isinstance(refused.value, ConfigError)


def test_fast_dev_run_runs_every_stage_once_and_keeps_no_directory(tmp_path):
    from conftest import cli

    result = cli("trainer.fast_dev_run=true", "model=cnn", "augmentation=[flip]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    said = " ".join(result.stdout.split())
    for stage in ("train: 1 step, train/loss", "validate: one batch, val/loss", "test: one batch, test/loss",
                  "checkpoint: last.pt and best.pt written and read back into the model",
                  "predict: 359 inputs of the test split, through the saved run",
                  "fast_dev_run: every stage ran in"):
        assert stage in said, (stage, result.stdout)
    assert not (tmp_path / "outputs").exists()
    refused = cli("trainer.fast_dev_run=true", "tune=lr_find", cwd=tmp_path)
    assert refused.returncode == 2 and "trainer.fast_dev_run runs every stage once and keeps no run: not with tune" \
        in refused.stderr


def test_a_profile_longer_than_the_run_says_how_many_steps_it_got(tmp_path):
    from rich.console import Console

    from conftest import make_config
    from trainrun.run.console import RunConsole
    from trainrun.run.trainer import train

    for steps, expected in ((2, "the run ended within the 2 warm-up steps; nothing was profiled"),
                            (6, "profile of 4 steps (the run ended before the 100 asked)")):
        shown = Console(width=300, record=True)
        train(make_config(["trainer.profile=100", f"trainer.max_steps={steps}", "logger.enabled=false"]),
              tmp_path / str(steps), RunConsole(shown))
        assert expected in shown.export_text()
        assert (tmp_path / str(steps) / "profile.json").is_file() == (steps == 6)
