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
import importlib.util
import time
from pathlib import Path
from typing import Iterator

import torch

from ..errors import ConfigError, DataError
from .inputs import BATCH, Inputs, read_inputs
from .outputs import FORMATS, Predictions, default_output, refuse_existing, rows, write_evaluation, write_rows
from .trained import Arguments, TrainedRun, open_run


@torch.inference_mode()
def predict(run: TrainedRun, inputs: Inputs, mc_samples: int = 0, progress=None) -> Predictions:
    """Every batch through the model; loss and metric summed as the run's own test evaluation sums them."""
    from ..options.loss import make_loss, metric

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


# ---------------------------------------------------------------------------------------------
# The command

def main(argv: list[str] | None = None) -> None:
    parser = Arguments(
        prog="trainrun-predict", description="Predict with a trained run (or a sweep's best run).",
        epilog="INPUT: a folder of images (flat, or class sub-folders), an image, a glob, a CSV/Parquet table, or an "
               ".npz/.npy/.pt of arrays; none: the run's test split. data.key=value: new arguments for the run's data "
               "option (its test split is predicted).")
    parser.add_run()
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

    overrides = [a for a in args.input if "=" in a and a.lstrip("+~").split("=", 1)[0].replace(".", "").isidentifier()
                 and not Path(a).expanduser().exists()]  # a path that exists is a path (batch=2.npy)
    sources = [a for a in args.input if a not in overrides]
    if len(sources) > 1:
        raise ConfigError(f"one INPUT at a time (got {', '.join(sources)}); a glob in quotes takes many files")
    if sources and overrides:
        raise ConfigError("give INPUT or data.* overrides (which predict the data option's test split), not both")
    output = Path(args.output).expanduser() if args.output else None
    if output is not None:
        refuse_existing(output)
        if output.suffix not in FORMATS:
            raise ConfigError(f"--output={args.output}: the extension says the format: {', '.join(sorted(FORMATS))}")
        if not output.parent.is_dir():
            raise ConfigError(f"--output={args.output}: no folder {output.parent}")
        if output.suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
            raise ConfigError("--output=*.parquet is written with pyarrow: pip install 'trainrun[table]'")
    if args.mc_samples < 0 or args.mc_samples == 1:
        raise ConfigError(f"--mc-samples={args.mc_samples}: 0 (off) or at least 2 passes")
    run = open_run(args.run, overrides, loads_data=not sources, checkpoint=args.checkpoint)
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
    notes = run.notes + inputs.notes + ([f"skipped {len(inputs.skipped)} unreadable files (the first: {inputs.skipped[0]})"]
                            if inputs.skipped else [])
    output = output or default_output(run, inputs.name)
    write_rows(rows(run, p, args.top_k), output)
    written = [output, *(write_evaluation(run, p, output) if p.metrics else [])]
    print(f"run: {run.run_dir}")
    for note in notes:
        print(f"note: {note}")
    print(f"{len(p.ids):,} predictions: {output}")
    if p.metrics:
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in p.metrics.items()))
        print(f"report: {', '.join(str(w) for w in written[1:])}")


if __name__ == "__main__":
    main()
