#!/usr/bin/env python
"""The same workload three ways, side by side in one sitting: trainrun, a bare PyTorch loop, the tutorial pipeline.

    python scripts/bench.py                       # the CPU workloads (and resnet where CUDA is), 3 interleaved rounds
    python scripts/bench.py --workloads mlp --rounds 5 --epochs 6
    python scripts/bench.py --workloads resnet --images 50000     # GPU throughput: ResNet-18, synthetic 32x32 RGB
    python scripts/bench.py --workloads mlp --trainrun-args logger.layers=true   # what per-layer logging costs
    python scripts/bench.py --sharing --rounds 3  # two trainrun commands at once: every core each, or each its share

1. trainrun through its CLI, default logging on (TensorBoard, histograms, checkpoints, early-stopping logic);
2. a bare loop over the same tensors, written plainly below (no trainrun code), with Adam as a user writes it
   and again with the fused Adam trainrun uses (so the pure framework overhead shows);
3. the tutorial pipeline: torchvision.datasets.MNIST, per-sample ToTensor/Normalize (and augmentation), DataLoader.

Each pipeline runs in its own process, rounds interleave them, and the table gives min/median/max seconds per
epoch (the first epoch of each run is warm-up and left out), images per second, final test accuracy, peak RSS
(and peak CUDA memory on a GPU) and ratios to the bare loop. On CUDA every pipeline runs there: the bare loop
keeps the data on the GPU, the tutorial copies pinned batches; the resnet workload uses bf16 autocast and
channels_last in trainrun and in the bare loop alike, and has no tutorial pipeline (its data are synthetic). trainrun's epoch time is the wall time between its successive end-of-epoch events, so it includes
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
GPU_RESNET = ["trainer.precision=bf16", "trainer.channels_last=true"]  # the resnet workload on CUDA, both pipelines
WORKLOADS = {
    "mlp": ["data=mnist", f"data.root={MNIST}", "data.test_set_only=true", "model.hidden=[512,512]",
            "data.batch_size=128", *COMMON],
    "cnn_aug": ["data=mnist", f"data.root={MNIST}", "data.test_set_only=true", "model=cnn", "data.batch_size=128",
                "augmentation=[crop,flip]", *COMMON],
    "digits": [*COMMON],
    "resnet": ["data=synthetic_images", "data.test_fraction=0.2", "model=torchvision", "model.name=resnet18",
               "model.small_input=false",  # the bare loop's torchvision resnet18 keeps ImageNet's stem: the same net
               "data.batch_size=256", *COMMON],
}
BATCH = {"mlp": 128, "cnn_aug": 128, "digits": 64, "resnet": 256}


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------------- workers
def load_tensors(workload: str, images: int):
    """(x_train, y_train, x_test, y_test) as float images in [0, 1] and int64 labels; same split idea as trainrun."""
    import gzip

    import numpy as np
    import torch

    if workload == "resnet":  # what data=synthetic_images draws: random images, random labels
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(images, 3, 32, 32, generator=g), torch.randint(10, (images,), generator=g)
    elif workload == "digits":
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

    if workload == "resnet":
        from torchvision.models import resnet18

        return resnet18(num_classes=10)
    if workload == "cnn_aug":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    width = 512 if workload == "mlp" else 256
    inputs = shape[1] * shape[2] * shape[3]
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def bare(workload: str, epochs: int, fused: bool, images: int) -> dict:
    """A plain loop: tensors on the device, index slices, per-sample flip and crop done with tensor ops."""
    import contextlib

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    dev = device()
    x, y, xt, yt = (t.to(dev) for t in load_tensors(workload, images))
    mean, std = x.mean(), x.std()
    model = make_model(workload, x.shape).to(dev)
    gpu_resnet = workload == "resnet" and dev.type == "cuda"
    if gpu_resnet:
        model = model.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast("cuda", torch.bfloat16)) if gpu_resnet else contextlib.nullcontext
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(y), device=dev).split(BATCH[workload]):
            xb, yb = x[idx], y[idx]
            if workload == "cnn_aug":
                flip = torch.rand(len(xb)) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                padded = F.pad(xb, (2, 2, 2, 2))
                dx, dy = torch.randint(0, 5, (2,)).tolist()  # one shift per batch: the cheapest hand-written crop
                xb = padded[:, :, dy:dy + 28, dx:dx + 28]
            xb = (xb - mean) / std
            if gpu_resnet:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast():
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad(), autocast():
        correct = sum(int((model((xt[i:i + 1000] - mean) / std).argmax(1) == yt[i:i + 1000]).sum())
                      for i in range(0, len(yt), 1000))
    return {"epoch_s": times, "acc": correct / len(yt), "n": len(y), **cuda_memory()}


def cuda_memory() -> dict:
    import torch

    return {"cuda_mib": torch.cuda.max_memory_allocated() / 2**20} if torch.cuda.is_available() else {}


def write_idx(path: Path, array) -> None:
    """An uncompressed IDX file, the format MNIST is published in: magic (ubyte, ndim), big-endian dims, data."""
    import numpy as np

    path.write_bytes(bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes() + array.tobytes())


def tutorial(workload: str, epochs: int, images: int) -> dict:
    """What the tutorials teach: torchvision.datasets.MNIST (PIL images), per-sample transforms, a DataLoader.

    The same train/test tensors are written as the four IDX files MNIST(root, download=False) reads."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    dev = device()
    x, y, xt, yt = load_tensors(workload, images)
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
    model = make_model(workload, x.shape).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(train, batch_size=BATCH[workload], shuffle=True, pin_memory=dev.type == "cuda")
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in DataLoader(test, batch_size=1000):
            correct += (model(xb.to(dev)).argmax(1).cpu() == yb).sum().item()
    return {"epoch_s": times, "acc": correct / len(test), "n": len(y), **cuda_memory()}


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


def run_trainrun(workload: str, epochs: int, images: int, tmp: Path, extra_args: list[str]) -> dict:
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp / f"trainrun-{workload}-{time.time_ns()}"
    extra = [f"data.n_samples={images}"] if workload == "resnet" else []
    extra += extra_args
    if workload == "resnet" and torch.cuda.is_available():
        extra += GPU_RESNET
    _, rss = run_child([sys.executable, "-m", "trainrun", *WORKLOADS[workload], *extra, f"trainer.epochs={epochs}",
                        f"hydra.run.dir={run_dir}"])
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    ends = [e.wall_time for e in events.Scalars("time/epoch")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # epoch k's time: from the end of epoch k-1 to the end of epoch k (all per-epoch work included)
    memory = {"cuda_mib": metrics["peak_cuda_memory_mib"]} if "peak_cuda_memory_mib" in metrics else {}
    return {"epoch_s": [b - a for a, b in zip(ends, ends[1:])], "acc": metrics["test/acc"], "rss_mib": rss,
            "warm": True, **memory}


def run_worker(kind: str, workload: str, epochs: int, images: int) -> dict:
    out, rss = run_child([sys.executable, __file__, "--worker", kind, "--workloads", workload, "--epochs", str(epochs),
                          "--images", str(images)])
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
        firsts.append(events.Scalars("step/lr")[0].wall_time - launched)
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
                      statistics.median(r["acc"] for r in results), max(r["rss_mib"] for r in results),
                      max((r["cuda_mib"] for r in results if "cuda_mib" in r), default=None))
    base, images = rows["bare"][1], runs["bare"][0]["n"]
    tutorial = rows["tutorial"][1] if "tutorial" in rows else None
    print(f"\n{name}: seconds per epoch (warm-up epoch left out), {images} training images, test accuracy, peak memory")
    print(f"  {'pipeline':<16}{'min':>8}{'median':>8}{'max':>8}{'images/s':>10}{'acc':>8}{'RSS MiB':>9}{'CUDA MiB':>10}"
          f"{'vs bare':>9}{'vs tutorial':>12}")
    for kind, (lo, med, hi, acc, rss, cuda) in rows.items():
        print(f"  {kind:<16}{lo:8.3f}{med:8.3f}{hi:8.3f}{images / med:10.0f}{acc:8.3f}{rss:9.0f}"
              f"{'-' if cuda is None else f'{cuda:.0f}':>10}{med / base:9.2f}"
              f"{'-' if tutorial is None else f'{med / tutorial:.2f}':>12}")


SHARED = {"digits": ["trainer.epochs=150"],
          "mnist": ["data=mnist", "data.test_set_only=true", f"data.root={MNIST}", "trainer.epochs=12"]}


def sharing(tmp: Path, rounds: int) -> None:
    """Two trainrun commands at once on this machine (the digits MLP for 150 epochs, the MNIST MLP for 12): each
    one's time (metrics.json's wall_time_s) alone and beside the other, with every core each (trainer.threads set
    to the cores: before run/cores.py) and with the default (each takes its share), in interleaved rounds."""
    import torch

    cores = torch.get_num_threads()
    common = ["logger.enabled=false", "trainer.early_stopping.enabled=false", "trainer.checkpoint.every_n_seconds=null"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}

    def start(name: str, label: str, extra: list, n: int) -> subprocess.Popen:
        run_dir = tmp / f"share-{label}-{name}-{n}"
        return subprocess.Popen([sys.executable, "-m", "trainrun", *SHARED[name], *common, *extra,
                                 f"hydra.run.dir={run_dir}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def seconds(label: str, name: str, n: int) -> float:
        return json.loads((tmp / f"share-{label}-{name}-{n}" / "metrics.json").read_text())["wall_time_s"]

    times: dict = {}
    for n in range(rounds):
        for label, extra in (("every core", [f"trainer.threads={cores}"]), ("its share", [])):
            for name in SHARED:  # alone
                start(name, f"{label}-alone", extra, n).wait()
                times.setdefault((label, name, "alone"), []).append(seconds(f"{label}-alone", name, n))
            both = [start(name, f"{label}-pair", extra, n) for name in SHARED]
            for proc in both:
                proc.wait()
            for name in SHARED:
                times.setdefault((label, name, "pair"), []).append(seconds(f"{label}-pair", name, n))
    print(f"two commands at once, {rounds} rounds, {cores} cores (median seconds of training):")
    for label in ("every core", "its share"):
        cells = []
        for name in SHARED:
            alone, pair = (statistics.median(times[label, name, k]) for k in ("alone", "pair"))
            cells.append(f"{name} alone {alone:.2f} s, beside the other {pair:.2f} s ({pair / alone:.2f}x)")
        print(f"  {label:11s} " + "; ".join(cells))
    for name in SHARED:
        before, after = (statistics.median(times[label, name, "alone"]) for label in ("every core", "its share"))
        print(f"  alone, {name}: its share {after:.2f} s against every core {before:.2f} s ({after / before:.3f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", help="comma-separated, of: " + ", ".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--images", type=int, default=10000, help="synthetic images of the resnet workload")
    parser.add_argument("--no-startup", action="store_true", help="leave out the start-up measurements")
    parser.add_argument("--trainrun-args", nargs="*", default=[], help="overrides for the trainrun pipeline "
                        "(its epochs are timed from TensorBoard events, so keep the logger on)")
    parser.add_argument("--sharing", action="store_true", help="only: two trainrun commands at once (run/cores.py)")
    parser.add_argument("--worker", choices=["bare", "bare_fused", "tutorial"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sharing:
        with tempfile.TemporaryDirectory() as tmp:
            sharing(Path(tmp), args.rounds)
        return
    if args.worker:  # one pipeline in this process: print its result as the last line
        result = tutorial(args.workloads, args.epochs, args.images) if args.worker == "tutorial" else \
            bare(args.workloads, args.epochs, args.worker == "bare_fused", args.images)
        print(json.dumps(result))
        return
    if not MNIST.is_dir():
        raise SystemExit(f"the MNIST test set is expected at {MNIST}")
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, {gpu}; "
          f"{args.rounds} interleaved rounds of {args.epochs} epochs")
    workloads = args.workloads.split(",") if args.workloads else \
        ["mlp", "cnn_aug", "digits", *(["resnet"] if torch.cuda.is_available() else [])]
    with tempfile.TemporaryDirectory() as tmp:
        for workload in workloads:
            kinds = ["bare", "bare_fused"] + (["tutorial"] if workload != "resnet" else [])
            runs = {"trainrun": [], **{kind: [] for kind in kinds}}
            for _ in range(args.rounds):
                runs["trainrun"].append(run_trainrun(workload, args.epochs + 1, args.images, Path(tmp),
                                                     args.trainrun_args))
                for kind in kinds:
                    runs[kind].append(run_worker(kind, workload, args.epochs, args.images))
            summarize(workload, runs)
        if not args.no_startup:
            startup(Path(tmp))


if __name__ == "__main__":
    main()
