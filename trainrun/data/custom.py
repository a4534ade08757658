"""data=custom: a user's function returning arrays, tensors or torch Datasets (conf/data/custom.yaml)."""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError
from .arrays import as_splits
from .types import Datasets


def custom(cfg, g, params, _target_=None, num_workers=None, num_classes=None):
    """A function of the user's (data._target_) returning (x, y) or (x, y, x_test, y_test), as tensors or arrays,
    or torch Datasets of (input, target) pairs: one (carved into splits), (train, test), (train, val, test),
    or a dict with train (and val, test)."""
    from torch.utils.data import Dataset

    from ..usercode import call, resolve

    made = call(resolve(_target_, "data"), dict(params), {"seed": int(torch.randint(2**31, (1,), generator=g))})
    source = f"data._target_={_target_}"
    if isinstance(made, dict) and all(isinstance(d, Dataset) for d in made.values()):
        unknown = sorted(set(made) - {"train", "val", "test"})
        if unknown or "train" not in made:
            raise ConfigError(f"{source} returned a dict of Datasets: expected keys train (and val, test), "
                              f"got {', '.join(made)}")
        return Datasets(made["train"], made.get("val"), made.get("test"), _workers(num_workers), num_classes)
    if isinstance(made, Dataset) or (isinstance(made, (tuple, list)) and made
                                     and all(isinstance(d, Dataset) for d in made)):
        made = [made] if isinstance(made, Dataset) else list(made)
        if len(made) > 3:
            raise ConfigError(f"{source} returned {len(made)} Datasets: expected train[, val], test")
        train, *rest = made
        val, test = {0: (None, None), 1: (None, *rest), 2: tuple(rest)}[len(rest)]
        return Datasets(train, val, test, _workers(num_workers), num_classes)
    if not isinstance(made, (tuple, list)) or len(made) not in (2, 4):
        raise ConfigError(f"{source} must return (x, y), (x, y, x_test, y_test) or torch Datasets, "
                          f"not {type(made).__name__}")
    return as_splits(source, made)


def _workers(num_workers: int | None) -> int:
    """data.num_workers; null: one per core, up to 4 (more rarely helps a single training process)."""
    return min(4, os.cpu_count() or 1) if num_workers is None else num_workers
