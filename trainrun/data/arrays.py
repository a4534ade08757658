"""data=arrays: the user's NumPy arrays (.npz, .npy, .pt), and turning any (x, y[, x_test, y_test]) into splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .types import Loaded


def as_splits(source: str, arrays) -> Loaded:
    """(x, y[, x_test, y_test]) arrays or tensors -> Loaded: float32 inputs, except uint8 ones, which are
    pixels: kept as uint8 and scaled to [0, 1] per batch, like every image dataset; integer targets are classes
    (any integer labels, mapped to 0..k-1 in sorted order, the labels kept as the class names), float targets
    regression values (N, outputs)."""
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
    ys, class_names = tensors[1::2], None
    if any(y.is_floating_point() for y in ys):
        ys = [y.float().reshape(len(y), -1) for y in ys]
    else:
        labels = torch.unique(torch.cat([y.long().flatten() for y in ys]))
        ys = [torch.searchsorted(labels, y.long().flatten()) for y in ys]
        class_names = [str(label) for label in labels.tolist()]
    xs = (x if x.dtype == torch.uint8 else x.float() for x in tensors[0::2])
    out = [t for pair in zip(xs, ys) for t in pair]
    return Loaded(*out, class_names=class_names)


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
    loaded = as_splits(f"data.path={path}", [found[k] for k in keys])
    # still the file's pages (float32 and uint8 inputs are not converted): a run can stream them from the map
    loaded.on_disk = file.suffix != ".npz" and loaded.x.data_ptr() == torch.as_tensor(found["x"]).data_ptr()
    return loaded
