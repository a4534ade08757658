"""tune=lr_find: the learning-rate range test, on any model, data and optimizer; what it cannot do, refused."""
from __future__ import annotations

import json

import pytest

from conftest import cli, read_metrics, train_run


@pytest.mark.parametrize("args", [[], ["model=cnn", "optimizer=sgd"], ["data=polynomial", "optimizer=rmsprop"]])
def test_the_range_test_writes_its_curve_and_a_suggestion(tmp_path, args):
    result = train_run(tmp_path, ["tune=lr_find", "tune.steps=60", *args])
    found = json.loads((tmp_path / "lr_find.json").read_text())
    lrs, losses = found["lr"], found["loss"]
    assert len(lrs) == len(losses) >= 10 and all(a < b for a, b in zip(lrs, lrs[1:]))  # exponential sweep
    assert lrs[0] == pytest.approx(1e-7) and (tmp_path / "lr_find.png").stat().st_size > 5_000
    suggestion = found["suggested_lr"]
    assert suggestion is not None and lrs[0] < suggestion < found["min_loss_lr"] * 1.0001
    assert result["suggested_lr"] == suggestion and read_metrics(tmp_path)["stop_reason"] == "lr_find"


@pytest.mark.slow  # three full digits runs
def test_the_suggestion_trains_better_than_lrs_far_from_it(tmp_path):
    """On digits with SGD: the suggested lr beats one 100x below it after the same short training."""
    train_run(tmp_path / "find", ["tune=lr_find", "optimizer=sgd"], tiny=False)
    lr = json.loads((tmp_path / "find" / "lr_find.json").read_text())["suggested_lr"]
    good = train_run(tmp_path / "good", ["optimizer=sgd", f"optimizer.lr={lr}", "trainer.epochs=3"], tiny=False)
    slow = train_run(tmp_path / "slow", ["optimizer=sgd", f"optimizer.lr={lr / 100}", "trainer.epochs=3"], tiny=False)
    assert good["val/loss"] < slow["val/loss"]


@pytest.mark.parametrize("args,message", [
    (["optimizer=lbfgs"], "tune=lr_find: optimizer=lbfgs evaluates the loss several times per step"),
    (["scheduler=plateau"], "tune=lr_find: scheduler=plateau moves the lr on a metric"),
    (["tune.min_lr=1", "tune.max_lr=0.1"], "tune.min_lr=1 must be below tune.max_lr=0.1"),
    (["tune.steps=3"], "tune.steps=3 is invalid"),
])
def test_what_a_range_test_cannot_do_is_one_line(tmp_path, args, message):
    result = cli("tune=lr_find", *args, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # everyday tier under 10 min: 13 s of a worker here
def test_the_printed_command_trains_with_the_suggestion(tmp_path):
    result = cli("tune=lr_find", "trainer.epochs=1", "model.freeze=[fc1]", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lr = json.loads((tmp_path / "r" / "lr_find.json").read_text())["suggested_lr"]
    # a list override is printed as typed (rich took [fc1] for markup and printed `model.freeze=`)
    assert f"train with: trainrun trainer.epochs=1 model.freeze=[fc1] optimizer.lr={lr:.3g}" in result.stdout
