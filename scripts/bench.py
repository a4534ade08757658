#!/usr/bin/env python
"""The same workload three ways, side by side in one sitting: trainrun, a bare PyTorch loop, the tutorial pipeline.

    python scripts/bench.py                       # all workloads, 3 interleaved rounds
    python scripts/bench.py --workloads mlp --rounds 5 --epochs 6

1. trainrun through its CLI, default logging on (TensorBoard, histograms, checkpoints, early-stopping logic);
2. a bare loop over the same tensors, written plainly below (no trainrun code), with Adam as a user writes it
   and again with the fused Adam trainrun uses (so the pure framework overhead shows);
3. the tutorial pipeline: torchvision.datasets.MNIST, per-sample ToTensor/Normalize (and augmentation), DataLoader.

Each pipeline runs in its own process, rounds interleave them, and the table gives min/median/max seconds per
epoch (the first epoch of each run is warm-up and left out), final test accuracy, peak RSS and ratios to the
bare loop. trainrun's epoch time is the wall time between its successive end-of-epoch events, so it includes
everything it does per epoch (logging, histograms, checkpoints). Start-up is measured separately.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"

# trainrun overrides per workload: 8,000 train / 2,000 test MNIST images, no validation split, fixed epochs
COMMON = ["data.val_fraction=0", "trainer.early_stopping.monitor=train/loss", "trainer.early_stopping.patience=1000"]
WORKLOADS = {
    "mlp": ["data=mnist", f"data.root={MNIST}", "data.test_set_only=true", "model.hidden=[512,512]",
            "data.batch_size=128", *COMMON],
    "cnn_aug": ["data=mnist", f"data.root={MNIST}", "data.test_set_only=true", "model=cnn", "data.batch_size=128",
                "augmentation=[crop,flip]", *COMMON],
    "digits": [*COMMON],
}


# ------------------------------------------------------------------------------------------- workers
def load_tensors(workload: str):
    """(x_train, y_train, x_test, y_test) as float images in [0, 1] and int64 labels; same split idea as trainrun."""
    import gzip

    import numpy as np
    import torch

    if workload == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(d.target)
    else:
        def idx(name):
            raw = gzip.open(MNIST / name).read()
            return np.frombuffer(raw, np.uint8, offset=16 if "images" in name else 8)
        x = torch.tensor(idx("t10k-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28).copy()).float() / 255
        y = torch.tensor(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = int(0.2 * len(y))
    return x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]]


def make_model(workload: str, shape):
    import torch.nn as nn

    if workload == "cnn_aug":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    width = 512 if workload == "mlp" else 256
    inputs = shape[1] * shape[2] * shape[3]
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def bare(workload: str, epochs: int, fused: bool) -> dict:
    """A plain loop: tensors, index slices, per-sample flip and crop done with tensor ops."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, y, xt, yt = load_tensors(workload)
    mean, std = x.mean(), x.std()
    model = make_model(workload, x.shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    batch = 128 if workload != "digits" else 64
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(y)).split(batch):
            xb, yb = x[idx], y[idx]
            if workload == "cnn_aug":
                flip = torch.rand(len(xb)) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                padded = F.pad(xb, (2, 2, 2, 2))
                dx, dy = torch.randint(0, 5, (2,)).tolist()  # one shift per batch: the cheapest hand-written crop
                xb = padded[:, :, dy:dy + 28, dx:dx + 28]
            loss = F.cross_entropy(model((xb - mean) / std), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        acc = (model((xt - mean) / std).argmax(1) == yt).float().mean().item()
    return {"epoch_s": times, "acc": acc}


def write_idx(path: Path, array) -> None:
    """An uncompressed IDX file, the format MNIST is published in: magic (ubyte, ndim), big-endian dims, data."""
    import numpy as np

    path.write_bytes(bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes() + array.tobytes())


def tutorial(workload: str, epochs: int) -> dict:
    """What the tutorials teach: torchvision.datasets.MNIST (PIL images), per-sample transforms, a DataLoader.

    The same train/test tensors are written as the four IDX files MNIST(root, download=False) reads."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    x, y, xt, yt = load_tensors(workload)
    mean, std = float(x.mean()), float(x.std())
    augment = [transforms.RandomCrop(x.shape[-1], padding=2), transforms.RandomHorizontalFlip()] \
        if workload == "cnn_aug" else []
    with tempfile.TemporaryDirectory() as root:  # MNIST reads the files into memory when it is made
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for prefix, images, labels in (("train", x, y), ("t10k", xt, yt)):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", (images * 255).round().byte().squeeze(1).numpy())
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.byte().numpy())
        train = datasets.MNIST(root, train=True, transform=transforms.Compose(
            [*augment, transforms.ToTensor(), transforms.Normalize((mean,), (std,))]))
        test = datasets.MNIST(root, train=False, transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]))
    assert len(train) == len(y) and len(test) == len(yt)
    model = make_model(workload, x.shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(train, batch_size=128 if workload != "digits" else 64, shuffle=True)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in DataLoader(test, batch_size=1000):
            correct += (model(xb).argmax(1) == yb).sum().item()
    return {"epoch_s": times, "acc": correct / len(test)}


# ------------------------------------------------------------------------------------------- driver
def run_child(cmd: list[str]) -> tuple[str, float]:
    """Run a process; returns (stdout, its own peak RSS in MiB)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd[:4])}... failed: {proc.stderr.read()[-800:]}")
        return out.read(), usage.ru_maxrss / 1024


def run_trainrun(workload: str, epochs: int, tmp: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp / f"trainrun-{workload}-{time.time_ns()}"
    _, rss = run_child([sys.executable, "-m", "trainrun", *WORKLOADS[workload], f"trainer.epochs={epochs}",
                        f"hydra.run.dir={run_dir}"])
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    ends = [e.wall_time for e in events.Scalars("epoch")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # epoch k's time: from the end of epoch k-1 to the end of epoch k (all per-epoch work included)
    return {"epoch_s": [b - a for a, b in zip(ends, ends[1:])], "acc": metrics["test/acc"], "rss_mib": rss,
            "warm": True}


def run_worker(kind: str, workload: str, epochs: int) -> dict:
    out, rss = run_child([sys.executable, __file__, "--worker", kind, "--workloads", workload, "--epochs", str(epochs)])
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "rss_mib": rss}


def startup(tmp: Path) -> None:
    def best_of(cmd, n=5):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, cwd=tmp)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    torch_import = best_of([sys.executable, "-c", "import torch"])
    help_s = best_of([sys.executable, "-m", "trainrun", "--help"])
    error_s = best_of([sys.executable, "-m", "trainrun", "optimizer.lr=-1"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    firsts = []
    for i in range(3):
        run_dir = tmp / f"startup{i}"
        launched = time.time()
        subprocess.run([sys.executable, "-m", "trainrun", "trainer.epochs=1", f"hydra.run.dir={run_dir}"],
                       capture_output=True, cwd=tmp)
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
        firsts.append(events.Scalars("lr")[0].wall_time - launched)
    print("\nstart-up (median seconds)")
    print(f"  python -c 'import torch'           {torch_import:6.2f}")
    print(f"  trainrun --help                    {help_s:6.2f}   ({help_s / torch_import:.2f}x of importing torch)")
    print(f"  trainrun optimizer.lr=-1 (error)   {error_s:6.2f}   ({error_s / torch_import:.2f}x)")
    print(f"  trainrun: command to first step    {statistics.median(firsts):6.2f}")


def summarize(name: str, runs: dict[str, list[dict]]) -> None:
    rows = {}
    for kind, results in runs.items():
        epochs = [t for r in results for t in r["epoch_s"][(0 if r.get("warm") else 1):]]
        rows[kind] = (min(epochs), statistics.median(epochs), max(epochs),
                      statistics.median(r["acc"] for r in results), max(r["rss_mib"] for r in results))
    base = rows["bare"][1]
    print(f"\n{name}: seconds per epoch (warm-up epoch left out), test accuracy, peak RSS")
    print(f"  {'pipeline':<16}{'min':>8}{'median':>8}{'max':>8}{'acc':>8}{'RSS MiB':>9}{'vs bare':>9}{'vs tutorial':>12}")
    for kind, (lo, med, hi, acc, rss) in rows.items():
        print(f"  {kind:<16}{lo:8.3f}{med:8.3f}{hi:8.3f}{acc:8.3f}{rss:9.0f}{med / base:9.2f}"
              f"{med / rows['tutorial'][1]:12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="mlp,cnn_aug,digits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--worker", choices=["bare", "bare_fused", "tutorial"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one pipeline in this process: print its result as the last line
        result = tutorial(args.workloads, args.epochs) if args.worker == "tutorial" else \
            bare(args.workloads, args.epochs, fused=args.worker == "bare_fused")
        print(json.dumps(result))
        return
    if not MNIST.is_dir():
        raise SystemExit(f"the MNIST test set is expected at {MNIST}")
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"{args.rounds} interleaved rounds of {args.epochs} epochs")
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads.split(","):
            runs = {"trainrun": [], "bare": [], "bare_fused": [], "tutorial": []}
            for _ in range(args.rounds):
                runs["trainrun"].append(run_trainrun(workload, args.epochs + 1, Path(tmp)))
                for kind in ("bare", "bare_fused", "tutorial"):
                    runs[kind].append(run_worker(kind, workload, args.epochs))
            summarize(workload, runs)
        startup(Path(tmp))


if __name__ == "__main__":
    main()
