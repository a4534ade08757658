#!/usr/bin/env python
"""Write the MNIST test set (../shared/data/mnist, IDX files) out as PNG files in class folders.

    python scripts/mnist_png.py OUT [--limit N]      # OUT/0/00000.png ... OUT/9/09999.png

Real image files for data=folder and for the benchmark's folder workload (scripts/bench.py).
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def write_pngs(out: Path, limit: int | None = None, source: Path = MNIST) -> int:
    from torchvision.io import write_png

    from trainrun.data.shipped import read_idx

    images = torch.from_numpy(read_idx(source / "t10k-images-idx3-ubyte.gz").copy())[:limit]
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")[:limit]
    for digit in range(10):
        (out / str(digit)).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda i: write_png(images[i].unsqueeze(0), str(out / str(labels[i]) / f"{i:05d}.png")),
                      range(len(images))))
    return len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    print(f"wrote {write_pngs(args.out, args.limit)} PNG files under {args.out}")


if __name__ == "__main__":
    main()
