"""Datasets as tensors: loaded once, split with a seeded permutation, kept on the training device.

Batches are index slices of these tensors (see Batches); augmentation and normalization act on whole
batches. Images are kept as uint8, shape (N, C, H, W) (a quarter of float32's memory), and become float32
in [0, 1] per batch on the training device, in `Data.fetch`; sequences are (N, C, L), features (N, D).
Classification targets are int64 class indices; regression targets float32 of shape (N, 1).
"""
from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from omegaconf import DictConfig

from .config import data_home
from .errors import ConfigError, DataError
from . import stream
from .registry import DATASETS, NORMALIZERS, SAMPLERS

log = logging.getLogger("trainrun")


@dataclass
class Split:
    """A split held as tensors in memory (on the training device or the host). stream.DiskSplit and
    stream.DatasetSplit have the same interface for data that are not."""

    x: torch.Tensor
    y: torch.Tensor
    streams = False  # batches need no plan: they are slices of tensors already here

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def take(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]

    def plan(self, batches: list) -> None:
        pass

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.x), size):
            yield self.x[start:start + size]


@dataclass
class Loaded:
    """What a loader returns where a plain (x, y, x_test, y_test) tuple does not say enough."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    x_val: torch.Tensor | None = None  # a validation split of the data's own (else carved from train)
    y_val: torch.Tensor | None = None
    class_names: list[str] | None = None
    on_disk: bool = False  # the inputs are memory-mapped from a file already (nothing to spill to stream them)


@dataclass
class Datasets:
    """What data=custom returns when the user's function gives torch Datasets: streamed by a DataLoader."""

    train: object
    val: object | None = None
    test: object | None = None
    num_workers: int = 0
    num_classes: int | None = None


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    task: str  # classification | regression
    num_outputs: int
    normalize: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device  # the training device; the splits may live in host memory instead
    home: str = "device"  # where the data live, and why: shown in the run header
    memory_format: torch.memory_format = torch.contiguous_format
    class_names: list[str] | None = None  # what class index i stands for, where the data name their classes

    def fetch(self, split: Split, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `idx` (a slice or an index tensor) of a split, on the training device, as float inputs."""
        x, y = split.take(idx)
        if x.device != self.device:  # from (pinned) host memory, without waiting for the copy
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:  # pixels: converted on the device, after the (4x smaller) copy
            x = x.float().div_(255)
        if self.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=self.memory_format)
        return x, y

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    @property
    def gives(self) -> str:
        """What a model or augmentation may need (registry: the `needs` trait): images, sequences or features."""
        return {3: "images", 2: "sequences"}.get(len(self.input_shape), "features")

    @property
    def metric(self) -> str:
        return "acc" if self.task == "classification" else "mae"

    @property
    def num_classes(self) -> int:
        return self.num_outputs if self.task == "classification" else 0


# --------------------------------------------------------------------------------------------
# Loaders (records in registry.DATASETS): function(cfg, generator, knobs) -> (x_train, y_train, x_test | None, y_test | None).
# A loader without an official test split returns None for it; one is carved with data.test_fraction.

def digits(cfg, g):
    """scikit-learn's bundled 8x8 digits, read from the file scikit-learn ships: importing sklearn would add
    ~0.6 s to the default run's start-up. Its own loader where this version keeps the file elsewhere."""
    sklearn = importlib.util.find_spec("sklearn")  # where it is installed, without importing it
    path = Path(sklearn.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        table = np.loadtxt(path, delimiter=",")  # 64 pixels then the label, a row per image
        images, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, labels = bunch.images, bunch.target
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(labels, dtype=torch.int64), None, None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzip-compressed or not. torchvision's own reader wants it unzipped."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
        ndim = raw[3]
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, IndexError, ValueError, struct.error) as e:
        raise DataError(f"{path} is truncated or corrupt ({type(e).__name__}); replace it with the original file") from None


def find_idx(root: Path, folder: str, stem: str) -> Path | None:
    for directory in (root / folder / "raw", root):
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def _torchvision_dataset(class_name: str, folder: str, expected: str):
    def load(cfg, g):
        import torchvision.datasets as tvd

        root = Path(cfg.root).expanduser()
        if cfg.test_set_only:
            if folder == "cifar-10-batches-py":
                raise ConfigError("data.test_set_only=true is supported for MNIST-format datasets only")
            images, labels = find_idx(root, folder, "t10k-images-idx3-ubyte"), find_idx(root, folder, "t10k-labels-idx1-ubyte")
            if images is None or labels is None:
                raise DataError(f"{cfg.kind}: t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) not found "
                                f"under {root} or {root / folder / 'raw'}")
            x = torch.from_numpy(read_idx(images).copy()).unsqueeze(1)
            return x, torch.from_numpy(read_idx(labels).astype(np.int64)), None, None
        splits = []
        for train in (True, False):
            try:  # torchvision prints each failed mirror; the one-line error below says it all
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    ds = getattr(tvd, class_name)(str(root), train=train, download=cfg.download)
            except Exception as e:
                how = f"the download failed: {str(e).splitlines()[0][:60]}" if cfg.download else "data.download=false"
                raise DataError(f"data={cfg.kind}: no dataset under {root / folder} ({how}). "
                                f"Put {expected} there, or point data.root (or $TRAINRUN_DATA) at them") from None
            x = torch.as_tensor(np.asarray(ds.data))
            x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)  # NHWC (CIFAR) or NHW -> NCHW
            splits += [x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
        return tuple(splits)

    return load


def mnist1d(cfg, g):
    root = Path(cfg.root).expanduser() / "mnist1d"
    cache = root / "mnist1d_5000_seed42.npz"
    d = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                d = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception:  # a cache is disposable: a broken one is generated again
            log.warning("data=mnist1d: the cache %s is unreadable; generating it again", cache)
    if d is None:
        from mnist1d.data import get_dataset_args, make_dataset

        made = make_dataset(get_dataset_args())  # the package's own generator: 4,000 train / 1,000 test
        d = {k: made[k] for k in ("x", "y", "x_test", "y_test")}
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / "mnist1d.tmp.npz"
        np.savez(tmp, **d)
        tmp.replace(cache)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1)  # (N, 1, 40)
    as_y = lambda a: torch.tensor(a, dtype=torch.int64)
    return as_x(d["x"]), as_y(d["y"]), as_x(d["x_test"]), as_y(d["y_test"])


mnist = _torchvision_dataset("MNIST", "MNIST", "the four MNIST IDX files (raw/)")
fashion_mnist = _torchvision_dataset("FashionMNIST", "FashionMNIST", "the four Fashion-MNIST IDX files (raw/)")
cifar10 = _torchvision_dataset("CIFAR10", "cifar-10-batches-py", "the CIFAR-10 python batches")


def polynomial(cfg, g, n_samples, noise):
    x = (torch.rand(n_samples, 1, generator=g) * 2 - 1) * math.pi
    return x, torch.sin(x) + noise * torch.randn(x.shape, generator=g), None, None


def least_squares(cfg, g, n_samples, n_features, noise):
    x = torch.randn(n_samples, n_features, generator=g)
    w = torch.randn(n_features, 1, generator=g) / math.sqrt(n_features)
    return x, x @ w + noise * torch.randn(n_samples, 1, generator=g), None, None


def spirals(cfg, g, n_samples, noise, turns):
    n = n_samples // 2
    t = torch.sqrt(torch.rand(n, generator=g)) * turns * 2 * math.pi
    arm = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / (turns * 2 * math.pi)
    x = torch.cat([arm, -arm]) + noise * torch.randn(2 * n, 2, generator=g)
    return x, torch.cat([torch.zeros(n), torch.ones(n)]).long(), None, None


def custom(cfg, g, params, _target_=None, num_workers=None, num_classes=None):
    """A function of the user's (data._target_) returning (x, y) or (x, y, x_test, y_test), as tensors or arrays,
    or torch Datasets of (input, target) pairs: one (carved into splits), (train, test), (train, val, test),
    or a dict with train (and val, test)."""
    from torch.utils.data import Dataset

    from .custom import call, resolve

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


def as_splits(source: str, arrays) -> tuple:
    """(x, y[, x_test, y_test]) arrays or tensors -> the loaders' tuple: float32 inputs, except uint8 ones, which are
    pixels: kept as uint8 and scaled to [0, 1] per batch, like every image dataset; integer targets are classes
    (any integer labels, mapped to 0..k-1 in sorted order), float targets regression values (N, outputs)."""
    # read-only arrays are copied here (memory-mapped ones come copy-on-write, so they are not)
    tensors = [torch.as_tensor(a if isinstance(a, torch.Tensor) or np.asarray(a).flags.writeable else np.array(a))
               for a in arrays]
    names = ("x", "y", "x_test", "y_test")
    for i in range(0, len(tensors), 2):
        if len(tensors[i]) != len(tensors[i + 1]):
            raise DataError(f"{source}: {names[i]} has {len(tensors[i])} rows, {names[i + 1]} has {len(tensors[i + 1])}")
    if len(tensors[0]) == 0:
        raise DataError(f"{source}: x has no rows")
    if len(tensors) == 4 and tuple(tensors[2].shape[1:]) != tuple(tensors[0].shape[1:]):
        raise DataError(f"{source}: each x_test row has shape {tuple(tensors[2].shape[1:])}, each x row "
                        f"{tuple(tensors[0].shape[1:])}; they must be the same")
    ys = tensors[1::2]
    if any(y.is_floating_point() for y in ys):
        ys = [y.float().reshape(len(y), -1) for y in ys]
    else:
        labels = torch.unique(torch.cat([y.long().flatten() for y in ys]))
        ys = [torch.searchsorted(labels, y.long().flatten()) for y in ys]
    xs = (x if x.dtype == torch.uint8 else x.float() for x in tensors[0::2])
    out = [t for pair in zip(xs, ys) for t in pair]
    return tuple(out) if len(out) == 4 else (*out, None, None)


def arrays(cfg, g, path, targets=None):
    """NumPy arrays: an .npz with x, y (and x_test, y_test), an .npy of inputs with data.targets naming the .npy of
    targets (both memory-mapped), or a .pt file holding such a dict (read with weights_only=True)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.path={path}: no such file")
    if file.suffix == ".npy" and not targets:
        raise ConfigError(f"data.path={path} is one .npy file: name its targets' .npy with data.targets")
    if file.suffix not in (".npz", ".npy", ".pt"):
        raise ConfigError(f"data.path={path}: expected an .npz, .npy or .pt file")
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as f:
                found = {k: f[k] for k in f.files}
        elif file.suffix == ".npy":
            # copy-on-write maps: writable for torch, and never written, so never copied
            found = {"x": np.load(file, mmap_mode="c"), "y": np.load(Path(targets).expanduser(), mmap_mode="c")}
        else:
            found = dict(torch.load(file, map_location="cpu", weights_only=True, mmap=True))
    except (OSError, ValueError, EOFError, RuntimeError) as e:
        raise DataError(f"data.path={path}: unreadable ({' '.join(str(e).split())[:120]})") from None
    missing = [k for k in ("x", "y") if k not in found]
    if missing:
        raise DataError(f"{file.name} has no {' or '.join(missing)}; it holds: {', '.join(found) or 'nothing'} "
                        "(expected x, y and optionally x_test, y_test)")
    keys = ("x", "y", "x_test", "y_test") if "x_test" in found and "y_test" in found else ("x", "y")
    loaded = Loaded(*as_splits(f"data.path={path}", [found[k] for k in keys]))
    # still the file's pages (float32 and uint8 inputs are not converted): a run can stream them from the map
    loaded.on_disk = file.suffix != ".npz" and loaded.x.data_ptr() == torch.as_tensor(found["x"]).data_ptr()
    return loaded


def table(cfg, g, path, target, max_classes, missing, task, features=None):
    """A CSV or Parquet file (pyarrow parses it): one row per sample. Numeric and boolean columns are features as
    they are (data.normalize standardizes them with train statistics), text and categorical ones one-hot."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise ConfigError("data=table reads files with pyarrow: pip install 'trainrun[table]'") from None
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.path={path}: no such file")
    parquet = file.suffix in (".parquet", ".pq")
    try:
        frame = pyarrow.parquet.read_table(file) if parquet else pyarrow.csv.read_csv(file)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"data.path={path}: not a readable {'Parquet' if parquet else 'CSV'} file "
                        f"({' '.join(str(e).split())[:120]})") from None
    columns = frame.column_names
    if target not in columns:
        raise DataError(f"data.target={target} is not a column of {file.name}; its columns: {', '.join(columns)}")
    features = list(features) if features else [c for c in columns if c != target]
    unknown = [c for c in features if c not in columns]
    if unknown:
        raise DataError(f"data.features: {file.name} has no column {unknown[0]}; its columns: {', '.join(columns)}")
    frame = frame.select([*features, target])
    nulls = {c: pc.sum(pc.is_null(frame[c], nan_is_null=True)).as_py() for c in frame.column_names}
    if nulls[target] or (missing == "drop" and any(nulls.values())):
        keep = pc.invert(pc.is_null(frame[target], nan_is_null=True))
        for c in features if missing == "drop" else ():
            keep = pc.and_(keep, pc.invert(pc.is_null(frame[c], nan_is_null=True)))
        if missing == "error" and nulls[target]:
            rows = np.flatnonzero(~np.asarray(keep))[:5].tolist()
            raise DataError(f"column {target} (the target) has {nulls[target]} missing values (rows {rows}); "
                            "set data.missing=drop")
        dropped = len(frame) - pc.sum(keep).as_py()
        frame = frame.filter(keep)
        if len(frame) == 0:
            with_nulls = [c for c in frame.column_names if nulls[c]]
            raise DataError(f"data.missing=drop dropped every row of {file.name} ({dropped}): each has a missing "
                            f"value in {', '.join(with_nulls[:5])}; use data.missing=mean or data.features=[...]")
    if missing == "error":
        for c in features:
            if nulls[c]:
                rows = np.flatnonzero(np.asarray(pc.is_null(frame[c], nan_is_null=True)))[:5].tolist()
                raise DataError(f"column {c} has {nulls[c]} missing values (rows {rows}); "
                                "set data.missing=drop or data.missing=mean")
    y, class_names = _table_target(frame[target], target, task, max_classes)
    blocks = [_table_feature(frame[c], c) for c in features]
    return Loaded(torch.from_numpy(np.concatenate(blocks, axis=1)), y, class_names=class_names)


def _table_target(column, name: str, task: str, max_classes: int):
    import pyarrow as pa

    kind = column.type
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind) \
        or pa.types.is_boolean(kind)
    values = np.asarray(column.to_pylist(), dtype=object if textual else None)
    distinct = np.unique(values)
    if len(distinct) < 2:
        raise DataError(f"data.target={name} has one value ({distinct[0] if len(distinct) else 'none'}): nothing to learn")
    if task == "auto":
        task = "classification" if textual or (pa.types.is_integer(kind) and len(distinct) <= max_classes) \
            else "regression"
    if task == "classification":
        return torch.from_numpy(np.searchsorted(distinct, values).astype(np.int64)), [str(v) for v in distinct]
    if textual:
        raise DataError(f"data.task=regression: data.target={name} holds text, not numbers")
    return torch.from_numpy(values.astype(np.float32).reshape(-1, 1)), None


def _table_feature(column, name: str) -> np.ndarray:
    """A column as float32 features: numbers as they are (missing ones: the column's mean), text one-hot."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_decimal(kind):
        values = np.asarray(column.to_pylist(), dtype=np.float64)
        values = np.where(np.isnan(values), np.nanmean(values), values)
        return values.astype(np.float32).reshape(-1, 1)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        values = np.asarray([str(v) for v in column.to_pylist()])
        categories = np.unique(values[values != "None"])
        return (values[:, None] == categories[None, :]).astype(np.float32)
    raise DataError(f"column {name} is of type {kind}: neither numbers nor text; leave it out with data.features")


def synthetic_images(cfg, g, n_samples, image_shape, num_classes):
    """Random images with random labels: nothing to learn, nothing to read; for measuring throughput."""
    x = torch.randint(0, 256, (n_samples, *image_shape), generator=g, dtype=torch.uint8)
    return x, torch.randint(num_classes, (n_samples,), generator=g), None, None


# --------------------------------------------------------------------------------------------

# Input normalization (records in registry.NORMALIZERS), with statistics from the train split only.

class Identity:
    def __init__(self, train):
        pass

    def to(self, device) -> "Identity":
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


STATISTICS_CHUNK = 2**21  # values converted to float64 at a time (16 MiB): statistics without a float copy


def _chunks(train, flat: bool = False):
    """The train split's inputs in float64 chunks (a split on disk is read chunk by chunk, never whole)."""
    row = math.prod(next(train.chunks(1)).shape[1:])
    for c in train.chunks(max(1, STATISTICS_CHUNK // row)):
        c = c.double().div_(255) if c.dtype == torch.uint8 else c.double()
        yield c.flatten(1) if flat else c


class Standardize:
    """Zero mean, unit variance per feature; for images per channel (a per-pixel std is near zero at the
    borders, and would blow up any augmentation that moves ink there)."""

    def __init__(self, train):
        total = count = 0
        dims = None
        for c in _chunks(train):
            dims = (0, 2, 3) if c.dim() == 4 else (0,)
            total = total + c.sum(dims, keepdim=True)
            count += len(c) * (c.shape[2] * c.shape[3] if c.dim() == 4 else 1)
        mean = total / count
        squares = sum(((c - mean) ** 2).sum(dims, keepdim=True) for c in _chunks(train))
        std = (squares / max(count - 1, 1)).sqrt()
        self.mean = mean.float()
        self.scale = (1 / torch.where(std > 1e-8, std, torch.ones_like(std))).float()  # constant features stay put

    def to(self, device) -> "Standardize":
        self.mean, self.scale = self.mean.to(device), self.scale.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale


class PCA:
    """x -> ((x - mean) @ principal axes), divided by sqrt(variance) when whitening, on flattened features."""

    def __init__(self, train, whiten: bool):
        n = len(train)
        mean = sum(c.sum(0) for c in _chunks(train, flat=True)) / n
        scatter = sum((c - mean).T @ (c - mean) for c in _chunks(train, flat=True))
        variances, vectors = torch.linalg.eigh(scatter / max(n - 1, 1))
        self.mean, self.rotation = mean.float(), vectors.flip(1).float()  # principal axes, largest variance first
        variances = variances.flip(0).clamp_min(0)
        # whitening divides by sqrt(variance); the floor keeps near-empty directions from exploding
        self.scale = ((variances + 1e-3 * variances.max()).rsqrt() if whiten else torch.ones_like(variances)).float()

    def to(self, device) -> "PCA":
        self.mean, self.scale, self.rotation = self.mean.to(device), self.scale.to(device), self.rotation.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (((x.flatten(1) - self.mean) @ self.rotation) * self.scale).view_as(x)


STATISTICS_SAMPLE = 4096  # a torch Dataset's normalization statistics come from this many train samples


def load(cfg: DictConfig, seed: int, device: torch.device, prenormalize: bool) -> Data:
    """Load, split (seeded), normalize with train statistics, and put where the data fit: on `device`,
    in (pinned) host memory, or memory-mapped from disk; a user's torch Datasets stream through a DataLoader.

    With `prenormalize`, the normalization is applied once to the stored tensors and Data.normalize
    is the identity; otherwise (augmentation runs on raw pixels) it is applied per batch.
    """
    g = torch.Generator().manual_seed(seed)
    loaded = DATASETS.create(cfg, cfg, g)
    if isinstance(loaded, Datasets):
        return _dataset_data(cfg, loaded, g, device)
    loaded = loaded if isinstance(loaded, Loaded) else Loaded(*loaded)
    if cfg.classes is not None:
        loaded = only_classes(loaded, list(cfg.classes))
    train, val, test = _split_rows(cfg, g, len(loaded.y),
                                   None if loaded.x_val is None else len(loaded.y_val),
                                   None if loaded.x_test is None else len(loaded.y_test))
    if cfg.per_class is not None:
        train = per_class(loaded.y, torch.arange(len(loaded.y)) if train is None else train, cfg.per_class)
    parts = [(loaded.x, loaded.y, train), (loaded.x_val, loaded.y_val, val), (loaded.x_test, loaded.y_test, test)]
    parts = [(loaded.x, loaded.y, rows) if x is None else (x, y, rows) for x, y, rows in parts]  # carved from x
    y_train = loaded.y if train is None else loaded.y[train]
    task = "classification" if y_train.dtype == torch.int64 else "regression"
    all_y = [y if rows is None else y[rows] for _, y, rows in parts]
    num_outputs = int(torch.cat([all_y[0], all_y[2]]).max()) + 1 if task == "classification" else y_train.shape[1]
    nbytes = sum(x.numel() * x.element_size() * (1 if rows is None else len(rows) / len(x)) for x, _, rows in parts)
    budget = stream.host_budget_bytes(cfg.host_memory_gb)
    if nbytes > budget:  # rows gathered from a memory map, a batch at a time, ahead of the step
        mapped = {}  # each input tensor once (val and test may be rows of the train tensor)
        spill = data_home() / "stream"
        for x, _, _ in parts:
            if not loaded.on_disk and id(x) not in mapped:
                mapped[id(x)] = stream.mapped(x, spill)
        splits = [stream.DiskSplit(mapped.get(id(x), x), y, torch.arange(len(y)) if rows is None else rows,
                                   pin=device.type == "cuda") for x, y, rows in parts]
        normalizer = NORMALIZERS.create(None, splits[0], kind=cfg.normalize)
        home = (f"disk, memory-mapped ({nbytes / 2**20:,.1f} MiB, more than data.host_memory_gb: "
                f"{budget / 2**20:,.1f} MiB); batches gathered "
                f"{'ahead into pinned memory by a thread' if device.type == 'cuda' else 'in the step'}")
        return Data(*splits, tuple(splits[0].x.shape[1:]), task, num_outputs, normalizer.to(device), device,
                    home=home, class_names=loaded.class_names)
    splits = [Split(x, y) if rows is None else Split(x[rows], y[rows]) for x, y, rows in parts]
    normalizer = NORMALIZERS.create(None, splits[0], kind=cfg.normalize)
    if prenormalize and splits[0].x.dtype != torch.uint8:  # uint8 images stay uint8, normalized per batch
        splits = [Split(normalizer(s.x), s.y) for s in splits]
        normalizer = Identity(None)
    home = storage_device(sum(t.numel() * t.element_size() for s in splits for t in (s.x, s.y)), device,
                          cfg.device_memory_gb)
    where = f"{device.type} memory"
    if home != device:
        where = "host memory, pinned (more than data.device_memory_gb); batches copied without blocking"
        splits = [Split(s.x.pin_memory(), s.y.pin_memory()) for s in splits]
    train, val, test = (Split(s.x.to(home), s.y.to(home)) for s in splits)
    return Data(train, val, test, tuple(train.x.shape[1:]), task, num_outputs, normalizer.to(device), device,
                home=where, class_names=loaded.class_names)


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

    names = [loaded.class_names[c] for c in classes] if loaded.class_names else None
    return Loaded(*keep(loaded.x, loaded.y), *keep(loaded.x_test, loaded.y_test), *keep(loaded.x_val, loaded.y_val),
                  class_names=names)


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


def _split_rows(cfg, g, n: int, n_val: int | None, n_test: int | None):
    """Row indices of train, val and test: None for a split that is a whole given tensor; rows of the train
    data for a carved one. Carving draws the same permutations whatever the data's storage."""
    train = val = test = None
    if n_test is None:
        train, test = _carve(torch.arange(n), cfg.test_fraction, g)
    if n_val is None:
        train, val = _carve(torch.arange(n) if train is None else train, cfg.val_fraction, g)
    if cfg.subset is not None:
        train = (torch.arange(n) if train is None else train)[: cfg.subset]
    if (n if train is None else len(train)) == 0:
        raise ConfigError(f"data: no training samples left (data.subset={cfg.subset}, data.val_fraction={cfg.val_fraction})")
    return train, val, test


def _dataset_data(cfg, datasets: Datasets, g, device: torch.device) -> Data:
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
        splits.append(stream.DatasetSplit(dataset, rows, datasets.num_workers, pin, persistent=name == "train"))
    train = splits[0]
    sample_rows = torch.randperm(len(train), generator=g)[:STATISTICS_SAMPLE].sort().values
    x, y = train.take(sample_rows)
    task = "classification" if y.dtype == torch.int64 else "regression"
    num_outputs = _dataset_classes(datasets) if task == "classification" else y.shape[1]
    normalizer = NORMALIZERS.create(None, Split(x, y), kind=cfg.normalize)
    home = (f"a torch Dataset, streamed by a DataLoader ({datasets.num_workers} workers); "
            "exact resume at epoch boundaries")
    return Data(*splits, tuple(x.shape[1:]), task, num_outputs, normalizer.to(device), device, home=home,
                class_names=list(getattr(datasets.train, "classes", None) or []) or None)


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


def _carve(rows: torch.Tensor, fraction: float, g) -> tuple[torch.Tensor, torch.Tensor]:
    """Split off a seeded random `fraction` of `rows`: returns the rest, then the part."""
    order = torch.randperm(len(rows), generator=g)
    n_part = int(round(fraction * len(rows)))
    return rows[order[n_part:]], rows[order[:n_part]]


def shuffled(n: int, batch_size: int, g: torch.Generator, device) -> Iterator[torch.Tensor | slice]:
    if batch_size == n:  # full-batch GD reads the tensors as they are
        yield from sequential(n, batch_size, g, device)
        return
    yield from torch.randperm(n, generator=g).to(device).split(batch_size)


def with_replacement(n: int, batch_size: int, g: torch.Generator, device) -> Iterator[torch.Tensor | slice]:
    for _ in range(math.ceil(n / batch_size)):
        yield torch.randint(n, (batch_size,), generator=g).to(device)


def sequential(n: int, batch_size: int, g: torch.Generator, device) -> Iterator[torch.Tensor | slice]:
    # contiguous slices are views: no gather at all
    for start in range(0, n, batch_size):
        yield slice(start, start + batch_size)


class Batches:
    """Index batches over the train split, drawn by the sampler (registry.SAMPLERS). The order of each
    epoch is a function of (seed, epoch) alone, so a resumed run sees the same batches. `plan`, where the
    split streams, is handed each epoch's batches before it starts, so their rows are gathered ahead."""

    def __init__(self, n: int, batch_size: int, sampler: str, seed: int, device: torch.device,
                 plan: Callable[[list], None] | None = None):
        self.n, self.batch_size, self.sampler, self.seed, self.device = n, min(batch_size, n), sampler, seed, device
        self.plan = plan

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor | slice]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        batches = SAMPLERS.create(None, self.n, self.batch_size, g, self.device, kind=self.sampler)
        if self.plan is None:
            return batches
        batches = list(batches)
        self.plan(batches)
        return iter(batches)
