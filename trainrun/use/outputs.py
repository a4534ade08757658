"""What trainrun-predict writes: one row per input (.csv, .jsonl or .parquet) and, for labelled inputs, the
metrics, a confusion matrix and per-class precision, recall and F1 beside it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .trained import TrainedRun

FORMATS = {".csv", ".jsonl", ".parquet"}


@dataclass
class Predictions:
    ids: list[str]
    outputs: torch.Tensor  # probabilities (classification) or values, one row per input
    targets: torch.Tensor | None
    entropy: torch.Tensor | None  # MC dropout's predictive entropy, in nats
    metrics: dict


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


COMPANIONS = (".report.md", ".report.json", ".confusion.png")  # beside the predictions of labelled inputs


def companions(output: Path) -> list[Path]:
    """Every file predict may write for `output`: the predictions and, for labelled inputs, the report and the
    confusion matrix beside them."""
    stem = output.with_suffix("")
    return [output, *(Path(f"{stem}{suffix}") for suffix in COMPANIONS)]


def refuse_existing(output: Path) -> None:
    """Nothing a user had is overwritten: every file predict may write is checked before anything is."""
    existing = [path for path in companions(output) if path.exists()]
    if existing:
        shown = ", ".join(str(path) for path in existing)
        raise ConfigError(f"--output={output}: {shown} exists; nothing is overwritten: give a new name")


def write_evaluation(run: TrainedRun, p: Predictions, output: Path) -> list[Path]:
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
    """RUN/predictions/<name>.csv, or <name>-2.csv, ...: a name none of whose files exists."""
    folder = run.run_dir / "predictions"
    folder.mkdir(exist_ok=True)
    path, n = folder / f"{name}.csv", 1
    while any(p.exists() for p in companions(path)):
        n += 1
        path = folder / f"{name}-{n}.csv"
    return path
