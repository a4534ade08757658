#!/usr/bin/env python
"""Data larger than data.host_memory_gb, streamed from disk, against the same data in memory, side by side.

    python scripts/bench_stream.py [--epochs 3] [--budget-gb 0.07]

Writes CIFAR-sized data (50,000 x 3 x 32 x 32 uint8, 147 MiB, with labels) as a pair of .npy files, then
trains trainrun's default MLP on them (data=arrays, batch 64) twice in one sitting: held in memory, and with
data.host_memory_gb below the data's size (memory-mapped, batches gathered ahead by a background thread).
Reports seconds per epoch (median after the first), the ratio, and the peak anonymous memory (RssAnon,
sampled every 20 ms: the process's own memory, not the page cache that a memory map fills) of each run,
less that of a third run on 640 of the rows (torch, the model, the optimizer: what any run holds).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N, SHAPE = 50_000, (3, 32, 32)


def write_arrays(folder: Path) -> None:
    """Class-dependent images (a per-class mean pattern plus noise), so the run has something to learn."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, N)
    patterns = rng.integers(0, 256, (10, *SHAPE))
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.uint8, shape=(N, *SHAPE))
    for start in range(0, N, 5000):
        noise = rng.integers(-60, 61, (min(5000, N - start), *SHAPE))
        x[start:start + 5000] = np.clip(patterns[y[start:start + 5000]] + noise, 0, 255)
    x.flush()
    np.save(folder / "y.npy", y)


def rss_anon_mib(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(args: list[str], run_dir: Path, cwd: Path) -> tuple[list[float], float, str]:
    """(per-epoch seconds, peak RssAnon in MiB, where the header says the data live)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = subprocess.Popen([sys.executable, "-m", "trainrun", *args, f"hydra.run.dir={run_dir}",
                             "trainer.early_stopping.enabled=false"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_anon_mib(proc.pid))
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(err[-2000:])
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    home = " ".join(" ".join(out.split("data in", 1)[1].split("│")).split()).split(" /")[0]
    return [e.value for e in events.Scalars("time/epoch_s")], peak, home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--budget-gb", type=float, default=0.07)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_arrays(tmp)
        common = ["data=arrays", f"data.path={tmp / 'x.npy'}", f"data.targets={tmp / 'y.npy'}",
                  f"trainer.epochs={args.epochs}", "data.test_fraction=0.1"]
        memory, memory_peak, memory_home = run(common, tmp / "memory", tmp)
        disk, disk_peak, disk_home = run([*common, f"data.host_memory_gb={args.budget_gb}"], tmp / "disk", tmp)
        _, base_peak, _ = run([*common, "data.subset=640", "trainer.epochs=1"], tmp / "base", tmp)
    data_mib = N * np.prod(SHAPE) / 2**20
    m, d = statistics.median(memory[1:]), statistics.median(disk[1:])
    print(f"CIFAR-sized uint8 data ({N:,} x {' x '.join(map(str, SHAPE))}, {data_mib:.0f} MiB) from .npy files; "
          f"MLP 3072-256-256-10, Adam, batch 64")
    print(f"  in memory:  {m:.2f} s per epoch, peak RssAnon {memory_peak:.0f} MiB "
          f"({memory_peak - base_peak:+.0f} MiB over a run on 640 rows)  [{memory_home}]")
    print(f"  from disk:  {d:.2f} s per epoch, peak RssAnon {disk_peak:.0f} MiB "
          f"({disk_peak - base_peak:+.0f} MiB over a run on 640 rows)  [{disk_home}]")
    print(f"  streamed / in memory: {d / m:.2f}x per epoch; data.host_memory_gb={args.budget_gb} "
          f"({args.budget_gb * 1024:.0f} MiB, the data are {data_mib / (args.budget_gb * 1024):.1f}x that)")


if __name__ == "__main__":
    main()
