"""Every option of every config group in conf/ (the catalog) trains: a tiny real run each.

Options are read from conf/, so an option added later is covered without touching this file.
What each option does is asserted in test_effects.py.
"""
from __future__ import annotations

import math

import pytest

from conftest import MNIST_DIR, options, train_run

# the setting each group's options run in; a few options need a particular data or model
SETUP = {
    "norm": {"instance": ["model=cnn"]},
    "optimizer": {"lbfgs": ["data.batch_size=full"]},
    "augmentation": {"*": ["model=cnn"]},
    "loss": {"*": []},
    "model": {"cnn1d": ["data=mnist1d", "data.subset=200"], "polynomial": ["data=polynomial"]},
    "data": {"mnist1d": ["model=cnn1d"], "polynomial": ["model=polynomial"]},
}
SKIP = {("augmentation", "color"), ("data", "mnist"), ("data", "fashion_mnist"), ("data", "cifar10"),
        # the user's own: they need the user's files or code, and train in test_folder, test_your_data, test_custom
        ("data", "folder"), ("data", "table"), ("data", "arrays"),
        *((group, "custom") for group in ("data", "model", "activation", "optimizer", "scheduler", "loss"))}
CASES = [(group, option) for group in ("activation", "init", "norm", "optimizer", "scheduler", "regularization",
                                       "augmentation", "loss", "model", "data")
         for option in options(group) if (group, option) not in SKIP]


def overrides_for(group: str, option: str) -> list[str]:
    choice = f"{group}=[{option}]" if group == "augmentation" else f"{group}={option}"
    extra = SETUP.get(group, {})
    return [choice, *extra.get(option, extra.get("*", []))]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_trains(tmp_path, group, option):
    metrics = train_run(tmp_path, overrides_for(group, option))
    assert metrics["epochs_run"] == 2 and metrics["stop_reason"] == "completed"
    assert math.isfinite(metrics["test/loss"]) and math.isfinite(metrics["val/loss"])
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "last.pt").is_file()


@pytest.mark.slow  # everyday tier under 10 min: 14 s of a worker here
@pytest.mark.parametrize("loss", ["mse", "l1", "huber"])
def test_regression_losses_fit_the_polynomial(tmp_path, loss):
    metrics = train_run(tmp_path, ["data=polynomial", "model=mlp", f"loss={loss}", "trainer.epochs=30",
                                   "data.subset=null", "optimizer.lr=0.01"])
    assert metrics["test/mae"] < 0.15, metrics  # sin(x) has mean |y| ~ 0.64: the fit is real


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="../shared/data/mnist is not here")
def test_mnist_loader_reads_the_real_test_set(tmp_path):
    from trainrun.data import load
    from conftest import make_config
    import torch

    cfg = make_config(["data=mnist", f"data.root={MNIST_DIR}", "data.test_set_only=true", "data.normalize=none"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) + len(data.val) + len(data.test) == 10_000
    assert len(data.test) == 2_000  # test_fraction 0.2 of the 10,000 real images
    assert data.train.x.dtype == torch.uint8  # stored as bytes; a batch is float in [0, 1]
    x = data.fetch(data.train, slice(None))[0]
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0
    assert 0.12 < float(x.mean()) < 0.14  # MNIST's mean pixel is ~0.13
    assert sorted(data.train.y.unique().tolist()) == list(range(10))


@pytest.mark.slow  # 8,000 real images; data=folder's real-PNG test covers MNIST in the everyday suite
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="../shared/data/mnist is not here")
def test_mlp_learns_real_mnist(tmp_path):
    metrics = train_run(tmp_path, ["data=mnist", f"data.root={MNIST_DIR}", "data.test_set_only=true",
                                   "trainer.epochs=2"], tiny=False)
    assert metrics["test/acc"] > 0.9, metrics


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10", "mnist"])
def test_missing_torchvision_dataset_offline_is_a_clear_error(tmp_path, dataset):
    from trainrun.errors import DataError

    with pytest.raises(DataError, match=f"data={dataset}: no dataset under .*data.root"):
        train_run(tmp_path, [f"data={dataset}", f"data.root={tmp_path}", "data.download=false"])


def test_mnist1d_has_the_published_split(tmp_path):
    import torch
    from trainrun.data import load
    from conftest import make_config

    cfg = make_config(["data=mnist1d", "data.val_fraction=0"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    assert (len(data.train), len(data.test)) == (4000, 1000)
    assert data.input_shape == (1, 40) and data.num_classes == 10
