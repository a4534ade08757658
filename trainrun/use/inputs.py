"""What trainrun-predict reads: new inputs made as the run's were (folders and files of images, tables,
arrays, or the run's own test split), a batch at a time."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..check import check_finite
from ..errors import DataError
from .trained import TrainedRun

BATCH = 512  # inputs read, decoded and predicted at a time: a 10,000-image folder is never held whole


@dataclass
class Inputs:
    """New inputs, read a batch at a time: raw x (as the run stored them: uint8 pixels or float features)
    with their labels (class indices or values) where the inputs carry them."""

    name: str  # what the default output file is named after
    count: int
    batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor | None, list[str]]]]  # x, y, the inputs' ids
    labelled: bool
    notes: list[str] = field(default_factory=list)  # said once: ignored columns
    skipped: list[str] = field(default_factory=list)  # unreadable files (--on-bad-file=skip), filled as read
    read_ahead: bool = False  # decoded on a thread while the model runs on the batch before (see read_ahead)



def read_inputs(run: TrainedRun, source: str | None, on_bad_file: str, unseen: str) -> Inputs:
    if source is None:
        return split_inputs(run)
    path = Path(source).expanduser()
    if not path.exists() and not glob.has_magic(source):
        raise DataError(f"input={source}: no such file or folder")
    if path.suffix.lower() in (".csv", ".parquet", ".pq"):
        return table_inputs(run, path, unseen)
    if path.suffix.lower() in (".npz", ".npy", ".pt"):
        return array_inputs(run, path)
    return image_inputs(run, source, on_bad_file)


def split_inputs(run: TrainedRun) -> Inputs:
    """The run's own test split, loaded by its data option (with any data.* overrides), inputs normalized with the
    saved statistics: on the run's own data, the metrics equal metrics.json's."""
    from ..data import load

    data = load(run.cfg.data, run.cfg.trainer.seed, torch.device("cpu"), prenormalize=False)
    split, size = data.test, run.cfg.data.eval_batch_size

    def batches():
        split.plan([slice(start, start + size) for start in range(0, len(split), size)])
        for start in range(0, len(split), size):
            yield *split.take(slice(start, start + size)), row_ids(start, min(start + size, len(split)))
    return Inputs("test", len(split), batches, labelled=True)


def table_inputs(run: TrainedRun, path: Path, unseen: str) -> Inputs:
    from ..data.table import TableEncoding, read_table

    encoding = run.record.get("inputs") or {}
    if encoding.get("kind") != "table":
        raise DataError(f"{path.name}: a table, but this run was trained on {describe_inputs(run)}")
    file, frame = read_table(path, "input")
    features = [c["name"] for c in encoding["columns"]]
    missing = [c for c in features if c not in frame.column_names]
    if missing:
        raise DataError(f"{file.name} has no column {missing[0]}, a feature of this run (its features: "
                        f"{', '.join(features)})")
    target = run.cfg.data.target
    notes = []
    extra = [c for c in frame.column_names if c not in features and c != target]
    if extra:
        notes.append(f"ignored columns (not features of this run): {', '.join(extra)}")
    rows, note = missing_values(run, frame, features, file.name)
    notes += [note] if note else []
    frame = frame.take(rows) if rows is not None else frame
    try:
        x, unseen_count = TableEncoding(encoding["columns"]).encode(frame, f"{file.name}: ", unseen)
    except (TypeError, ValueError) as e:  # text in a numeric column
        raise DataError(f"{file.name}: a feature column holds values of another type ({str(e)[:100]})") from None
    if unseen_count:
        notes.append(f"{unseen_count} text values not seen in training, encoded as all zeros (--unseen=zeros)")
    y = None
    if target in frame.column_names and frame[target].null_count == 0:
        y = labels_of(run, frame[target].to_pylist(), f"{file.name}: column {target}")
    names = TableEncoding.feature_names(encoding)
    ids = None if rows is None else [str(r) for r in rows]
    return Inputs(file.stem, len(x), lambda: sliced(x, y, file.name, names, ids), y is not None, notes)


def missing_values(run: TrainedRun, frame, features: list[str], where: str) -> tuple[list[int] | None, str | None]:
    """The run's own rule for cells without a value (data.missing): refused naming the first, under `error`;
    under `drop` those rows are left out (the rows kept, and a note); under `mean` filled with the training
    values (a note of how many cells in which rows)."""
    import pyarrow.compute as pc

    empty = {c: np.asarray(pc.is_null(frame[c], nan_is_null=True)) for c in features}
    rows = sorted({int(r) for mask in empty.values() for r in np.flatnonzero(mask)})
    if not rows:
        return None, None
    rule, shown = run.cfg.data.missing, ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
    if rule == "error":
        column = next(c for c in features if empty[c][rows[0]])
        raise DataError(f"{where}: row {rows[0]} has no value in column {column}, and this run refuses missing values "
                        f"(data.missing=error): fill or drop such rows ({len(rows)} of {frame.num_rows})")
    if rule == "drop":
        kept = [r for r in range(frame.num_rows) if r not in set(rows)]
        return kept, f"left out {len(rows)} rows with missing values (data.missing=drop): rows {shown}"
    cells = sum(int(mask.sum()) for mask in empty.values())
    return None, f"filled {cells} missing cells with the training values (data.missing={rule}), in rows {shown}"


def array_inputs(run: TrainedRun, path: Path) -> Inputs:
    """x (and y) from an .npz, an .npy of inputs (memory-mapped: read a batch at a time) or a .pt dict."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            found = {"x": NpyRows(path)}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                found = {k: f[k] for k in f.files}
        else:
            found = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, ValueError, EOFError, RuntimeError) as e:
        raise DataError(f"{path}: unreadable ({' '.join(str(e).split())[:120]})") from None
    if isinstance(found, torch.Tensor):  # a tensor alone: the inputs
        found = {"x": found}
    if not isinstance(found, dict):
        raise DataError(f"{path.name} holds a {type(found).__name__}; give a tensor of inputs, or a dict with x "
                        "(and y, the targets)")
    if "x" not in found:
        raise DataError(f"{path.name} has no x; it holds: {', '.join(found) or 'nothing'}")
    x = found["x"]
    dtype, trained = str(x.dtype).removeprefix("torch."), run.record["input_dtype"]
    if (dtype == "uint8") != (trained == "uint8"):  # uint8 is read as pixels, divided by 255, as in training
        raise DataError(f"{path.name}: x is {dtype}; this run was trained on {trained} "
                        + ("pixels (0-255): give x as uint8" if trained == "uint8" else
                           "inputs, and uint8 is read as pixels (divided by 255): give x as float"))
    if tuple(x.shape[1:]) != run.input_shape:
        raise DataError(f"{path.name}: each row of x has shape {tuple(x.shape[1:])}; this run was trained on "
                        f"{run.input_shape}")
    y = found.get("y")
    if y is not None:
        if len(y) != len(x):
            raise DataError(f"{path.name}: x has {len(x)} rows, y has {len(y)}")
        y = labels_of(run, np.asarray(y).reshape(len(y), -1).tolist() if not run.classification
                      else np.asarray(y).ravel().tolist(), f"{path.name}: y")

    return Inputs(path.stem, len(x), lambda: sliced(x, y, f"{path.name}: x"), y is not None)


class NpyRows:
    """An .npy's rows, read a batch at a time with plain file reads (never loaded whole): 10,000 MNIST images in
    1.9 ms, against 9 ms through a memory map's page faults. Fortran-ordered files go through the memory map."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            self.shape, fortran, self.dtype = read_header(f)
            self.offset = f.tell()
        self.path, self.mapped = path, np.load(path, mmap_mode="r") if fortran or self.dtype.hasobject else None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        if self.mapped is not None:
            return np.array(self.mapped[rows])
        start, stop, _ = rows.indices(len(self))
        out = np.empty((max(stop - start, 0), *self.shape[1:]), self.dtype)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * out[:1].nbytes)
            if f.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise DataError(f"{self.path} is truncated: its header promises {self.shape[0]} rows")
        return out


def image_inputs(run: TrainedRun, source: str, on_bad_file: str) -> Inputs:
    """A folder (flat, or class sub-folders named as the run's classes: then labelled), one image, or a glob."""
    from ..data.folder import IMAGE_SUFFIXES, image_files

    if len(run.input_shape) != 3:
        raise DataError(f"{source}: images, but this run was trained on {describe_inputs(run)}")
    path = Path(source).expanduser()
    labels, root, notes = None, path if path.is_dir() else Path("."), []
    if path.is_dir():
        folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folders and {p.name for p in folders} <= set(run.class_names):
            per_class = [image_files(d) for d in folders]
            files = [f for found in per_class for f in found]
            labels = torch.tensor([run.class_names.index(d.name) for d, found in zip(folders, per_class)
                                   for _ in found])
            loose = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if loose:
                notes.append(f"left out {len(loose)} images at the top of {path} ({', '.join(loose[:3])}"
                             f"{', ...' if len(loose) > 3 else ''}): its class sub-folders label the images; put them "
                             "in one, or predict them apart")
        else:
            files = image_files(path)
        others = sum(1 for _, _, names in os.walk(path) for n in names
                     if os.path.splitext(n)[1].lower() not in IMAGE_SUFFIXES and not n.startswith("."))
        if others:
            notes.append(f"left out {others} files of {path} that are not images by their suffix "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    elif path.is_file():
        files, root = [str(path)], path.parent
    else:
        files = sorted((f for f in glob.glob(str(path), recursive=True) if os.path.isfile(f)),
                       key=lambda f: f.split(os.sep))
    if not files:
        raise DataError(f"{source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = ImageReader(run, on_bad_file)
    prefix = os.path.join(str(root), "")  # ids by string: Path.relative_to took 0.5 s of 10,000 files
    ids = [f[len(prefix):] if f.startswith(prefix) else f for f in files]

    def batches():
        for s in range(0, len(files), BATCH):
            x, kept = images.read(files[s:s + BATCH])
            yield x, None if labels is None else labels[s:s + BATCH][kept], [ids[s + i] for i in kept.tolist()]
    name = path.stem if path.is_dir() or path.is_file() else "images"
    return Inputs(name, len(files), batches, labels is not None, notes, skipped=images.skipped, read_ahead=True)


def row_ids(start: int, stop: int) -> list[str]:
    return [str(i) for i in range(start, stop)]


def sliced(x, y, where: str, names: list[str] | None = None, ids: list[str] | None = None) -> Iterator:
    """Batches of rows of x (an array, a tensor, or an .npy's NpyRows: only a batch is read at a time) and y,
    with their ids (the row numbers, or `ids`: those of the rows kept); a row holding NaN or infinity is named,
    as training names it (check_finite)."""
    for s in range(0, len(x), BATCH):
        batch = torch.as_tensor(np.asarray(x[s:s + BATCH]))
        check_finite(batch, where, first_row=s, names=names)
        yield batch, None if y is None else y[s:s + BATCH], ids[s:s + BATCH] if ids else row_ids(s, min(s + BATCH, len(x)))


class ImageReader:
    """New images made as the run's were: decoded by torchvision, converted to its channels (where training
    converted: data=folder), resized to its size (where training resized: data.image_size)."""

    def __init__(self, run: TrainedRun, on_bad_file: str):
        made = run.record.get("inputs") or {}
        self.channels, self.size = run.input_shape[0], list(run.input_shape[1:])
        self.converts, self.resizes = made.get("converts_channels", False), made.get("image_size") is not None
        self.pixels = run.record["input_dtype"] == "uint8"
        self.on_bad_file, self.skipped = on_bad_file, []

    def read(self, files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's images, and which of the files they are (the readable ones)."""
        from torchvision.transforms.v2 import functional as F

        from ..data.folder import decode_one, libpng_reason
        from ..native import NativeStderr

        images, kept = [], []
        with NativeStderr(("libpng ",)) as native:
            decoded = [decode_one(file) for file in files]
            bad = next(((file, image) for file, image in zip(files, decoded) if isinstance(image, str)), None)
            if bad and self.on_bad_file == "error":
                raise DataError(f"{bad[0]} is not a readable image ({libpng_reason(native, *bad)}); pass --on-bad-file=skip "
                                "to skip such files")
        for i, (file, image) in enumerate(zip(files, decoded)):
            if isinstance(image, str):
                self.skipped.append(file)
                continue
            if image.shape[0] != self.channels:
                if not self.converts:
                    raise DataError(f"{file} has {image.shape[0]} channels; this run was trained on {self.channels}")
                image = F.rgb_to_grayscale(image) if self.channels == 1 else image.expand(3, -1, -1)
            if list(image.shape[1:]) != self.size:
                if not self.resizes:
                    raise DataError(f"{file} is {image.shape[1]}x{image.shape[2]}; this run was trained on "
                                    f"{self.size[0]}x{self.size[1]} images, not resized (data.image_size)")
                image = F.resize(image, self.size, antialias=True)
            images.append(image)
            kept.append(i)
        if not images:
            return torch.zeros(0, self.channels, *self.size, dtype=torch.uint8), torch.tensor(kept, dtype=torch.long)
        x = torch.stack(images)
        return (x if self.pixels else x.float().div(255)), torch.tensor(kept, dtype=torch.long)


def labels_of(run: TrainedRun, values: list, where: str) -> torch.Tensor:
    """Targets as the run's: class indices by the class names (a label it never saw is named), or values."""
    if not run.classification:
        return torch.tensor(values, dtype=torch.float32).reshape(len(values), -1)
    index = {name: i for i, name in enumerate(run.class_names)}
    unknown = [v for v in values if str(v) not in index]
    if unknown:
        raise DataError(f"{where}: the label {unknown[0]!r} is not one of this run's classes "
                        f"({', '.join(run.class_names[:10])}{', ...' if len(index) > 10 else ''})")
    return torch.tensor([index[str(v)] for v in values], dtype=torch.int64)


def describe_inputs(run: TrainedRun) -> str:
    kind = (run.record.get("inputs") or {}).get("kind")
    shape = "x".join(map(str, run.input_shape))
    return {"table": "a table", "images": "images"}.get(kind, f"inputs of shape {shape}")
