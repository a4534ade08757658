"""The regularization study (`trainrun -m study=regularization`): where a network overfits, L2, L1 and dropout at
their best strengths raise test accuracy and shrink the gap.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

import statistics
from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Protocol, Stage, Study, Sweep, need, paired, seed_of
from .helpers import pyplot, save, best_on_validation, test_accuracies


def final_gap(run) -> float | None:
    train, val = run.curves.get("acc/train"), run.curves.get("acc/val")
    return train[-1][2] - val[-1][2] if train and val else None

REGULARIZERS = ("l2", "l1", "dropout")

def strength(run) -> str:
    return next((v for k, v in run.choices.items() if k.startswith("regularization.")), "")

def overfits(runs, train: float, gap: float) -> tuple[str, str]:
    none = need(best_on_validation(runs, "regularization").get("none"), "the runs without regularization")
    accs = [need(r.curves.get("acc/train"), f"{r.name}'s train accuracy")[-1][2] for r in none.values()]
    gaps = [need(final_gap(r), f"{r.name}'s accuracy gap") for r in none.values()]
    held = statistics.fmean(accs) >= train and statistics.fmean(gaps) >= gap
    return (HOLDS if held else FAILS), (f"without regularization, after the last epoch: train accuracy "
                                        f"{statistics.fmean(accs):.3f}, train - val {statistics.fmean(gaps):.3f} "
                                        f"(means over {len(none)} seeds)")

def regularizer_improves_test(runs, kind: str, errors: float) -> tuple[str, str]:
    best = best_on_validation(runs, "regularization")
    mean, error, n = paired(test_accuracies(best, kind), test_accuracies(best, "none"), f"{kind} and none")
    chosen = ", ".join(sorted({strength(r) for r in best[kind].values()}))
    return (HOLDS if mean - errors * error > 0 else FAILS), \
        f"test accuracy, {kind} at its best strength ({chosen}) minus none, over {n} seeds: {mean:+.4f} ± {error:.4f}"

def regularizers_shrink_the_gap(runs, errors: float) -> tuple[str, str]:
    best = best_on_validation(runs, "regularization")
    none = {s: need(final_gap(r), f"none's gap in seed {s}") for s, r in need(best.get("none"), "the runs without").items()}
    shown, holds = [], True
    for kind in REGULARIZERS:
        gaps = {s: need(final_gap(r), f"{kind}'s gap in seed {s}") for s, r in need(best.get(kind), f"the {kind} runs").items()}
        mean, error, n = paired(gaps, none, f"{kind} and none")
        holds &= mean + errors * error < 0
        shown.append(f"{kind} {mean:+.4f} ± {error:.4f}")
    return (HOLDS if holds else FAILS), (f"change of the train - val accuracy gap against none, each at its best "
                                         f"strength, over {n} seeds: " + ", ".join(shown)
                                         + f" (none's gap {statistics.fmean(none.values()):.3f})")

def regularization_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    first = min((seed_of(r) for r in runs), key=str)
    runs = [r for kind, by_seed in best_on_validation(runs, "regularization").items() for seed, r in by_seed.items() if seed == first]
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.4), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], runs):
        for tag, style in (("loss/train", "-"), ("loss/val", "--")):
            points = r.curves.get(tag, [])
            if points:
                ax.plot([p[0] for p in points], [p[2] for p in points], style, label=tag.split("/")[1])
        if r.val_loss:
            stop = min(r.val_loss, key=lambda p: p[1])[0]
            ax.axvline(stop, color="gray", linestyle=":", label=f"early stop (epoch {stop})")
        ax.set(yscale="log", xlabel="epoch", title=f"{r.choices.get('regularization')} {strength(r)}".strip())
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss (log)")
    return [save(fig, out / "regularization.png")]


STUDY = Study(
    summary="where a network overfits, L2, L1 and dropout at their best strengths raise test accuracy and shrink the gap",
    claim="Where a network overfits, L2, L1 and dropout, each at its best of three strengths chosen on "
          "validation, raise test accuracy over no regularization and shrink the gap between training and "
          "validation accuracy; early stopping stops where the validation loss is lowest.",
    sweep=Sweep(
        epochs={"small": 40, "full": 100},
        stages=tuple(Stage(kind, {"data": {"small": "digits", "full": "mnist1d"},
                                  "data.per_class": {"small": "20", "full": "100"}, "regularization": kind,
                                  **strengths,
                                  "trainer.seed": {"small": "0,1,2,3,4", "full": "0,1,2,3,4,5,6,7,8,9"}})
                     for kind, strengths in (("none", {}),
                                             # a decade apart around the usual 1e-3
                                             ("l2", {"regularization.weight_decay": "1e-4,1e-3,1e-2"}),
                                             ("l1", {"regularization.l1": "1e-5,1e-4,1e-3"}),
                                             # up to Srivastava et al.'s 0.5 for hidden units
                                             ("dropout", {"regularization.dropout": "0.1,0.3,0.5"}))),
        # the regime the claim is about: training past the point of overfitting
        settings={"trainer.early_stopping.enabled": False}),
    protocol=Protocol(
        note="Ju Sun, Training DNNs: Basic Methods and Tricks, regularization to avoid overfitting "
             "(../shared/seeds/002)",
        paper="Srivastava et al. 2014 (dropout: lower test error of overfitting networks, p = 0.5 for hidden "
              "units); Krogh and Hertz 1992 (weight decay improves generalization); Tibshirani 1996 (L1)",
        measurement="per seed, each regularizer's strength with the best val accuracy (of 3, a decade apart; "
                    "dropout 0.1, 0.3, 0.5), its test accuracy and final train - val accuracy gap, paired with "
                    "no regularization by seed (the same seed draws the same training subset and "
                    "initialization); no early stopping, so the networks train into the overfitting regime, "
                    "and each run is tested at its best val-loss epoch",
        data="small: digits, 20 labels per class (200); full: MNIST-1D (Greydanus 2020, made for such "
             "studies), 100 per class (1,000); a 256-256 MLP",
        seeds="5 at small, 10 at full: a paired difference of about a validation sample (0.007 on digits) "
              "needs its standard error below half of that",
        conditions=(
            Claim("the network overfits", "without regularization, after the last epoch: train accuracy >= "
                  "{train} and train - val accuracy >= {gap} (means over seeds)", overfits,
                  {"train": 0.99, "gap": 0.05}),
        )),
    claims=(
        *(Claim(f"{kind} at its best strength raises test accuracy", "test accuracy of " + kind + " minus none, "
                "paired by seed: mean above 0 by more than {errors:g} standard errors", regularizer_improves_test,
                {"kind": kind, "errors": 2}) for kind in REGULARIZERS),
        Claim("regularizers shrink the train-validation gap", "train minus val accuracy after the last epoch, "
              "paired by seed: for each of l2, l1 and dropout at its best strength, the mean change against "
              "none is below 0 by more than {errors:g} standard errors", regularizers_shrink_the_gap, {"errors": 2}),
    ),
    figures=regularization_figures)
