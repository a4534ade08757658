"""trainrun-predict: a trained run's model applied to new inputs, with the preprocessing it was trained with.

    trainrun-predict RUN [INPUT] [data.key=value ...] [--top-k K] [--output FILE] [--mc-samples N]

INPUT is a folder of images (flat, or class sub-folders: then scored), one image, a glob, a CSV or Parquet
table (the target column, when present, is scored), or an .npz/.npy/.pt of arrays (y, when present, is
scored); without INPUT, the run's own test split (data.* overrides give its data option new arguments).
One row per input goes to FILE (.csv, .jsonl or .parquet; by default a new file under RUN/predictions/);
labelled inputs also get metrics, a confusion matrix and per-class precision, recall and F1 beside it.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .check import check_finite
from .errors import ConfigError, DataError
from .trained import Arguments, TrainedRun, open_run

BATCH = 512  # inputs read, decoded and predicted at a time: a 10,000-image folder is never held whole
FORMATS = {".csv", ".jsonl", ".parquet"}


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


# ---------------------------------------------------------------------------------------------
# Reading new inputs as the run's were made

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
    from .data import load

    data = load(run.cfg.data, run.cfg.trainer.seed, torch.device("cpu"), prenormalize=False)
    split, size = data.test, run.cfg.data.eval_batch_size

    def batches():
        split.plan([slice(start, start + size) for start in range(0, len(split), size)])
        for start in range(0, len(split), size):
            yield *split.take(slice(start, start + size)), row_ids(start, min(start + size, len(split)))
    return Inputs("test", len(split), batches, labelled=True)


def table_inputs(run: TrainedRun, path: Path, unseen: str) -> Inputs:
    from .data.table import TableEncoding, read_table

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
    return Inputs(file.stem, len(x), lambda: sliced(x, y, file.name, names), y is not None, notes)


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
            found = dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except (OSError, ValueError, EOFError, RuntimeError) as e:
        raise DataError(f"{path}: unreadable ({' '.join(str(e).split())[:120]})") from None
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
    from .data.folder import IMAGE_SUFFIXES, image_files

    if len(run.input_shape) != 3:
        raise DataError(f"{source}: images, but this run was trained on {describe_inputs(run)}")
    path = Path(source).expanduser()
    labels, root = None, path if path.is_dir() else Path(".")
    if path.is_dir():
        folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folders and {p.name for p in folders} <= set(run.class_names):
            per_class = [image_files(d) for d in folders]
            files = [f for found in per_class for f in found]
            labels = torch.tensor([run.class_names.index(d.name) for d, found in zip(folders, per_class)
                                   for _ in found])
        else:
            files = image_files(path)
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
    return Inputs(name, len(files), batches, labels is not None, skipped=images.skipped, read_ahead=True)


def row_ids(start: int, stop: int) -> list[str]:
    return [str(i) for i in range(start, stop)]


def sliced(x, y, where: str, names: list[str] | None = None) -> Iterator:
    """Batches of rows of x (an array, a tensor, or an .npy's NpyRows: only a batch is read at a time) and y;
    a row holding NaN or infinity is named, as training names it (check_finite)."""
    for s in range(0, len(x), BATCH):
        batch = torch.as_tensor(np.asarray(x[s:s + BATCH]))
        check_finite(batch, where, first_row=s, names=names)
        yield batch, None if y is None else y[s:s + BATCH], row_ids(s, min(s + BATCH, len(x)))


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

        from .data.folder import decode_one

        images, kept = [], []
        for i, file in enumerate(files):
            image = decode_one(file)
            if isinstance(image, str):
                if self.on_bad_file == "error":
                    raise DataError(f"{file} is not a readable image ({image}); pass --on-bad-file=skip to skip such files")
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


# ---------------------------------------------------------------------------------------------
# Predicting

@dataclass
class Predictions:
    ids: list[str]
    outputs: torch.Tensor  # probabilities (classification) or values, one row per input
    targets: torch.Tensor | None
    entropy: torch.Tensor | None  # MC dropout's predictive entropy, in nats
    metrics: dict


@torch.inference_mode()
def predict(run: TrainedRun, inputs: Inputs, mc_samples: int = 0, progress=None) -> Predictions:
    """Every batch through the model; loss and metric summed as the run's own test evaluation sums them."""
    from .loss import make_loss, metric

    model, task = run.model, run.record["task"]
    criterion, _ = make_loss(run.cfg.loss, task, run.record["num_outputs"] if run.classification else 0,
                             run.cfg.regularization.label_smoothing)
    if mc_samples:
        dropout = [m for m in model.modules() if isinstance(m, (torch.nn.Dropout, torch.nn.AlphaDropout))]
        if not dropout:
            raise ConfigError("--mc-samples needs dropout in the model; this run trained without it "
                              "(regularization.dropout=0)")
        for m in dropout:
            m.train()
    ids, outputs, targets, entropy = [], [], [], []
    loss, score, n = torch.zeros(()), torch.zeros(()), 0
    for x, y, batch_ids in read_ahead(inputs.batches()) if inputs.read_ahead else inputs.batches():
        if progress:
            progress(len(x))
        if len(x) == 0:
            continue
        x = run.prepare(x)
        if mc_samples:  # the mean of the passes' probabilities; its log stands in for logits in the loss
            probs = torch.stack([model(x).float().softmax(1) for _ in range(mc_samples)]).mean(0)
            entropy.append(-(probs * probs.clamp_min(1e-12).log()).sum(1))
            logits = probs.clamp_min(1e-12).log()
        else:
            logits = model(x).float()
            probs = logits.softmax(1) if run.classification else logits
        if y is not None:
            loss += criterion(logits, y) * len(y)
            score += metric(logits, y, task)
            n += len(y)
            targets.append(y)
        outputs.append(probs)
        ids += batch_ids
    model.eval()
    metrics = {}
    if inputs.labelled and n:
        name = "acc" if run.classification else "mae"
        metrics = {"loss": float(loss) / n, name: float(score) / n, "samples": n}
    return Predictions(ids, torch.cat(outputs) if outputs else torch.zeros(0, run.record["num_outputs"]),
                       torch.cat(targets) if targets else None, torch.cat(entropy) if entropy else None, metrics)


def read_ahead(batches: Iterator) -> Iterator:
    """Each batch read (decoded) by a thread while the model runs on the one before, where the model takes
    longer than the reading. torch's ops release the GIL; torchvision's decoders, on small files, hardly do.
    On 10,000 MNIST PNGs: a CNN (90 ms a batch against 9 ms of decoding) 1.80-1.90 s with the thread,
    1.98-2.33 s without; an MLP (1.3 ms a batch) 0.24-0.27 s with it, 0.21-0.22 s without, the two threads
    taking turns at the GIL. So the first batch is read here, and the time the model takes on it decides."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    first = next(batches, None)
    if first is None:
        return
    reading = time.perf_counter() - start
    yield first
    if time.perf_counter() - start - reading < reading:  # the model was quicker than the reading: no thread
        yield from batches
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        coming = pool.submit(next, batches, None)
        while (batch := coming.result()) is not None:
            coming = pool.submit(next, batches, None)
            yield batch


def rows(run: TrainedRun, p: Predictions, top_k: int) -> dict[str, list]:
    """Columns: id, the predicted label and its probability (then the next top-k), or the value(s); the
    target where known; the MC-dropout entropy where asked."""
    columns: dict[str, list] = {"id": p.ids}
    names = run.class_names
    if run.classification:
        probs, index = p.outputs.topk(top_k, dim=1)
        for k in range(top_k):
            suffix = "" if k == 0 else f"_{k + 1}"
            columns[f"label{suffix}"] = [names[i] for i in index[:, k].tolist()]
            columns[f"probability{suffix}"] = probs[:, k].tolist()
        if p.targets is not None:
            columns["target"] = [names[i] for i in p.targets.tolist()]
    else:
        for j in range(p.outputs.shape[1]):
            columns["value" if p.outputs.shape[1] == 1 else f"value_{j}"] = p.outputs[:, j].tolist()
        if p.targets is not None:
            for j in range(p.targets.shape[1]):
                columns["target" if p.targets.shape[1] == 1 else f"target_{j}"] = p.targets[:, j].tolist()
    if p.entropy is not None:
        columns["entropy"] = p.entropy.tolist()
    return columns


def write_rows(columns: dict[str, list], path: Path) -> None:
    """CSV, JSON lines or Parquet by the extension; written to a temporary name, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet

        pyarrow.parquet.write_table(pa.table(columns), tmp)
    elif path.suffix == ".jsonl":
        keys = list(columns)
        with open(tmp, "w") as f:
            for values in zip(*columns.values()):
                f.write(json.dumps(dict(zip(keys, values))) + "\n")
    else:
        import csv

        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(zip(*columns.values()))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Scoring labelled inputs

def per_class(run: TrainedRun, p: Predictions) -> tuple[np.ndarray, list[dict]]:
    """The confusion matrix (rows: true class, columns: predicted) and each class's precision, recall, F1."""
    k = len(run.class_names)
    predicted = p.outputs.argmax(1)
    confusion = torch.bincount(p.targets * k + predicted, minlength=k * k).reshape(k, k).numpy()
    table = []
    for c, name in enumerate(run.class_names):
        tp, predicted_c, true_c = confusion[c, c], confusion[:, c].sum(), confusion[c].sum()
        precision = tp / predicted_c if predicted_c else 0.0
        recall = tp / true_c if true_c else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table.append({"class": name, "precision": float(precision), "recall": float(recall), "f1": float(f1),
                      "support": int(true_c)})
    return confusion, table


def confusion_figure(confusion: np.ndarray, names: list[str], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * k, 1.6 + 0.45 * k))
    ax.imshow(confusion, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_report(run: TrainedRun, p: Predictions, output: Path) -> list[Path]:
    """metrics and per-class scores (.md and .json), the confusion matrix (.png, and in the run's TensorBoard)."""
    written = []
    stem = output.with_suffix("")
    lines = [f"# Predictions of {run.run_dir} on {output.name}", "",
             *(f"- {k}: {v:.6g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in p.metrics.items())]
    report = {"metrics": p.metrics}
    if run.classification:
        confusion, table = per_class(run, p)
        report.update(per_class=table, confusion=confusion.tolist())
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|",
                  *(f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                    for r in table)]
        fig = confusion_figure(confusion, run.class_names, f"{run.run_dir.name}: {output.name}")
        fig.savefig(f"{stem}.confusion.png", dpi=120)
        written.append(Path(f"{stem}.confusion.png"))
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(run.run_dir)) as writer:  # beside the run's curves, under Images
            writer.add_figure(f"predict/confusion/{output.stem}", fig)
    Path(f"{stem}.report.md").write_text("\n".join(lines) + "\n")
    Path(f"{stem}.report.json").write_text(json.dumps(report, indent=1) + "\n")
    return [*written, Path(f"{stem}.report.md"), Path(f"{stem}.report.json")]


def default_output(run: TrainedRun, name: str) -> Path:
    """RUN/predictions/<name>.csv, or <name>-2.csv, ...: never an existing file."""
    folder = run.run_dir / "predictions"
    folder.mkdir(exist_ok=True)
    path, n = folder / f"{name}.csv", 1
    while path.exists() or Path(f"{path.with_suffix('')}.report.md").exists():
        n += 1
        path = folder / f"{name}-{n}.csv"
    return path


# ---------------------------------------------------------------------------------------------
# The command

def main(argv: list[str] | None = None) -> None:
    parser = Arguments(
        prog="trainrun-predict", description="Predict with a trained run (or a sweep's best run).",
        epilog="INPUT: a folder of images (flat, or class sub-folders), an image, a glob, a CSV/Parquet table, or an "
               ".npz/.npy/.pt of arrays; none: the run's test split. data.key=value: new arguments for the run's data "
               "option (its test split is predicted).")
    parser.add_argument("run", help="a run directory (outputs/<date>/<time>) or a sweep's (its best run)")
    parser.add_argument("input", nargs="*", default=[], help="INPUT and/or data.key=value overrides")
    parser.add_argument("--output", help="the predictions file: .csv, .jsonl or .parquet (never overwritten)")
    parser.add_argument("--top-k", type=int, default=1, help="the k most probable labels of each input (default 1)")
    parser.add_argument("--mc-samples", type=int, default=0, help="MC dropout: passes with dropout on; adds entropy")
    parser.add_argument("--on-bad-file", choices=("error", "skip"), default="error",
                        help="an unreadable image: stop (default), or skip it and count it")
    parser.add_argument("--unseen", choices=("error", "zeros"), default="error",
                        help="a table's text value not seen in training: stop (default), or encode it as all zeros")
    parser.run(run_predict, argv)


def run_predict(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.progress import Progress

    overrides = [a for a in args.input if "=" in a and a.lstrip("+~").split("=", 1)[0].replace(".", "").isidentifier()]
    sources = [a for a in args.input if a not in overrides]
    if len(sources) > 1:
        raise ConfigError(f"one INPUT at a time (got {', '.join(sources)}); a glob in quotes takes many files")
    if sources and overrides:
        raise ConfigError("give INPUT or data.* overrides (which predict the data option's test split), not both")
    output = Path(args.output).expanduser() if args.output else None
    if output is not None:
        if output.exists():
            raise ConfigError(f"--output={args.output} exists; nothing is overwritten: give a new name")
        if output.suffix not in FORMATS:
            raise ConfigError(f"--output={args.output}: the extension says the format: {', '.join(sorted(FORMATS))}")
        if not output.parent.is_dir():
            raise ConfigError(f"--output={args.output}: no folder {output.parent}")
        if output.suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
            raise ConfigError("--output=*.parquet is written with pyarrow: pip install 'trainrun[table]'")
    if args.mc_samples < 0 or args.mc_samples == 1:
        raise ConfigError(f"--mc-samples={args.mc_samples}: 0 (off) or at least 2 passes")
    run = open_run(args.run, overrides, loads_data=not sources)
    if run.classification and not 1 <= args.top_k <= len(run.class_names):
        raise ConfigError(f"--top-k={args.top_k}: between 1 and the run's {len(run.class_names)} classes")
    if args.mc_samples and not run.classification:
        raise ConfigError("--mc-samples applies to classification runs (the entropy of the class probabilities)")
    inputs = read_inputs(run, sources[0] if sources else None, args.on_bad_file, args.unseen)
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=inputs.count < 5 * BATCH) as bar:
        task = bar.add_task(f"predicting {inputs.count:,} inputs", total=inputs.count)
        p = predict(run, inputs, args.mc_samples, lambda n: bar.advance(task, n))
    if not p.ids:
        raise DataError(f"{sources[0] if sources else 'the test split'}: no input left to predict")
    notes = inputs.notes + ([f"skipped {len(inputs.skipped)} unreadable files (the first: {inputs.skipped[0]})"]
                            if inputs.skipped else [])
    output = output or default_output(run, inputs.name)
    write_rows(rows(run, p, args.top_k), output)
    written = [output, *(write_report(run, p, output) if p.metrics else [])]
    print(f"run: {run.run_dir}")
    for note in notes:
        print(f"note: {note}")
    print(f"{len(p.ids):,} predictions: {output}")
    if p.metrics:
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in p.metrics.items()))
        print(f"report: {', '.join(str(w) for w in written[1:])}")


if __name__ == "__main__":
    main()
