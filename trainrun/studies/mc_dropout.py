"""The mc_dropout study (`trainrun -m study=mc_dropout`): MC-dropout predictions are more uncertain on the samples
the model gets wrong, and the MC average is more accurate.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Protocol, Stage, Study, Sweep, need, paired, seed_of
from .helpers import pyplot, save, per_seed, DIGITS_OR_MNIST


def wrong_more_uncertain(runs) -> tuple[str, str]:
    metrics = need(runs, "the run")[0].metrics
    right = need(metrics.get("test/mc_entropy_correct"), "a test sample predicted right")
    wrong = need(metrics.get("test/mc_entropy_wrong"), "a test sample predicted wrong")
    return (HOLDS if wrong > right else FAILS), f"right {right:.3f}, wrong {wrong:.3f} nats"

def dropout_net_learned(runs, accuracy: float) -> tuple[str, str]:
    accs = {seed_of(r): r.metrics.get("test/acc") or 0.0 for r in need(runs, "the runs")}
    return (HOLDS if min(accs.values()) >= accuracy else FAILS), \
        "test accuracy per seed: " + ", ".join(f"{a:.3f}" for a in accs.values())

def mc_averaging_boosts(runs, errors: float) -> tuple[str, str]:
    mc = {seed_of(r): need(r.metrics.get("test/mc_acc"), f"{r.name}'s MC accuracy") for r in need(runs, "the runs")}
    single = {seed_of(r): need(r.metrics.get("test/acc"), f"{r.name}'s test accuracy") for r in runs}
    mean, error, n = paired(mc, single, "an MC-dropout accuracy")
    return (HOLDS if mean - errors * error > 0 else FAILS), \
        f"test accuracy, MC average minus one pass without dropout, over {n} seeds: {mean:+.4f} ± {error:.4f}"

def mc_dropout_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    seeds = [r.choices.get("trainer.seed", r.name) for r in runs]
    xs = range(len(runs))
    ax.bar([x - 0.2 for x in xs], [r.metrics.get("test/mc_entropy_correct") or 0 for r in runs], 0.4, label="right")
    ax.bar([x + 0.2 for x in xs], [r.metrics.get("test/mc_entropy_wrong") or 0 for r in runs], 0.4, label="wrong")
    ax.set_xticks(list(xs), [f"seed {s}" for s in seeds])
    ax.set(ylabel="mean predictive entropy (nats)", title="MC dropout: test samples predicted right vs wrong")
    ax.legend()
    return [save(fig, out / "mc_dropout.png")]


STUDY = Study(
    summary="MC-dropout predictions are more uncertain on the samples the model gets wrong, and the MC average is more accurate",
    claim="Keeping dropout on at prediction and averaging 30 passes (Monte-Carlo dropout) gives predictions that "
          "are more uncertain (higher predictive entropy) on the test samples the model gets wrong than on "
          "those it gets right, and boosts the accuracy of the trained dropout model.",
    sweep=Sweep(
        epochs={"small": 10, "full": 20},
        options={"regularization": "dropout"},
        stages=(Stage("train", {**DIGITS_OR_MNIST, "trainer.seed": {"small": "0,1,2", "full": "0,1,2,3,4,5,6,7"}}),),
        settings={"regularization.dropout": 0.3, "regularization.mc_dropout_samples": 30}),
    protocol=Protocol(
        note="Yingfan, Machine Learning: Training DNN, Monte Carlo dropout (../shared/seeds/001): 'can boost the "
             "performance of any trained dropout model without having to retrain it ... provides a much better "
             "measure of the model's uncertainty'; Ju Sun, Training DNNs (../shared/seeds/002), dropout",
        paper="Gal and Ghahramani 2016 (Dropout as a Bayesian approximation): the MC average of dropout passes "
              "approximates the predictive distribution; its entropy measures the model's uncertainty, and "
              "the MC average's test error is at or below the weight-scaled single pass's",
        measurement="an MLP (256-256) trained with dropout 0.3 at the shipped Adam settings; on the test split, "
                    "the mean entropy of the average of 30 dropout passes over the samples it predicts right and "
                    "over those it predicts wrong, and the accuracy of that average against one pass without "
                    "dropout, paired by seed",
        data="small: 8x8 digits, 10 epochs; full: MNIST's 10,000 test images split 7,200/800/2,000 "
             "(data.root=<the folder of t10k-*-idx*-ubyte.gz>), 20 epochs",
        seeds="3 at small, 8 at full: the entropy claim must hold in each seed; the accuracy claim needs a "
              "paired difference beyond 2 standard errors",
        conditions=(
            Claim("a trained dropout model", "the dropout network's test accuracy (one pass) >= {accuracy} in "
                  "every seed: the note's claims are about a model that has learned the task",
                  dropout_net_learned, {"accuracy": 0.9}),
        )),
    claims=(
        Claim("wrong predictions carry more entropy", "in every seed, the mean entropy of the MC-dropout "
              "prediction over wrong test samples exceeds that over right ones", per_seed(wrong_more_uncertain)),
        Claim("the MC average boosts accuracy", "test accuracy of the MC average minus one pass without "
              "dropout, paired by seed: mean above 0 by more than {errors:g} standard errors",
              mc_averaging_boosts, {"errors": 2}),
    ),
    figures=mc_dropout_figures)
