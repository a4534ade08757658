#!/usr/bin/env python
"""Does population-based training beat a grid and an Optuna search of the same budget? (#33's evidence)

    python scripts/study_pbt.py [--seeds 0,1,2] [--epochs 20] [--out DIR]

Protocol (committed before its results; afterwards only bugs are fixed, and listed in docs/studies.md):

- Source: Jaderberg et al. 2017, Population Based Training of Neural Networks: a population that copies its best
  members and perturbs their hyperparameters finds a schedule of hyperparameters, and reaches better models than
  a search over fixed values with the same compute. Ray Tune's PopulationBasedTraining is the reference for the
  settings (quantile 0.25, resample probability 0.25, factors 0.8 and 1.2).
- Task: plain SGD (no momentum, no weight decay), where the learning rate's schedule matters, on the default MLP
  and MNIST's 10,000 test images (data.test_set_only: 7,200 train / 800 val / 2,000 test), batch 128, 20 epochs,
  early stopping off: every run trains all its epochs.
- Three searches of the learning rate in [1e-3, 1] (log scale), 16 runs of 20 epochs each (320 epochs), per seed:
  grid: 16 values evenly spaced on the log scale; optuna: 16 TPE trials, no pruning, 2 workers (in flight);
  pbt: a population of 16 drawn at random, exploit every 4 epochs. The seed is trainer.seed (pbt: member i gets
  seed + i) and the sampler's seed.
- Measured: each search's best run by the objective (val/loss at its best epoch, as the sweep summary ranks) and
  that run's test accuracy (best.pt); each command's wall time.
- Rule: per seed, PBT's test accuracy minus the grid's and minus Optuna's; over the seeds the paired mean and
  its standard error. PBT is better than a search where mean - 2 SE > 0, worse where mean + 2 SE < 0, otherwise
  no difference is shown at this number of seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SPACE = "tag(log, interval(0.001, 1.0))"


def common(epochs: int) -> list[str]:
    return ["data=mnist", "data.test_set_only=true", f"data.root={MNIST}", "optimizer=sgd", "optimizer.weight_decay=0",
            f"trainer.epochs={epochs}", "trainer.early_stopping.enabled=false"]


def searches(seed: int, epochs: int) -> dict[str, list[str]]:
    grid = ",".join(f"{10 ** (-3 + 3 * i / 15):.6g}" for i in range(16))
    return {
        "grid": ["-m", f"optimizer.lr={grid}", f"trainer.seed={seed}"],
        "optuna": ["-m", "hparams_search=optuna", f"optimizer.lr={SPACE}", "regularization.dropout=0.0",
                   "model.hidden=[256,256]", "hydra.sweeper.n_trials=16", "hydra.sweeper.n_jobs=2",
                   "hydra.sweeper.pruner.kind=none", f"hydra.sweeper.seed={seed}", f"trainer.seed={seed}"],
        "pbt": ["-m", "hparams_search=pbt", f"optimizer.lr={SPACE}", "hydra.sweeper.population=16",
                "hydra.sweeper.interval=4", f"hydra.sweeper.seed={seed}", f"trainer.seed={seed}"],
    }


def best_run(sweep: Path) -> dict:
    runs = [json.loads(p.read_text()) | {"run": p.parent.name} for p in sweep.glob("*/metrics.json")]
    finite = [r for r in runs if isinstance(r.get("val/loss"), float) and math.isfinite(r["val/loss"])]
    return min(finite, key=lambda r: r["val/loss"]) | {"runs": len(runs)}


def paired(a: dict, b: dict) -> tuple[float, float]:
    diffs = [a[s] - b[s] for s in a]
    return statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf


def verdict(mean: float, error: float) -> str:
    if mean - 2 * error > 0:
        return "PBT better"
    if mean + 2 * error < 0:
        return "PBT worse"
    return "no difference shown"


def figure(results: dict, out: Path) -> Path:
    """Each search's best run per seed: its test accuracy and the command's wall time (drawn after the results)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, wall) = plt.subplots(1, 2, figsize=(10, 3.6))
    seeds = sorted(next(iter(results.values())), key=int)
    for offset, name in zip((-0.27, 0, 0.27), results):
        xs = [i + offset for i in range(len(seeds))]
        acc.bar(xs, [results[name][s]["test/acc"] for s in seeds], 0.27, label=name)
        wall.bar(xs, [results[name][s]["seconds"] for s in seeds], 0.27, label=name)
    for ax, label in ((acc, "test accuracy of the best run"), (wall, "the command's wall time (s)")):
        ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
        ax.set_ylabel(label)
    low = min(r["test/acc"] for by_seed in results.values() for r in by_seed.values())
    acc.set_ylim(low - 0.01, 1.0)
    acc.legend(fontsize=8)
    acc.set_title("16 runs x 20 epochs each search, SGD on MNIST", fontsize=9)
    fig.tight_layout()
    path = out / "study_pbt.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("outputs/study_pbt"))
    parser.add_argument("--figure", action="store_true", help="only draw the figure of --out's results.json")
    args = parser.parse_args()
    if args.figure:
        print(figure(json.loads((args.out / "results.json").read_text()), args.out))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[int, dict]] = {}
    for seed in seeds:
        for name, argv in searches(seed, args.epochs).items():
            sweep = (args.out / f"{name}-seed{seed}").resolve()
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "trainrun", *argv, *common(args.epochs),
                                   f"hydra.sweep.dir={sweep}"], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{name} seed {seed}: {done.stderr[-2000:]}")
            best = best_run(sweep) | {"seconds": time.perf_counter() - started}
            results.setdefault(name, {})[seed] = best
            print(f"seed {seed} {name:6s}: best {best['run']} val/loss {best['val/loss']:.4f} test/acc "
                  f"{best['test/acc']:.4f} ({best['runs']} runs, {best['seconds']:.1f} s)", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    acc = {name: {s: r["test/acc"] for s, r in by_seed.items()} for name, by_seed in results.items()}
    for name in ("grid", "optuna"):
        mean, error = paired(acc["pbt"], acc[name])
        print(f"test accuracy, PBT minus {name}: {mean:+.4f} ± {error:.4f} over {len(seeds)} seeds: {verdict(mean, error)}")
    print(figure(results, args.out))
    for name, by_seed in results.items():
        print(f"{name}: test/acc mean {statistics.fmean(acc[name].values()):.4f}, wall time mean "
              f"{statistics.fmean(r['seconds'] for r in by_seed.values()):.1f} s")


if __name__ == "__main__":
    main()
