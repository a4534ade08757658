"""trainrun-export: a trained run's model as ONNX and torch.export's .pt2, each verified before it is reported.

    trainrun-export RUN [--format onnx,pt2] [--output DIR]

The exported graph takes what a user has (uint8 pixels, or the feature columns in the saved order): the
preprocessing that is a tensor operation (uint8 to float, the saved normalization) is part of it, and its
output is the model's (logits for classification). model.json beside it says the input's shape and dtype,
the class names and the preprocessing. Each file is loaded back (ONNX Runtime; torch.export.load) and run on
real inputs from the run's test split against eager PyTorch: the largest absolute difference is printed, and
above TOLERANCE the export is an error and its file is removed.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import re
import shutil
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .trained import Arguments, TrainedRun, open_run

TOLERANCE = 1e-4
FORMATS = ("onnx", "pt2")
NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "pt2": ()}  # modules each format's export and check import
VERIFY_BATCH = 64  # inputs checked; at least 2, or torch.export would fix the batch dimension at 1


class Deployed(torch.nn.Module):
    """Raw inputs -> the run's preprocessing -> the model: what the exported graph computes."""

    def __init__(self, run: TrainedRun):
        super().__init__()
        self.run, self.model = run, run.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.run.prepare(x))


def sample_inputs(run: TrainedRun) -> tuple[torch.Tensor, str]:
    """Real inputs from the run's test split, raw as a user would pass them; where the training data are not
    at hand, random inputs of the saved shape and dtype (and the line says so)."""
    from .inputs import split_inputs

    try:
        x, _, _ = next(iter(split_inputs(run).batches()))
        if len(x) >= 2:
            return x[:VERIFY_BATCH], f"{min(len(x), VERIFY_BATCH)} inputs of the run's test split"
    except (ConfigError, DataError):
        pass
    shape = (VERIFY_BATCH, *run.input_shape)
    if run.record["input_dtype"] == "uint8":
        return torch.randint(0, 256, shape, dtype=torch.uint8), "random pixels (the training data are not at hand)"
    return torch.randn(shape), "random inputs (the training data are not at hand)"


def export_pt2(module: Deployed, x: torch.Tensor, path: Path) -> torch.Tensor:
    """torch.export with a dynamic batch dimension; returns the loaded program's output on x."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (x,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return torch.export.load(str(path)).module()(x)


def export_onnx(module: Deployed, x: torch.Tensor, path: Path) -> torch.Tensor:
    """The installed exporter's ONNX (its default opset), a dynamic batch axis; returns ONNX Runtime's output on x."""
    import onnxruntime

    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False, input_names=["x"], output_names=["y"],
                      dynamic_shapes={"x": {0: batch}}, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


EXPORTERS = {"onnx": export_onnx, "pt2": export_pt2}


def describe(run: TrainedRun, formats: list[str]) -> dict:
    record = run.record
    return {"run": str(run.run_dir), "formats": {f: f"model.{f}" for f in formats},
            "input": {"name": "x", "shape": ["batch", *record["input_shape"]], "dtype": record["input_dtype"]},
            "output": {"name": "y", "shape": ["batch", record["num_outputs"]],
                       "meaning": "logits (softmax gives the class probabilities)" if run.classification
                       else "the predicted values"},
            "task": record["task"], "class_names": run.class_names if run.classification else None,
            "inside_the_graph": [input_scaling(run),
                                 f"data.normalize={record['normalize']['kind']} with the train split's statistics"],
            "preprocessing": {k: record[k] for k in ("inputs", "normalize")}}


def input_scaling(run: TrainedRun) -> str:
    """What the exported graph expects of its input and does to it first."""
    if run.record["input_dtype"] == "uint8":
        return "uint8 pixels (0-255), divided by 255 inside the graph"
    scaling = DATASETS.trait(run.cfg.data.kind, "scaling")
    return f"float32 inputs, {scaling}" if scaling else "float32 inputs, as the training data gave them (not rescaled)"


def main(argv: list[str] | None = None) -> None:
    parser = Arguments(prog="trainrun-export", description="Export a trained run's model, verified.")
    parser.add_run()
    parser.add_argument("--format", default="onnx,pt2", help=f"comma-separated: {', '.join(FORMATS)} (default both)")
    parser.add_argument("--output", help="a new folder for the files (default: RUN/export, RUN/export-2, ...)")
    parser.run(run_export, argv)


def run_export(args: argparse.Namespace) -> None:
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"--format={args.format}: choose from {', '.join(FORMATS)}")
    for f in formats:
        missing = [m for m in NEEDS[f] if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"--format={f} needs {', '.join(missing)}: pip install 'trainrun[export]'")
    if args.output and Path(args.output).exists():
        raise ConfigError(f"--output={args.output} exists; nothing is overwritten: give a new folder")
    run = open_run(args.run, checkpoint=args.checkpoint)
    for note in run.notes:
        print(f"note: {note}")
    logging.getLogger("torch").setLevel(logging.ERROR)  # torch's own handler writes to the stderr it started with
    out = Path(args.output).expanduser() if args.output else new_folder(run.run_dir / "export")
    module = Deployed(run).eval()
    x, what = sample_inputs(run)
    with torch.no_grad():
        expected = module(x)
    out.mkdir(parents=True)
    try:
        for f in formats:
            path = out / f"model.{f}"
            try:  # the exporters print graphs and warnings on their way; a failure is said here in one line
                with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                    got = EXPORTERS[f](module, x, path)
            except Exception as e:  # what the exporter could not trace, in its own words
                raise ConfigError(f"--format={f}: {type(run.model).__name__} cannot be exported: "
                                  f"{exporter_error(e)}") from None
            difference = float((got.float() - expected).abs().max())
            if difference > TOLERANCE:
                raise ConfigError(f"--format={f}: the exported model differs from PyTorch's by {difference:.2e} "
                                  f"(more than {TOLERANCE:g}) on {what}")
            print(f"{path}: verified on {what}, largest absolute difference {difference:.2e}")
        (out / "model.json").write_text(json.dumps(describe(run, formats), indent=1) + "\n")
    except BaseException:
        shutil.rmtree(out)  # nothing half-made is left behind
        raise
    print(f"model.json: {out / 'model.json'}")


def exporter_error(e: BaseException) -> str:
    """One clean line from either exporter: the root of the exception chain (the ONNX exporter wraps
    torch.export's error in a page of advice with terminal colours), without colour codes or links."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m|https?://\S+", "", " ".join(str(e).split()))
    first = text.split(". ")[0].strip()[:160] or type(e).__name__
    if "DataDependent" in type(e).__name__ or "data-dependent" in text:
        return (f"its control flow depends on the input's values (data-dependent: {first}), and an exported graph "
                "holds one path; write the branch with torch.where or torch.cond")
    return first


def new_folder(base: Path) -> Path:
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


if __name__ == "__main__":
    main()
