"""The optimizers study (`trainrun -m study=optimizers`): at each one's best lr, momentum and Nesterov train faster
than SGD; Adam is less sensitive to the lr.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

import math
from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Protocol, Stage, Study, Sweep, fmt, need, paired, seed_of
from .helpers import pyplot, save, train_losses, first_seed, finite_accuracies, DIGITS_OR_MNIST, TWO_OR_FIVE_SEEDS


def final_train_loss(run) -> float | None:
    points = run.curves.get("loss/train", [])
    return points[-1][2] if points else None

def optimizer_grid(runs) -> dict:
    """{optimizer: {seed: {lr: run}}}."""
    out = {}
    for r in runs:
        out.setdefault(r.choices.get("optimizer"), {}).setdefault(seed_of(r), {})[float(r.choices["optimizer.lr"])] = r
    return out

def loss_or_inf(run) -> float:
    return (train_losses(run) or [math.inf])[-1]  # diverged: the worst

def best_by_loss(by_lr: dict) -> float:
    """The lr with the lowest final train loss: the method's best setting for a claim about optimization."""
    return min(by_lr, key=lambda lr: loss_or_inf(by_lr[lr]))

def optimizer_seeds(runs, optimizer: str) -> dict:
    return need(optimizer_grid(runs).get(optimizer), f"the {optimizer} runs")

def best_lr_inside_grid(runs, optimizer: str) -> tuple[str, str]:
    seeds = optimizer_seeds(runs, optimizer)
    best = {seed: best_by_loss(by_lr) for seed, by_lr in seeds.items()}
    inside = [min(seeds[s]) < lr < max(seeds[s]) for s, lr in best.items()]
    return (HOLDS if all(inside) else FAILS), \
        f"{optimizer}'s best lr per seed: " + ", ".join(f"{fmt(lr)}" for lr in best.values()) + \
        f" (grid {fmt(min(next(iter(seeds.values()))))} to {fmt(max(next(iter(seeds.values()))))})"

def best_log_loss(by_lr: dict) -> float:
    return math.log10(need(final_train_loss(by_lr[best_by_loss(by_lr)]) or None, "a final train loss above 0"))

def beats_sgd(runs, optimizer: str, errors: float) -> tuple[str, str]:
    ours, sgd = optimizer_seeds(runs, optimizer), optimizer_seeds(runs, "sgd")
    mean, error, n = paired({s: best_log_loss(v) for s, v in ours.items()},
                            {s: best_log_loss(v) for s, v in sgd.items()}, f"{optimizer} and sgd")
    chosen = ", ".join(sorted({fmt(best_by_loss(v)) for v in ours.values()}))
    return (HOLDS if mean + errors * error < 0 else FAILS), \
        (f"log10 of the final train loss, {optimizer} (best lr {chosen}) minus sgd (best lr "
         f"{', '.join(sorted({fmt(best_by_loss(v)) for v in sgd.values()}))}), over {n} seeds: {mean:+.3f} ± {error:.3f}")

def final_val_acc(run) -> float:
    return (finite_accuracies(run) or [(0, -math.inf)])[-1][1]

def good_lrs(by_lr: dict, within: float) -> int:
    """How many of the grid's lrs end within `within` of the best final val accuracy."""
    best = max(final_val_acc(r) for r in by_lr.values())
    return sum(final_val_acc(r) >= best - within for r in by_lr.values())

def less_sensitive_to_lr(runs, optimizer: str, within: float) -> tuple[str, str]:
    ours, sgd = optimizer_seeds(runs, optimizer), optimizer_seeds(runs, "sgd")
    counts = {s: (good_lrs(ours[s], within), good_lrs(sgd[s], within)) for s in need(sorted(set(ours) & set(sgd), key=str),
                                                                                      f"a seed with {optimizer} and sgd")}
    holds = all(a > b for a, b in counts.values())
    return (HOLDS if holds else FAILS), (f"grid lrs ending within {within:g} of the best final val accuracy, "
                                         f"{optimizer} against sgd: " + ", ".join(f"seed {s}: {a} vs {b}" for s, (a, b) in counts.items()))

def optimizer_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    fig, (by_lr, curves) = plt.subplots(1, 2, figsize=(11, 4))
    for optimizer, seeds in optimizer_grid(first_seed(runs)).items():
        for by_lr_runs in seeds.values():
            rates = sorted(by_lr_runs)
            by_lr.plot(rates, [min(loss_or_inf(by_lr_runs[lr]), 1e3) for lr in rates], marker="o", label=optimizer)
            best = by_lr_runs[best_by_loss(by_lr_runs)]
            points = best.curves.get("loss/train", [])
            if points:
                curves.plot([p[0] for p in points], [p[2] for p in points], marker=".",
                            label=f"{optimizer}, lr {fmt(best_by_loss(by_lr_runs))}")
    by_lr.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="final train loss (log; diverged at top)",
              title="each optimizer over the lr grid")
    curves.set(yscale="log", xlabel="epoch", ylabel="train loss (log)", title="each at its best lr")
    by_lr.legend(fontsize=8)
    curves.legend(fontsize=8)
    return [save(fig, out / "optimizers.png")]


STUDY = Study(
    summary="at each one's best lr, momentum and Nesterov train faster than SGD; Adam is less sensitive to the lr",
    claim="Each at its best learning rate, SGD with momentum and with Nesterov's momentum brings the training "
          "loss lower than plain SGD in the same number of epochs (Sutskever et al. 2013), and Adam's "
          "adaptive steps make it less sensitive to the learning rate than SGD.",
    sweep=Sweep(
        epochs={"small": 10, "full": 20},
        stages=(Stage("grid", {**DIGITS_OR_MNIST, "optimizer": "sgd,momentum,nesterov,adam",
                               "optimizer.lr": "0.0001,0.001,0.01,0.1,1.0", "trainer.seed": TWO_OR_FIVE_SEEDS}),),
        settings={"data.batch_size": 64, "model.depth": 4, "model.width": 128,
                  "trainer.early_stopping.enabled": False, "trainer.early_stopping.stop_on_nonfinite": True}),
    protocol=Protocol(
        note="Ju Sun, Training DNNs: Basic Methods and Tricks, momentum/acceleration and adaptive learning "
             "rates (../shared/seeds/002): history cancels the zig-zag of GD on ill-conditioned problems; an "
             "adaptive method's lr is 'less sensitive, and can be large'",
        paper="Polyak 1964 (heavy ball), Nesterov 1983; Sutskever et al. 2013 (On the importance of "
              "initialization and momentum in deep learning): well-tuned momentum trains deep networks much "
              "faster than SGD; Kingma and Ba 2015 (Adam)",
        measurement="a 4-layer ReLU MLP of width 128, batch 64, each optimizer at learning rates 1e-4 to 1 a "
                    "decade apart; speed: the train loss after the last epoch, each method at the lr that "
                    "gives its lowest, compared as log10 and paired with SGD by seed (the same seed draws "
                    "the same initialization and batches); sensitivity: how many of the grid's lrs end "
                    "within 0.02 of the method's best final val accuracy",
        data="small: 8x8 digits, 10 epochs; full: MNIST's 10,000 test images split 7,200/800/2,000 "
             "(data.root=<the folder of t10k-*-idx*-ubyte.gz>), 20 epochs",
        seeds="2 at small (a demonstration), 5 at full: the speed claims need a paired difference beyond 2 "
              "standard errors, the sensitivity claim holds only if it holds in each seed",
        conditions=(
            Claim("SGD's best lr lies inside the grid", "plain SGD's lr with the lowest final train loss is "
                  "neither end of the grid, in every seed (else SGD was compared away from its best)",
                  best_lr_inside_grid, {"optimizer": "sgd"}),
        )),
    claims=(
        *(Claim(f"{kind} beats plain SGD", "log10 of the final train loss, " + kind + " minus SGD, each at its "
                "best lr, paired by seed: mean below 0 by more than {errors:g} standard errors", beats_sgd,
                {"optimizer": kind, "errors": 2}) for kind in ("momentum", "nesterov")),
        Claim("Adam is less sensitive to the lr than SGD", "more of the grid's lrs end within {within:g} of the "
              "best final val accuracy under Adam than under SGD, in every seed", less_sensitive_to_lr,
              {"optimizer": "adam", "within": 0.02}),
    ),
    figures=optimizer_figures)
