#!/usr/bin/env python
"""A folder of real image files: trainrun's data=folder against the tutorial pipeline, side by side.

    python scripts/bench_folder.py [--epochs 3]

Writes the MNIST test set (../shared/data/mnist) as 10,000 PNG files in class folders, then measures, in one
sitting on this machine:
  - the tutorial pipeline: torchvision.datasets.ImageFolder + PIL + ToTensor/Normalize + a DataLoader with 2
    workers, training trainrun's default MLP (784-256-256-10, Adam, batch 64): seconds per epoch;
  - trainrun data=folder, first run (decodes the files and writes its cache) and second run (reads the cache):
    seconds per epoch, the first run's wall time to its first step, and command-to-first-step of the second run
    against the same data as a shipped dataset (data=mnist data.test_set_only=true);
  - memory: resident memory of CIFAR-sized data (50,000 x 3 x 32 x 32) held by a process, as uint8 (trainrun's
    storage) and as float32 (its storage before).
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

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"


def write_pngs(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("mnist_png", ROOT / "scripts" / "mnist_png.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_pngs(out)


def tutorial(folder: Path, epochs: int) -> list[float]:
    """The pipeline a tutorial teaches, on the same folder and model."""
    import torch
    from torch import nn
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    ds = datasets.ImageFolder(str(folder), transform=transforms.Compose([
        transforms.Grayscale(), transforms.ToTensor(), transforms.Normalize((0.1325,), (0.3105,))]))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2, persistent_workers=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times


def trainrun(args: list[str], run_dir: Path, cwd: Path) -> tuple[float, float, list[float]]:
    """(wall seconds of the whole command, seconds from the command to its first step, per-epoch seconds)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    launched = time.time()
    done = subprocess.run([sys.executable, "-m", "trainrun", *args, f"hydra.run.dir={run_dir}",
                           "trainer.early_stopping.enabled=false"], capture_output=True, text=True, cwd=cwd)
    wall = time.time() - launched
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return wall, events.Scalars("step/lr")[0].wall_time - launched, [e.value for e in events.Scalars("time/epoch_s")]


def held_mib(as_float32: bool) -> float:
    """Resident memory that CIFAR-sized data (50,000 x 3 x 32 x 32 through trainrun's loader) add to a process,
    as trainrun stores them (uint8) or as it stored them before (float32)."""
    code = ("import re, torch\n"
            "from hydra import compose, initialize_config_module\n"
            "from trainrun.config import register\nfrom trainrun.data import load\n"
            "rss = lambda: int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024\n"
            "register()\n"
            "with initialize_config_module('trainrun.conf', version_base='1.3'):\n"
            "    cfg = compose('config', overrides=['data=synthetic_images', 'data.n_samples=50000'])\n"
            "before = rss()\n"
            "data = load(cfg.data, 0, torch.device('cpu'), prenormalize=True)\n"
            f"splits = [data.train, data.val, data.test]\n"
            f"held = [s.x.float().div_(255) for s in splits] if {as_float32} else [s.x for s in splits]\n"
            f"del data, splits\n"
            "print(rss() - before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not MNIST.is_dir():
        raise SystemExit(f"needs the MNIST test set in {MNIST}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "mnist_png"
        write_pngs(folder)
        common = ["data=folder", f"data.root={folder}", f"data.cache_dir={tmp / 'cache'}",
                  f"trainer.epochs={args.epochs}", "data.test_fraction=0.2"]
        first_wall, first_step, first_epochs = trainrun(common, tmp / "first", tmp)
        second_wall, second_step, second_epochs = trainrun(common, tmp / "second", tmp)
        shipped_wall, shipped_step, _ = trainrun(
            ["data=mnist", f"data.root={MNIST}", "data.test_set_only=true", f"trainer.epochs={args.epochs}"],
            tmp / "shipped", tmp)
        tutorial_epochs = tutorial(folder, args.epochs)
    ours, theirs = statistics.median(second_epochs[1:]), statistics.median(tutorial_epochs[1:])
    print("10,000 MNIST PNG files in class folders; MLP 784-256-256-10, Adam, batch 64 (trainrun trains on its 7,200 "
          "train images, the tutorial on all 10,000: it has no split)")
    print(f"  seconds per epoch (median after the first): trainrun {ours:.3f}, tutorial {theirs:.3f} "
          f"-> trainrun {theirs / ours:.1f}x faster per epoch, {theirs / 10000 / (ours / 7200):.1f}x per image")
    print(f"  tutorial's first epoch {tutorial_epochs[0]:.2f} s; trainrun's first run, command to first step "
          f"(decoding and caching): {first_step:.2f} s")
    print(f"  second run (from the cache): command to first step {second_step:.2f} s; the same images as a shipped "
          f"dataset (data=mnist): {shipped_step:.2f} s ({second_step - shipped_step:+.2f} s)")
    print(f"  whole command, {args.epochs} epochs: first run {first_wall:.1f} s, second {second_wall:.1f} s")
    uint8, float32 = held_mib(False), held_mib(True)
    print(f"  resident memory of CIFAR-sized data (50,000 x 3 x 32 x 32) held after loading: uint8 (trainrun) "
          f"{uint8:.0f} MiB, float32 {float32:.0f} MiB")


if __name__ == "__main__":
    main()
