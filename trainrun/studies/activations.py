"""The activations study (`trainrun -m study=activations`): sign passes no gradient to the hidden layers; sigmoid's
vanish and it trains worse than ReLU; tanh and abs are acceptable.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

import statistics
from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Protocol, Stage, Study, Sweep, fmt, hidden_weights, need, paired, pick, seed_of
from .helpers import pyplot, save, first_to_last_ratio, best_on_validation, test_accuracies, per_seed, DIGITS_OR_MNIST, TWO_OR_FIVE_SEEDS


def sign_hidden_gradients(runs) -> tuple[str, str]:
    signs = need(pick(runs, activation="sign"), "the sign runs")
    records = [record for run in signs for record in need(run.layers, f"{run.name}'s layers.json")]
    hidden_norms = [r["grad_norms"][n] for r in records for n in hidden_weights(r["grad_norms"])]
    head = [r["grad_norms"].get("head.weight") for r in records]
    measured = (f"largest hidden-layer gradient norm {max(hidden_norms):g} over {len(records)} measurements of "
                f"{len(signs)} runs; head's {fmt(min(head))} to {fmt(max(head))}")
    return (HOLDS if max(hidden_norms) == 0 and min(h or 0 for h in head) > 0 else FAILS), measured

def sigmoid_vanishes(runs, vanished: float, kept: float) -> tuple[str, str]:
    sigmoid, relu = need(pick(runs, activation="sigmoid"), "the sigmoid run"), need(pick(runs, activation="relu"), "the relu run")
    s = need(first_to_last_ratio(sigmoid[0]), "sigmoid's gradient norm")  # at init: the same at every lr of a seed
    r = need(first_to_last_ratio(relu[0]), "relu's gradient norm")
    return (HOLDS if s < vanished and r > kept else FAILS), f"first/last hidden gradient norm at init: sigmoid {s:.2g}, relu {r:.2g}"

def versus_relu(runs, kind: str) -> tuple[float, float, str]:
    """(mean, standard error, the numbers) of `kind`'s test accuracy minus ReLU's, each at its best lr, by seed."""
    best = best_on_validation(runs, "activation")
    mean, error, n = paired(test_accuracies(best, kind), test_accuracies(best, "relu"), f"{kind} and relu")
    lrs = {k: ", ".join(sorted({fmt(float(r.choices["optimizer.lr"])) for r in best[k].values()})) for k in (kind, "relu")}
    return mean, error, (f"test accuracy, {kind} (best lr {lrs[kind]}) minus relu (best lr {lrs['relu']}), "
                         f"over {n} seeds: {mean:+.4f} ± {error:.4f}")

def relu_beats(runs, kind: str, errors: float) -> tuple[str, str]:
    mean, error, numbers = versus_relu(runs, kind)
    return (HOLDS if mean + errors * error < 0 else FAILS), numbers

def no_worse_than_relu(runs, kind: str, within: float, errors: float) -> tuple[str, str]:
    mean, error, numbers = versus_relu(runs, kind)
    return (HOLDS if mean - errors * error > -within else FAILS), numbers

def activation_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    best = best_on_validation(runs, "activation")
    first = min((seed_of(r) for r in runs), key=str, default=None)
    for kind, by_seed in best.items():
        if first in by_seed:
            norms = by_seed[first].at_init()["grad_norms"]
            names = hidden_weights(norms)
            values = [norms[n] if norms[n] else 1e-12 for n in names]  # an exact zero drawn at the floor
            left.plot(range(1, len(names) + 1), values, marker="o", label=kind)
    left.set(yscale="log", xlabel="hidden layer (input to output)", ylabel="gradient norm of its weight (at init)",
             title=f"gradients per layer at initialization, seed {first}\n(zero drawn at 1e-12)")
    left.legend()
    kinds = list(best)
    means = [statistics.fmean(r.metrics.get("test/acc") or 0 for r in best[k].values()) for k in kinds]
    right.bar(kinds, means)
    for x, k in enumerate(kinds):
        right.scatter([x] * len(best[k]), [r.metrics.get("test/acc") or 0 for r in best[k].values()], color="black", s=8)
    right.set(ylabel="test accuracy", title="after training, each at its best lr (bar: mean; dots: seeds)", ylim=(0, 1))
    return [save(fig, out / "activations.png")]


STUDY = Study(
    summary="sign passes no gradient to the hidden layers; sigmoid's vanish and it trains worse than ReLU; tanh and abs are acceptable",
    claim="In a deep MLP the sign activation passes no gradient to its hidden layers (only the head learns); "
          "sigmoid's gradients vanish toward the input while ReLU's do not, and sigmoid should be avoided; "
          "tanh is less preferred but acceptable, and so is abs, which meets the note's desiderata.",
    sweep=Sweep(
        epochs={"small": 10, "full": 20},
        stages=(Stage("grid", {**DIGITS_OR_MNIST, "activation": "relu,leaky_relu,abs,tanh,sigmoid,sign",
                               "optimizer.lr": "0.0001,0.001,0.01", "trainer.seed": TWO_OR_FIVE_SEEDS}),),
        settings={"model.depth": 6, "model.width": 64, "trainer.early_stopping.enabled": False,
                  "logger.layers": True}),
    protocol=Protocol(
        note="Ju Sun, Training DNNs: Basic Methods and Tricks, which activation at the hidden nodes "
             "(../shared/seeds/002): sign's derivative is 0 almost everywhere; desiderata: differentiable almost "
             "everywhere, nonzero derivatives almost everywhere, cheap; 'ReLU and leaky ReLU are the most "
             "popular, tanh less preferred but okay, sigmoid should be avoided'; early layers' derivatives are "
             "orders of magnitude smaller (vanishing gradients)",
        paper="Glorot and Bengio 2010 (saturating activations and vanishing gradients in deep networks); Glorot, "
              "Bordes and Bengio 2011 (rectifiers train deep networks)",
        measurement="a 6-layer MLP of width 64 per activation, Adam at lr 1e-4, 1e-3 and 1e-2: each hidden "
                    "weight's gradient norm at initialization and after every epoch (layers.json); each "
                    "activation's test accuracy at the lr with its best val accuracy, paired with ReLU's by seed "
                    "(the same seed draws the same initialization and batches); 'acceptable' is no worse than "
                    "ReLU by more than 0.02",
        data="small: 8x8 digits, 10 epochs; full: MNIST's 10,000 test images split 7,200/800/2,000 "
             "(data.root=<the folder of t10k-*-idx*-ubyte.gz>), 20 epochs",
        seeds="2 at small (a demonstration), 5 at full: the accuracy claims need a paired difference beyond 2 "
              "standard errors; the gradient claims must hold in each seed"),
    claims=(
        Claim("sign: the hidden layers receive exactly zero gradient", "every hidden weight's gradient norm is "
              "exactly 0 at init and after every epoch of every sign run, the head's is not", sign_hidden_gradients),
        Claim("sigmoid's gradient vanishes toward the input, ReLU's does not", "at init, first/last hidden "
              "gradient norm < {vanished} under sigmoid and > {kept} under ReLU, in every seed",
              per_seed(sigmoid_vanishes), {"vanished": 0.01, "kept": 0.1}),
        Claim("sigmoid should be avoided", "test accuracy of sigmoid minus ReLU, each at its best lr, paired by "
              "seed: mean below 0 by more than {errors:g} standard errors", relu_beats,
              {"kind": "sigmoid", "errors": 2}),
        *(Claim(f"{kind} is acceptable", "test accuracy of " + kind + " minus ReLU, each at its best lr, paired "
                "by seed: mean above -{within:g} by more than {errors:g} standard errors", no_worse_than_relu,
                {"kind": kind, "within": 0.02, "errors": 2}) for kind in ("tanh", "abs")),
    ),
    figures=activation_figures)
