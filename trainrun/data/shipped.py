"""The datasets trainrun ships (conf/data/digits.yaml ... synthetic_images.yaml): the digits, MNIST,
Fashion-MNIST and CIFAR-10 from local files, MNIST-1D and the generated ones. A loader is
function(cfg, generator, knobs) -> (x, y, x_test | None, y_test | None)."""
from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import logging
import math
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

log = logging.getLogger("trainrun")


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


def _torchvision_dataset(class_name: str, folder: str, expected: str, files: tuple[str, ...]):
    """The loader of a torchvision dataset under data.root, and the function that finds (or downloads) its files."""
    def find(cfg) -> Path:
        """Its files under data.root, downloaded now where they are missing and data.download allows: a sweep runs
        this before it starts, so it is refused up front without them, and its runs do not download at once."""
        root = Path(cfg.root).expanduser()
        if cfg.test_set_only:
            if folder == "cifar-10-batches-py":
                raise ConfigError("data.test_set_only=true is supported for MNIST-format datasets only")
            if None in (find_idx(root, folder, "t10k-images-idx3-ubyte"), find_idx(root, folder, "t10k-labels-idx1-ubyte")):
                raise DataError(f"data={cfg.kind} data.test_set_only=true: t10k-images-idx3-ubyte(.gz) and "
                                f"t10k-labels-idx1-ubyte(.gz) not found under {root} or {root / folder / 'raw'}")
            return root
        if all((root / folder / name).is_file() for name in files):
            return root
        import torchvision.datasets as tvd

        try:  # torchvision prints each failed mirror; the one-line error below says it all
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                for train in (True, False):
                    getattr(tvd, class_name)(str(root), train=train, download=cfg.download)
        except Exception as e:
            how = f"the download failed: {str(e).splitlines()[0][:60]}" if cfg.download else "data.download=false"
            raise DataError(f"data={cfg.kind}: no dataset under {root / folder} ({how}). "
                            f"Put {expected} there, or point data.root (or $TRAINRUN_DATA) at them") from None
        return root

    def load(cfg, g):
        import torchvision.datasets as tvd

        root = find(cfg)
        if cfg.test_set_only:
            x = read_idx(find_idx(root, folder, "t10k-images-idx3-ubyte"))
            y = read_idx(find_idx(root, folder, "t10k-labels-idx1-ubyte"))
            return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)), None, None
        splits = []
        for train in (True, False):
            ds = getattr(tvd, class_name)(str(root), train=train, download=False)
            x = torch.as_tensor(np.asarray(ds.data))
            x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)  # NHWC (CIFAR) or NHW -> NCHW
            splits += [x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
        return tuple(splits)

    return load, find


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


_IDX = tuple(f"raw/{split}-{kind}-ubyte" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1"))
mnist, mnist_files = _torchvision_dataset("MNIST", "MNIST", "the four MNIST IDX files (raw/)", _IDX)
fashion_mnist, fashion_mnist_files = _torchvision_dataset("FashionMNIST", "FashionMNIST",
                                                          "the four Fashion-MNIST IDX files (raw/)", _IDX)
cifar10, cifar10_files = _torchvision_dataset("CIFAR10", "cifar-10-batches-py", "the CIFAR-10 python batches",
                                              (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"))


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


def synthetic_images(cfg, g, n_samples, image_shape, num_classes):
    """Random images with random labels: nothing to learn, nothing to read; for measuring throughput."""
    x = torch.randint(0, 256, (n_samples, *image_shape), generator=g, dtype=torch.uint8)
    return x, torch.randint(num_classes, (n_samples,), generator=g), None, None
