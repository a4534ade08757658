"""The lr_diagnosis study (`trainrun -m study=lr_diagnosis`): around a range test's suggestion: too low crawls, too
high flattens, far too high diverges, a staircase helps.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

import math
from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Inconclusive, Protocol, Stage, Study, Sweep, fmt, need, pick, seed_of
from .helpers import pyplot, save, train_losses, DIGITS_OR_MNIST


def factor_of(run, suggested: float) -> float:
    """The run's lr as a power of ten times the suggestion (the sweep's values are rounded to 4 digits)."""
    return 10.0 ** round(math.log10(float(run.choices["optimizer.lr"]) / suggested))

def diagnosis_grid(runs) -> tuple[float, dict]:
    """(the range test's suggested lr, {seed: {(factor, scheduler): run}})."""
    found = need(pick(runs, tune="lr_find"), "the range test")
    suggested = need(found[0].metrics.get("suggested_lr"), "the range test's suggestion")
    out = {}
    for r in runs:
        if "optimizer.lr" in r.choices:
            out.setdefault(seed_of(r), {})[(factor_of(r, suggested), r.choices.get("scheduler", "none"))] = r
    return suggested, need(out, "the runs around the suggestion")

def second_half_fall(losses: list[float]) -> float:
    """How much the train loss fell over the second half of the epochs, as a fraction of where the half began."""
    start = losses[len(losses) // 2 - 1] if len(losses) > 1 else losses[0]
    return 1 - losses[-1] / start if start > 0 and math.isfinite(losses[-1]) else 0.0

def at(grid: dict, seed, factor: float, scheduler: str = "none") -> list[float]:
    run = need(grid.get((factor, scheduler)), f"seed {seed}'s run at {factor:g}x the suggestion, scheduler={scheduler},")
    return need(train_losses(run), f"{run.name}'s train loss")

def in_every_seed(runs, judge) -> tuple[str, str]:
    """`judge(seed, grid) -> (held, numbers)` over the seeds of the sweep around the suggestion."""
    suggested, seeds = diagnosis_grid(runs)
    results = {seed: judge(seed, grid) for seed, grid in sorted(seeds.items(), key=lambda s: str(s[0]))}
    held = all(h for h, _ in results.values())
    return (HOLDS if held else FAILS), f"suggested lr {suggested:.3g}; " + "; ".join(
        f"seed {seed}: {numbers}" for seed, (_, numbers) in results.items())

def lr_too_low_crawls(runs, low: float, worse: float, falling: float) -> tuple[str, str]:
    def judge(seed, grid):
        crawl, good = at(grid, seed, low), at(grid, seed, 1.0)
        fall = second_half_fall(crawl)
        return crawl[-1] >= worse * good[-1] and fall > falling, \
            f"{low:g}x ends at {fmt(crawl[-1])} (fell {fall:.0%} over the second half), 1x at {fmt(good[-1])}"
    return in_every_seed(runs, judge)

def lr_too_high_flattens(runs, high: float, worse: float, falling: float) -> tuple[str, str]:
    def judge(seed, grid):
        fast, good = at(grid, seed, high), at(grid, seed, 1.0)
        fall = second_half_fall(fast)
        return fast[-1] >= worse * good[-1] and fall < falling, \
            f"{high:g}x ends at {fmt(fast[-1])} (fell {fall:.0%} over the second half; inf: diverged), 1x at {fmt(good[-1])}"
    return in_every_seed(runs, judge)

def lr_far_too_high_diverges(runs, highest: float) -> tuple[str, str]:
    def judge(seed, grid):
        losses = at(grid, seed, highest)
        if not math.isfinite(losses[0]):
            return True, f"{highest:g}x diverged in its first epoch"
        return losses[-1] >= losses[0], f"{highest:g}x: first epoch {fmt(losses[0])}, last {fmt(losses[-1])} (n/a: diverged)"
    return in_every_seed(runs, judge)

def staircase_helps(runs, high: float) -> tuple[str, str]:
    def judge(seed, grid):
        constant, stepped = at(grid, seed, high)[-1], at(grid, seed, high, "step")[-1]
        return stepped < constant, f"at {high:g}x: constant ends at {fmt(constant)}, staircase at {fmt(stepped)}"
    return in_every_seed(runs, judge)

def suggestion_near_best(runs, within: float) -> tuple[str, str]:
    def judge(seed, grid):
        constant = {f: at(grid, seed, f)[-1] for f, scheduler in grid if scheduler == "none"}
        best = min(constant, key=constant.get)
        return 1 / within <= best <= within, f"lowest final train loss at {best:g}x ({fmt(constant[best])})"
    return in_every_seed(runs, judge)

def diagnosis_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    try:
        suggested, seeds = diagnosis_grid(runs)
    except Inconclusive:
        suggested, seeds = None, {}
    grid = seeds[min(seeds, key=str)] if seeds else {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, scheduler in zip(axes, ("none", "step")):
        for (factor, _), r in sorted(item for item in grid.items() if item[0][1] == scheduler):
            finite = [v for v in train_losses(r) if math.isfinite(v)]
            diverged = len(finite) < len(train_losses(r))  # said in the legend: it may have nothing to draw
            ax.plot(range(1, len(finite) + 1), finite, marker="x" if diverged else ".",
                    label=f"{factor:g}x suggested" + (", diverged" if diverged else ""))
        ax.set(yscale="log", xlabel="epoch", title="constant lr" if scheduler == "none" else "staircase (lr / 10 at epoch 10)")
    axes[0].set_ylabel(f"train loss (log); suggestion {fmt(suggested)}")
    for ax in axes:
        ax.legend(fontsize=8)
    return [save(fig, out / "lr_diagnosis.png")]


STUDY = Study(
    summary="around a range test's suggestion: too low crawls, too high flattens, far too high diverges, a staircase helps",
    claim="Read from the training loss around the learning rate a range test suggests: a rate too low converges "
          "but slowly, one too high flattens early at a higher loss, one far too high diverges, a staircase "
          "schedule helps the high one, and the suggestion lies within a decade of the best constant rate.",
    sweep=Sweep(
        epochs={"small": 15, "full": 30},  # scheduler=step divides the lr by 10 at epoch 10
        options={"optimizer": "sgd"},
        stages=(
            Stage("find", {**DIGITS_OR_MNIST, "tune": "lr_find"}),
            Stage("sweep", {**DIGITS_OR_MNIST, "optimizer.lr": "{find.suggested_lr*0.01},{find.suggested_lr*0.1},"
                            "{find.suggested_lr},{find.suggested_lr*10},{find.suggested_lr*100}",
                            "scheduler": "none,step", "trainer.seed": {"small": "0", "full": "0,1,2"}}),
        ),
        settings={"trainer.early_stopping.enabled": False, "trainer.early_stopping.stop_on_nonfinite": True}),
    protocol=Protocol(
        note="Ju Sun, Training DNNs: Basic Methods and Tricks, 'Diagnosis of LR' (../shared/seeds/002): low LR "
             "always converges but takes forever; premature flattening is a sign of a large LR; remember the "
             "staircase schedule (divide by 10 every 10 epochs)",
        paper="Smith 2017 (Cyclical learning rates: the range test raises the lr exponentially and reads the "
              "loss); the note's loss curves for low, good, high and very high learning rates",
        measurement="the train loss after each epoch of SGD on the default MLP at 0.01x, 0.1x, 1x, 10x and 100x "
                    "the range test's suggestion (run once, before), each constant and with the staircase "
                    "(lr / 10 at epoch 10); crawling: still falling by more than 10% over the second half of "
                    "the epochs while ending at 2x the suggestion's loss or more; flattening: falling by less "
                    "than 10% over the second half while ending at 2x or more",
        data="small: 8x8 digits, 15 epochs; full: MNIST's 10,000 test images split 7,200/800/2,000 "
             "(data.root=<the folder of t10k-*-idx*-ubyte.gz>), 30 epochs",
        seeds="1 at small (a demonstration), 3 at full: a claim must hold in each seed"),
    claims=(
        Claim("too low converges, but slowly", "constant lr at {low:g}x the suggestion: the train loss ends at "
              ">= {worse:g}x the suggestion's and still fell by more than {falling:.0%} over the second half, in "
              "every seed", lr_too_low_crawls, {"low": 0.01, "worse": 2, "falling": 0.1}),
        Claim("too high flattens early", "constant lr at {high:g}x: the train loss ends at >= {worse:g}x the "
              "suggestion's and fell by less than {falling:.0%} over the second half (or diverged), in every "
              "seed", lr_too_high_flattens, {"high": 10, "worse": 2, "falling": 0.1}),
        Claim("far too high diverges", "constant lr at {highest:g}x: the last epoch's train loss is no lower "
              "than the first's (or diverged), in every seed", lr_far_too_high_diverges, {"highest": 100}),
        Claim("the staircase helps a high lr", "at {high:g}x, scheduler=step ends at a lower train loss than "
              "the constant lr, in every seed", staircase_helps, {"high": 10}),
        Claim("the suggestion is within a decade of the best", "of the constant lrs, the lowest final train "
              "loss is at 1/{within:g}x to {within:g}x the suggestion, in every seed", suggestion_near_best,
              {"within": 10}),
    ),
    figures=diagnosis_figures)
