"""Load, keep the chosen classes, split (seeded), normalize with train statistics, and place the data where
they fit: on the training device, in host memory, memory-mapped from disk, or streamed from a user's Datasets."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import pickle
import random
import weakref

import numpy as np
import torch

from ..check import check_inputs
from ..config import DataConfig, data_home, values_of
from ..errors import ConfigError, DataError
from ..registry import DATASETS, NORMALIZERS
from .stream import DatasetSplit, DiskSplit, host_budget_bytes, memory_map
from .normalize import Identity
from .table import TableEncoding, TableRows
from .types import Data, Datasets, Loaded, Split

log = logging.getLogger("trainrun")


STATISTICS_SAMPLE = 4096  # a torch Dataset's normalization statistics come from this many train samples


class Shared:
    """Data a run of this process loaded, for the next runs that load the same (a sweep's, a stack's): the
    tensors loaded and held once, not once a run (a stack of 16 runs held 16 copies). Kept while a run uses them
    (a stack's runs of four seeds: four data, each shared by its seed's runs), and the last loaded also after
    (a sweep's next run). Each run gets its own Data record over the shared splits (a run may replace its splits
    or memory format, never the tensors: batches are gathered or sliced from them, augmented out of place). Not
    shared: streamed splits, which plan their own batches, and data whose loader drew from the process's random
    generators (a run alone would start training from the states it left)."""

    def __init__(self):
        self.in_use: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # key -> data a record shares
        self.last: Data | None = None

    def get(self, key: str) -> Data | None:
        data = self.in_use.get(key)
        return None if data is None else dataclasses.replace(data, shares=data)

    def keep(self, key: str, data: Data, drew: bool) -> Data:
        if drew or not all(type(s) is Split for s in (data.train, data.val, data.test)):
            return data
        self.in_use[key] = self.last = data
        return dataclasses.replace(data, shares=data)


SHARED = Shared()


def load(cfg: DataConfig, seed: int, device: torch.device, prenormalize: bool, statistics: dict | None = None) -> Data:
    """Load, split (seeded), normalize with train statistics, and put where the data fit: on `device`,
    in (pinned) host memory, or memory-mapped from disk; a user's torch Datasets stream through a DataLoader.

    With `prenormalize`, the normalization is applied once to the stored tensors and Data.normalize
    is the identity; otherwise (augmentation runs on raw pixels) it is applied per batch. `statistics`: a
    pretrained run's saved normalization, used instead of fitting one where the inputs have its shape.
    The split is drawn with data.split_seed, or `seed` (the run's) where that is null. The same data loaded
    again in this process (the next run of a sweep) share the tensors (Shared).
    """
    seed = seed if cfg.split_seed is None else cfg.split_seed
    values = {k: v for k, v in values_of(cfg).items() if k != "split_seed"}  # in `seed` now
    key = json.dumps([values, seed, str(device), prenormalize, statistics], sort_keys=True, default=str)
    shared = SHARED.get(key)
    if shared is not None:
        return shared
    before = random_states()
    data = _load(cfg, seed, device, prenormalize, statistics)
    return SHARED.keep(key, data, drew=not same_states(before, random_states()))


def random_states() -> tuple:
    return torch.get_rng_state(), pickle.dumps(np.random.get_state()), random.getstate()


def same_states(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and a[1:] == b[1:]


def _load(cfg: DataConfig, seed: int, device: torch.device, prenormalize: bool, statistics: dict | None) -> Data:
    g = torch.Generator().manual_seed(seed)
    loaded = DATASETS.create(cfg, cfg, g)
    if isinstance(loaded, Datasets):
        return _dataset_data(cfg, loaded, g, device, statistics)
    loaded = loaded if isinstance(loaded, Loaded) else Loaded(*loaded)
    if cfg.classes is not None:
        loaded = only_classes(loaded, list(cfg.classes))
    train, val, test = _split_rows(cfg, g, len(loaded.y),
                                   None if loaded.x_val is None else len(loaded.y_val),
                                   None if loaded.x_test is None else len(loaded.y_test), loaded.y)
    if cfg.per_class is not None:
        train = per_class(loaded.y, torch.arange(len(loaded.y)) if train is None else train, cfg.per_class)
    inputs = fit_inputs(loaded, train)
    # before any statistic is fitted: one NaN would make the statistics, and so every row, NaN
    check_inputs(cfg.kind, loaded, TableEncoding.feature_names(inputs))
    parts = [(loaded.x, loaded.y, train), (loaded.x_val, loaded.y_val, val), (loaded.x_test, loaded.y_test, test)]
    parts = [(loaded.x, loaded.y, rows) if x is None else (x, y, rows) for x, y, rows in parts]  # carved from x
    y_train = loaded.y if train is None else loaded.y[train]
    task = "classification" if y_train.dtype == torch.int64 else "regression"
    all_y = [y if rows is None else y[rows] for _, y, rows in parts]
    num_outputs = int(torch.cat([all_y[0], all_y[2]]).max()) + 1 if task == "classification" else y_train.shape[1]
    nbytes = sum(x.numel() * x.element_size() * (1 if rows is None else len(rows) / len(x)) for x, _, rows in parts)
    budget = host_budget_bytes(cfg.host_memory_gb)
    if nbytes > budget:  # rows gathered from a memory map, a batch at a time, ahead of the step
        mapped = {}  # each input tensor once (val and test may be rows of the train tensor)
        spill = data_home() / "stream"
        for x, _, _ in parts:
            if not loaded.on_disk and id(x) not in mapped:
                mapped[id(x)] = memory_map(x, spill)
        splits = [DiskSplit(mapped.get(id(x), x), y, torch.arange(len(y)) if rows is None else rows,
                            pin=device.type == "cuda") for x, y, rows in parts]
        normalizer, statistics = normalization(cfg, splits[0], statistics)
        home = (f"disk, memory-mapped ({nbytes / 2**20:,.1f} MiB, more than data.host_memory_gb: "
                f"{budget / 2**20:,.1f} MiB); batches gathered "
                f"{'ahead into pinned memory by a thread' if device.type == 'cuda' else 'in the step'}")
        return Data(*splits, tuple(splits[0].x.shape[1:]), task, num_outputs, normalizer.to(device), device,
                    home=home, class_names=loaded.class_names,
                    fitted={"inputs": inputs, "normalize": statistics})
    splits = [Split(x, y) if rows is None else Split(x[rows], y[rows]) for x, y, rows in parts]
    normalizer, statistics = normalization(cfg, splits[0], statistics)
    if prenormalize and splits[0].x.dtype != torch.uint8:  # uint8 images stay uint8, normalized per batch
        splits = [Split(normalizer(s.x), s.y) for s in splits]
        normalizer = Identity(None)
    storage = storage_device(sum(t.numel() * t.element_size() for s in splits for t in (s.x, s.y)), device,
                             cfg.device_memory_gb)
    home = f"{device.type} memory"
    if storage != device:
        home = "host memory, pinned (more than data.device_memory_gb); batches copied without blocking"
        splits = [Split(s.x.pin_memory(), s.y.pin_memory()) for s in splits]
    train, val, test = (Split(s.x.to(storage), s.y.to(storage)) for s in splits)
    return Data(train, val, test, tuple(train.x.shape[1:]), task, num_outputs, normalizer.to(device), device,
                home=home, class_names=loaded.class_names, fitted={"inputs": inputs, "normalize": statistics})


def fit_inputs(loaded: Loaded, train: torch.Tensor | None) -> dict | None:
    """A table's encoding fitted on the train rows alone (loaded.x becomes its features), as preprocessing.json
    records it; other loaders' inputs need no fit (their own record, if any)."""
    if not isinstance(loaded.x, TableRows):
        return loaded.inputs
    encoding = (loaded.x if train is None else loaded.x[train]).fit()
    # a category only val or test rows hold is no category of the model's: all zeros
    loaded.x = encoding.encode(loaded.x.frame, unseen="zeros")[0]
    return encoding.record()


def normalization(cfg: DataConfig, train, statistics: dict | None) -> tuple:
    """data.normalize fitted on the train split, or the statistics pretrained weights expect (transfer: inputs
    as they saw them): a run's saved ones where its inputs had this shape, a library's per-channel mean and std
    where these are images of pixels; with the record preprocessing.json keeps."""
    first = next(train.chunks(1))
    if statistics is not None and "channel_mean" in statistics:
        statistics = per_channel(statistics, first)
    if statistics is not None and tuple(statistics["input_shape"]) == tuple(first.shape[1:]):
        return NORMALIZERS[statistics["kind"]].builder().restored(statistics), statistics
    normalizer = NORMALIZERS.create(None, train, kind=cfg.normalize)
    return normalizer, {"kind": cfg.normalize, **normalizer.record()}


def per_channel(published: dict, first: torch.Tensor) -> dict | None:
    """A library's per-channel mean and std as a standardization of these inputs: only for pixels (uint8, read
    as [0, 1], as the weights were trained); one gray channel takes the channels' averages, as timm does."""
    if first.dtype != torch.uint8 or first.dim() != 4 or first.shape[1] not in (1, len(published["channel_mean"])):
        return None
    mean, std = torch.tensor(published["channel_mean"]), torch.tensor(published["channel_std"])
    if first.shape[1] == 1:
        mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
    return {"kind": "standardize", "mean": mean.view(1, -1, 1, 1).tolist(), "scale": (1 / std).view(1, -1, 1, 1).tolist(),
            "input_shape": list(first.shape[1:]), "source": published["source"]}


def only_classes(loaded: Loaded, classes: list[int]) -> Loaded:
    """data.classes: the samples of these classes, in every split, relabelled 0..k-1 in the order given."""
    if loaded.y.dtype != torch.int64:
        raise ConfigError("data.classes applies to classification data; these targets are regression values")
    present = set(torch.unique(loaded.y).tolist())
    missing = [c for c in classes if c not in present]
    if missing or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ConfigError(f"data.classes={classes}: expected at least two distinct classes of the data "
                          f"(its classes: 0..{max(present)})" + (f"; {missing[0]} is not one" if missing else ""))
    relabel = torch.full((max(max(present), max(classes)) + 1,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))

    def keep(x, y):
        if x is None:
            return None, None
        rows = (relabel[y] >= 0).nonzero().flatten()
        return x[rows], relabel[y[rows]]

    names = [loaded.class_names[c] if loaded.class_names else str(c) for c in classes]  # what each output stands for
    return Loaded(*keep(loaded.x, loaded.y), *keep(loaded.x_test, loaded.y_test), *keep(loaded.x_val, loaded.y_val),
                  class_names=names, inputs=loaded.inputs)


def per_class(y: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """data.per_class: the first `n` train rows of each class (the rows are already in a seeded random order),
    a stratified few-shot split."""
    if y.dtype != torch.int64:
        raise ConfigError("data.per_class applies to classification data; these targets are regression values")
    labels, keep = y[rows], torch.zeros(len(rows), dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        positions = (labels == c).nonzero().flatten()
        if len(positions) < n:
            raise ConfigError(f"data.per_class={n}: class {c} has only {len(positions)} training samples")
        keep[positions[:n]] = True
    return rows[keep]  # in the seeded order the rows had


def _split_rows(cfg, g, n: int, n_val: int | None, n_test: int | None, y: torch.Tensor | None = None):
    """Row indices of train, val and test: None for a split that is a whole given tensor; rows of the train
    data for a carved one. Carving draws the same permutations whatever the data's storage; with data.folds the
    validation rows are fold data.fold of the rest (the test rows are the same in every fold)."""
    train = val = test = None
    if n_test is None:
        train, test = _carve(torch.arange(n), cfg.test_fraction, g)
    if n_val is None:
        pool = torch.arange(n) if train is None else train
        train, val = _fold(pool, y, cfg.folds, cfg.fold, g) if cfg.folds else _carve(pool, cfg.val_fraction, g)
    elif cfg.folds:
        raise DataError(f"data.folds={cfg.folds}: this data's validation split is given (its own files or Dataset), "
                        "and folds are carved by trainrun: give the data unsplit, or leave data.folds out")
    if cfg.subset is not None:
        train = (torch.arange(n) if train is None else train)[: cfg.subset]
    if (n if train is None else len(train)) == 0:
        raise ConfigError(f"data: no training samples left (data.subset={cfg.subset}, data.val_fraction={cfg.val_fraction})")
    return train, val, test


def _dataset_data(cfg, datasets: Datasets, g, device: torch.device, statistics: dict | None) -> Data:
    """A user's torch Datasets, streamed by a DataLoader; shape and task from the first sample."""
    for name in ("train", "val", "test"):
        dataset = getattr(datasets, name)
        if dataset is not None and len(dataset) == 0:
            raise DataError(f"data._target_: the {name} {type(dataset).__name__} it returned is empty")
    train_rows, val_rows, test_rows = _split_rows(
        cfg, g, len(datasets.train), None if datasets.val is None else len(datasets.val),
        None if datasets.test is None else len(datasets.test))
    pin = device.type == "cuda"
    splits = []
    for name, dataset, rows in (("train", datasets.train, train_rows), ("val", datasets.val, val_rows),
                                ("test", datasets.test, test_rows)):
        dataset = datasets.train if dataset is None else dataset
        rows = torch.arange(len(dataset)) if rows is None else rows
        splits.append(DatasetSplit(dataset, rows, datasets.num_workers, pin, persistent=name == "train"))
    train = splits[0]
    sample_rows = torch.randperm(len(train), generator=g)[:STATISTICS_SAMPLE].sort().values
    x, y = train.take(sample_rows)
    task = "classification" if y.dtype == torch.int64 else "regression"
    num_outputs = _dataset_classes(datasets) if task == "classification" else y.shape[1]
    normalizer, statistics = normalization(cfg, Split(x, y), statistics)
    home = (f"a torch Dataset, streamed by a DataLoader ({datasets.num_workers} workers); "
            "exact resume at epoch boundaries")
    return Data(*splits, tuple(x.shape[1:]), task, num_outputs, normalizer.to(device), device, home=home,
                class_names=list(getattr(datasets.train, "classes", None) or []) or None,
                fitted={"inputs": None, "normalize": statistics})


def _dataset_classes(datasets: Datasets) -> int:
    if datasets.num_classes:
        return datasets.num_classes
    dataset = datasets.train
    if getattr(dataset, "classes", None):
        return len(dataset.classes)
    if getattr(dataset, "targets", None) is not None:
        return int(max(int(t) for t in dataset.targets)) + 1
    raise ConfigError(f"data._target_: the {type(dataset).__name__} it returned has neither .classes nor .targets: "
                      "set data.num_classes")


def storage_device(nbytes: int, device: torch.device, budget_gb: float | None) -> torch.device:
    """Where the data live: on the training device when they fit its budget (by default half of an
    accelerator's memory), otherwise in host memory."""
    if device.type == "cpu":
        return device
    if budget_gb is None:
        budget = torch.cuda.get_device_properties(device).total_memory / 2 if device.type == "cuda" else math.inf
    else:
        budget = budget_gb * 2**30
    return device if nbytes <= budget else torch.device("cpu")


def _fold(rows: torch.Tensor, y: torch.Tensor | None, folds: int, fold: int, g) -> tuple[torch.Tensor, torch.Tensor]:
    """k-fold: `rows` in a seeded order, dealt into `folds` folds class by class where y holds classes (each fold
    has each class's share); fold `fold` validates, the others train. Returns (train, val)."""
    order = rows[torch.randperm(len(rows), generator=g)]
    dealt = torch.arange(len(order)) % folds
    if y is not None and y.dtype == torch.int64 and y.dim() == 1:
        labels = y[order]
        for c in torch.unique(labels):
            where = (labels == c).nonzero().flatten()
            dealt[where] = torch.arange(len(where)) % folds
    return order[dealt != fold], order[dealt == fold]


def _carve(rows: torch.Tensor, fraction: float, g) -> tuple[torch.Tensor, torch.Tensor]:
    """Split off a seeded random `fraction` of `rows`: returns the rest, then the part."""
    order = torch.randperm(len(rows), generator=g)
    n_part = int(round(fraction * len(rows)))
    return rows[order[n_part:]], rows[order[:n_part]]
