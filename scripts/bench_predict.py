#!/usr/bin/env python
"""trainrun-predict and the exported model against the pipelines a user would write, side by side in one sitting.

    python scripts/bench_predict.py [--rounds 3]

Writes the MNIST test set (../shared/data/mnist) as 10,000 PNG files in class folders, trains two runs on them
(data=folder: the default MLP and model=cnn, one epoch on 2,000 images; speed does not depend on accuracy),
then measures, each the median of --rounds, in this process after a warm-up:
  - images: trainrun's predict on the 10,000 PNGs (decoding included) against timm's inference.py pipeline:
    torchvision ImageFolder + PIL + ToTensor/Normalize + a DataLoader with 2 workers (batch 256), the same model
    in eval mode under torch.inference_mode;
  - tensors: trainrun's predict on an .npy of the same 10,000 images against a bare `model(x)` loop (batch 512)
    under torch.inference_mode;
  - ONNX Runtime (CPU) on the exported model against eager PyTorch on the same batches;
  - listing, reading and decoding the PNGs alone (no model) against the same DataLoader pipeline: the
    ceiling on the first ratio for any predict that decodes with torchvision in one process.
Prints seconds and ratios; the README's figures come from this.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def write_pngs(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("mnist_png", ROOT / "scripts" / "mnist_png.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_pngs(out)


def train(folder: Path, run: Path, *overrides: str) -> None:
    subprocess.run([sys.executable, "-m", "trainrun", "data=folder", f"data.root={folder}", "data.subset=2000",
                    "trainer.epochs=1", "logger.enabled=false", *overrides, f"hydra.run.dir={run}"],
                   check=True, capture_output=True, cwd=run.parent)


def paired(a, b, rounds: int) -> tuple[float, float, float]:
    """Median seconds of `a` and of `b`, and the median of their per-round ratio b/a: the two alternate
    round by round, so a slow spell of this (noisy) machine falls on both."""
    a(), b()  # warm-up: imports, first allocations, the page cache
    times = []
    for _ in range(rounds):
        pair = []
        for fn in (a, b):
            start = time.perf_counter()
            fn()
            pair.append(time.perf_counter() - start)
        times.append(pair)
    return (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times),
            statistics.median(t[1] / t[0] for t in times))


def trainrun_predict(run_dir: Path, source: Path):
    from trainrun.use.inputs import read_inputs
    from trainrun.use.predict import predict
    from trainrun.use.trained import open_run

    run = open_run(str(run_dir))  # once, as the command does: then reading, decoding and the model

    def go():
        return predict(run, read_inputs(run, str(source), "error", "error"))
    return go


def timm_style(run_dir: Path, folder: Path):
    """timm inference.py's shape: a Dataset decoding with PIL, a DataLoader with workers, eval + inference_mode."""
    from torchvision import datasets, transforms

    from trainrun.use.trained import open_run

    run = open_run(str(run_dir))
    mean, std = float(run.normalize.mean.flatten()[0]), 1 / float(run.normalize.scale.flatten()[0])
    dataset = datasets.ImageFolder(str(folder), transform=transforms.Compose([
        transforms.Grayscale(), transforms.ToTensor(), transforms.Normalize((mean,), (std,))]))

    def go():
        loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=2)
        with torch.inference_mode():
            return [run.model(x).softmax(1) for x, _ in loader]
    return go


def decoding_alone(folder: Path):
    """What any one-process predict on the PNGs must at least do: list, read and decode them (torchvision's
    decoder, called as trainrun calls it), no model: the most trainrun-predict could gain against timm_style."""
    from trainrun.data.folder import decode_one, image_files

    return lambda: [decode_one(f) for f in image_files(folder)]


def bare_loop(run_dir: Path, x: torch.Tensor):
    from trainrun.use.trained import open_run

    run = open_run(str(run_dir))

    def go():
        with torch.inference_mode():
            return [run.model(run.prepare(x[s:s + 512])) for s in range(0, len(x), 512)]
    return go


def onnx_and_eager(run_dir: Path, x: torch.Tensor):
    import onnxruntime

    from trainrun.use.export import Deployed, main as export
    from trainrun.use.trained import open_run

    out = run_dir.parent / f"{run_dir.name}-export"
    export([str(run_dir), "--format", "onnx", "--output", str(out)])
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    module = Deployed(open_run(str(run_dir))).eval()
    batches = [x[s:s + 512] for s in range(0, len(x), 512)]
    arrays = [b.numpy() for b in batches]

    def eager():
        with torch.inference_mode():
            return [module(b) for b in batches]
    return lambda: [session.run(None, {"x": a}) for a in arrays], eager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "mnist_png"
        write_pngs(folder)
        from trainrun.data.folder import decode_one

        files = sorted(folder.rglob("*.png"))
        pixels = torch.stack([decode_one(f) for f in files])
        np.save(tmp / "pixels.npy", pixels.numpy())
        for model in ("mlp", "cnn"):
            run = tmp / model
            train(folder, run, f"model={model}")
            ours, theirs, ratio = paired(trainrun_predict(run, folder), timm_style(run, folder), args.rounds)
            print(f"{model}, 10,000 PNGs: trainrun-predict {ours:.2f} s, ImageFolder+PIL+DataLoader(2 workers) "
                  f"{theirs:.2f} s: trainrun {ratio:.2f}x faster")
            if model == "mlp":
                alone, theirs, ratio = paired(decoding_alone(folder), timm_style(run, folder), args.rounds)
                print(f"10,000 PNGs listed, read and decoded alone, no model: {alone:.2f} s, "
                      f"ImageFolder+PIL+DataLoader(2 workers) {theirs:.2f} s: the most any one-process predict "
                      f"could be faster: {ratio:.2f}x")
            ours, bare, ratio = paired(trainrun_predict(run, tmp / "pixels.npy"), bare_loop(run, pixels), args.rounds)
            print(f"{model}, 10,000 images as tensors: trainrun-predict {ours:.3f} s, bare model(x) loop {bare:.3f} s: "
                  f"trainrun takes {1 / ratio:.2f}x the bare loop's time")
            onnx, eager, ratio = paired(*onnx_and_eager(run, pixels), args.rounds)
            print(f"{model}, ONNX Runtime {onnx:.3f} s, eager PyTorch {eager:.3f} s: ONNX Runtime takes "
                  f"{1 / ratio:.2f}x eager's time")

if __name__ == "__main__":
    main()
