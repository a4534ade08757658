"""The normalization study (`trainrun -m study=normalization`): batch norm reaches an MLP's best accuracy in fewer
epochs and at a 10x higher lr; normalized inputs train faster.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

import math
from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Inconclusive, Protocol, Stage, Study, Sweep, fmt, need
from .helpers import pyplot, save, first_seed, per_seed, finite_accuracies, DIGITS_OR_MNIST


def best_val_acc(run) -> float:
    return max((v for _, v in finite_accuracies(run)), default=-math.inf)

def epochs_to(run, target: float) -> float:
    """The first epoch whose val accuracy reaches `target` (inf: never)."""
    return next((e for e, v in finite_accuracies(run) if v >= target), math.inf)

def normalization_grid(runs) -> dict:
    """{method: {lr: run}} of one seed: "none", "batch before", "batch after" (stage batchnorm, whose norm=none
    runs are also the standardized inputs) and "raw", "pca", "whiten" (stage inputs, no batch norm)."""
    out = {}
    for r in runs:
        if r.stage == "batchnorm":
            method = "none" if r.choices.get("norm") == "none" else f"batch {r.choices.get('norm.position')}"
        elif r.stage == "inputs":
            method = {"none": "raw"}.get(r.choices.get("data.normalize"), r.choices.get("data.normalize"))
        else:
            continue
        out.setdefault(method, {}).setdefault(float(r.choices["optimizer.lr"]), r)  # none's 2 positions: 1 setting
    return out

def best_lr(grid: dict, method: str) -> tuple[float, float]:
    """(lr, its best val accuracy): the method's best setting, chosen on validation."""
    by_lr = need(grid.get(method), f"the {method} runs")
    lr = max(by_lr, key=lambda lr: best_val_acc(by_lr[lr]))
    if best_val_acc(by_lr[lr]) == -math.inf:
        raise Inconclusive(f"the {method} runs' val accuracy is missing")
    return lr, best_val_acc(by_lr[lr])

def best_lr_inside(runs, method: str) -> tuple[str, str]:
    grid = normalization_grid(runs)
    lr, acc = best_lr(grid, method)
    by_lr = grid[method]
    inside = min(by_lr) < lr < max(by_lr)
    return (HOLDS if inside else FAILS), f"{method}'s best lr {lr:g} (val accuracy {acc:.3f}) in [{min(by_lr):g}, {max(by_lr):g}]"

def batch_norm_faster(runs) -> tuple[str, str]:
    grid = normalization_grid(runs)
    lr, target = best_lr(grid, "none")
    epochs = {m: epochs_to(need(need(grid.get(m), f"the {m} runs").get(lr), f"the {m} run at lr {lr:g}"), target)
              for m in BATCH_NORMS}
    holds = all(epochs[m] < epochs["none"] for m in BATCH_NORMS[1:])
    return (HOLDS if holds else FAILS), (f"at none's best lr {lr:g}, epochs to its best val accuracy {target:.3f}: "
                                         + ", ".join(f"{m} {fmt(e)}" for m, e in epochs.items()) + " (inf: never)")

def batch_norm_tolerates_large_lr(runs, factor: float, within: float) -> tuple[str, str]:
    grid = normalization_grid(runs)
    _, target = best_lr(grid, "none")
    largest = {m: max((lr for lr, r in need(grid.get(m), f"the {m} runs").items() if best_val_acc(r) >= target - within),
                      default=None) for m in BATCH_NORMS}
    holds = all(largest[m] is not None and largest[m] >= factor * largest["none"] for m in BATCH_NORMS[1:])
    return (HOLDS if holds else FAILS), (f"largest lr reaching none's best val accuracy {target:.3f} (within {within:g}): "
                                         + ", ".join(f"{m} {fmt(v)}" for m, v in largest.items()))

def normalized_inputs_faster(runs) -> tuple[str, str]:
    grid = normalization_grid(runs)
    raw_lr, target = best_lr(grid, "raw")
    epochs = {m: epochs_to(grid[m][lr], target) for m, (lr, _) in ((m, best_lr(grid, m)) for m in INPUTS)}
    holds = all(epochs[m] < epochs["raw"] for m in INPUTS[1:])
    return (HOLDS if holds else FAILS), (f"epochs to raw inputs' best val accuracy {target:.3f} (raw at lr {raw_lr:g}), "
                                         "each at its best lr: " + ", ".join(
                                             f"{INPUT_NAMES[m]} {fmt(e)}" for m, e in epochs.items()) + " (inf: never)")

BATCH_NORMS = ("none", "batch before", "batch after")

INPUTS = ("raw", "none", "pca", "whiten")  # "none": no batch norm, standardized inputs

INPUT_NAMES = {"raw": "raw", "none": "standardized", "pca": "PCA", "whiten": "whitened"}

def normalization_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    grid = normalization_grid(first_seed(runs))
    fig, (bn_lr, bn_curves, inputs) = plt.subplots(1, 3, figsize=(15, 4))
    for ax, methods, names in ((bn_lr, BATCH_NORMS, {}), (inputs, INPUTS, INPUT_NAMES)):
        for m in methods:
            by_lr = sorted(grid.get(m, {}).items())
            if by_lr:
                ax.plot([lr for lr, _ in by_lr], [max(best_val_acc(r), 0) for _, r in by_lr], marker="o",
                        label=names.get(m, m))
        ax.set(xscale="log", xlabel="learning rate (SGD)", ylabel="best val accuracy", ylim=(0, 1))
        ax.legend(fontsize=8)
    bn_lr.set_title("batch norm: best val accuracy per lr")
    inputs.set_title("inputs (no batch norm): best val accuracy per lr")
    try:
        lr = best_lr(grid, "none")[0]
    except Inconclusive:
        lr = None
    for m in BATCH_NORMS:
        r = grid.get(m, {}).get(lr)
        if r and finite_accuracies(r):
            bn_curves.plot(*zip(*finite_accuracies(r)), marker=".", label=m)
    bn_curves.set(xlabel="epoch", ylabel="val accuracy", ylim=(0, 1), title=f"at none's best lr ({fmt(lr)})")
    bn_curves.legend(fontsize=8)
    return [save(fig, out / "normalization.png")]


STUDY = Study(
    summary="batch norm reaches an MLP's best accuracy in fewer epochs and at a 10x higher lr; normalized inputs train faster",
    claim="Batch normalization, before or after the activation, lets a network reach the accuracy of its "
          "unnormalized version in fewer steps and at a learning rate 10x higher (Ioffe and Szegedy 2015); "
          "standardized, PCA'd or whitened inputs train faster than raw ones (LeCun et al. 1998).",
    sweep=Sweep(
        epochs={"small": 10, "full": 15},
        # init normal: std 0.01, the paper's "small random Gaussian values"
        options={"optimizer": "sgd", "activation": "sigmoid", "init": "normal"},
        stages=(
            Stage("batchnorm", {**DIGITS_OR_MNIST, "data.normalize": "standardize", "norm": "none,batch",
                                "norm.position": "before,after", "optimizer.lr": "0.01,0.1,1.0,10.0,100.0",
                                "trainer.seed": {"small": "0", "full": "0,1,2"}}),
            # without batch norm; standardized inputs are the batchnorm stage's norm=none runs
            Stage("inputs", {**DIGITS_OR_MNIST, "data.normalize": "none,pca,whiten",
                             "optimizer.lr": "0.01,0.1,1.0,10.0,100.0", "trainer.seed": {"small": "0", "full": "0,1,2"}}),
        ),
        settings={"data.batch_size": 60, "model.depth": 3, "model.width": 100,
                  "trainer.early_stopping.enabled": False, "trainer.early_stopping.stop_on_nonfinite": True}),
    protocol=Protocol(
        note="Gilles Louppe, Deep Learning, lecture 4: Training neural networks, data normalization and batch "
             "normalization (../shared/seeds/004); Yingfan, Machine Learning: Training DNN (../shared/seeds/001): "
             "batch norm before or after the activation, 'typically improves the convergence'",
        paper="Ioffe and Szegedy 2015: on MNIST, 3 fully connected hidden layers of 100 sigmoid units, weights "
              "drawn as small random Gaussian values, SGD on batches of 60, the batch-normalized network trains "
              "faster (section 4.1); the number of steps to reach the baseline's best accuracy, and the same "
              "network at a learning rate raised 5x and 30x (BN-x5, BN-x30, figure 3); LeCun et al. 1998 "
              "(Efficient BackProp, 4.3): inputs shifted to zero mean and scaled to equal variance (or "
              "decorrelated) speed up convergence",
        measurement="that network (depth 3, width 100, sigmoid, `init=normal` std 0.01, plain SGD, batch 60) "
                    "at learning rates 0.01 to 100 a decade apart, without and with batch norm before and after "
                    "the activation; every method at its best lr, chosen on the best val accuracy over the "
                    "epochs. Faster: the first epoch whose val accuracy reaches the baseline's best (the "
                    "paper's steps to the baseline's maximum); tolerance: the largest lr at which a network "
                    "still reaches within 0.01 of the baseline's best. Inputs: the network without batch norm "
                    "on raw, standardized, PCA'd and whitened inputs, each at its best lr",
        data="small: 8x8 digits, 10 epochs; full: MNIST's 10,000 test images split 7,200/800/2,000 "
             "(data.root=<the folder of t10k-*-idx*-ubyte.gz>), 15 epochs",
        seeds="1 at small (a demonstration), 3 at full: a claim must hold in each seed",
        conditions=(
            Claim("batch norm: the baseline's best lr lies inside the grid", "without batch norm, the lr with "
                  "the best val accuracy is neither end of the grid, in every seed (so 10x it was tried)",
                  per_seed(best_lr_inside), {"method": "none"}, scope="batch norm"),
            Claim("normalized inputs: raw inputs' best lr lies inside the grid", "on raw inputs, the lr with "
                  "the best val accuracy is neither end of the grid, in every seed", per_seed(best_lr_inside),
                  {"method": "raw"}, scope="normalized inputs"),
        )),
    claims=(
        Claim("batch norm trains faster", "at the baseline's best lr, both batch-norm runs reach the baseline's "
              "best val accuracy in fewer epochs than the baseline, in every seed", per_seed(batch_norm_faster)),
        Claim("batch norm tolerates a larger lr", "the largest lr at which a network reaches within {within:g} "
              "of the baseline's best val accuracy is at least {factor:g}x larger with batch norm (both "
              "positions) than without, in every seed", per_seed(batch_norm_tolerates_large_lr),
              {"factor": 10, "within": 0.01}),
        Claim("normalized inputs train faster", "no batch norm, each at its best lr: standardized, PCA'd and "
              "whitened inputs each reach raw inputs' best val accuracy in fewer epochs than raw inputs, in "
              "every seed", per_seed(normalized_inputs_faster)),
    ),
    figures=normalization_figures)
