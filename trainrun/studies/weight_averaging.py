"""The weight-averaging study (`trainrun -m study=weight_averaging`): an average of the weights (EMA, SWA) tests
more accurately than the weights training ends with, on an MLP and a small CNN.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Protocol, Stage, Study, Sweep, need, paired, pick, seed_of
from .helpers import DIGITS_OR_MNIST, pyplot, save

MODELS = ("mlp", "cnn")
SEEDS = "0,1,2"


def test_accuracy(runs, model: str, averaging: str) -> dict:
    """{seed: test accuracy} of the runs of `model` with `averaging` (none: the raw weights at the end)."""
    chosen = need(pick(runs, model=model, averaging=averaging), f"the {model} runs with averaging={averaging}")
    return {seed_of(r): need(r.metrics.get("test/acc"), f"{r.name}'s test accuracy") for r in chosen}


def raw_model_learned(runs, accuracy: float) -> tuple[str, str]:
    accs = {m: test_accuracy(runs, m, "none") for m in MODELS}
    worst = min(min(a.values()) for a in accs.values())
    return (HOLDS if worst >= accuracy else FAILS), "; ".join(
        f"{m}: test accuracy per seed " + ", ".join(f"{a:.4f}" for a in accs[m].values()) for m in MODELS)


def averaged_tests_better(runs, model: str, averaging: str, errors: float) -> tuple[str, str]:
    ours, raw = test_accuracy(runs, model, averaging), test_accuracy(runs, model, "none")
    mean, error, n = paired(ours, raw, f"{model} with averaging={averaging}")
    per_seed = ", ".join(f"{ours[s]:.4f} vs {raw[s]:.4f}" for s in sorted(set(ours) & set(raw), key=str))
    return (HOLDS if mean - errors * error > 0 else FAILS), \
        (f"{model} test accuracy, {averaging} average minus the raw weights, over {n} seeds: {mean:+.4f} ± "
         f"{error:.4f} (per seed {per_seed})")


def averaging_figures(runs, out: Path) -> list[Path]:
    """Test accuracy per seed of each model's raw, EMA and SWA weights; and one seed's validation curves."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(MODELS), figsize=(5 * (1 + len(MODELS)), 4))
    kinds = ("none", "ema", "swa")
    for i, model in enumerate(MODELS):
        for j, kind in enumerate(kinds):
            chosen = sorted(pick(runs, model=model, averaging=kind), key=lambda r: str(seed_of(r)))
            axes[0].scatter([i + (j - 1) * 0.25] * len(chosen), [r.metrics.get("test/acc") or 0 for r in chosen],
                            color=f"C{j}", label=("raw" if kind == "none" else kind) if i == 0 else None)
        first = {kind: next(iter(sorted(pick(runs, model=model, averaging=kind), key=lambda r: str(seed_of(r)))), None)
                 for kind in kinds}
        ax = axes[1 + i]
        for tag, run, label in (("acc/val", first["none"], "raw (no averaging)"), ("acc/val_ema", first["ema"], "EMA"),
                                ("acc/val", first["swa"], "raw (SWA's run)"), ("acc/val_swa", first["swa"], "SWA")):
            points = run.curves.get(tag, []) if run else []
            if points:
                ax.plot([p[0] for p in points], [p[2] for p in points], marker=".", label=label)
        ax.set(xlabel="epoch", ylabel="val accuracy", title=f"{model}: first seed's validation accuracy")
        ax.legend(fontsize=8)
    axes[0].set_xticks(range(len(MODELS)), MODELS)
    axes[0].set(ylabel="test accuracy", title="each seed's test accuracy at the end")
    axes[0].legend(fontsize=8)
    return [save(fig, out / "weight_averaging.png")]


STUDY = Study(
    summary="an average of the weights (EMA, SWA) tests more accurately than the weights training ends with",
    claim="Averaging the weights along training, as an exponential moving average of every step (EMA) or as the "
          "equal average of the last epochs' weights at a constant learning rate (SWA), gives a model whose test "
          "accuracy is higher than that of the weights training ends with, for an MLP and for a small CNN.",
    sweep=Sweep(
        epochs={"small": 10, "full": 20},
        options={"optimizer": "momentum"},
        stages=(Stage("ema", {**DIGITS_OR_MNIST, "model": ",".join(MODELS), "averaging": "none,ema",
                              "trainer.seed": SEEDS}),
                Stage("swa", {**DIGITS_OR_MNIST, "model": ",".join(MODELS), "averaging": "swa",
                              "averaging.start_epoch": {"small": 8, "full": 15}, "trainer.seed": SEEDS})),
        settings={"optimizer.lr": 0.05, "trainer.early_stopping.enabled": False,
                  "trainer.early_stopping.restore_best": False}),
    protocol=Protocol(
        note="not in the lecture notes (../shared/seeds/ do not cover weight averaging): issue #34, from timm's "
             "train.py (--model-ema, reported beside the raw model's accuracy), Lightning's "
             "StochasticWeightAveraging and Keras' use_ema",
        paper="Polyak and Juditsky 1992 (averaged iterates); Izmailov et al. 2018 (Averaging weights leads to "
              "wider optima and better generalization): SWA from 75% of the budget at a constant lr improves "
              "test accuracy over the SGD solution; timm's ModelEmaV3 for EMA with warm-up",
        measurement="the shipped MLP and CNN trained with SGD and momentum 0.9 at lr 0.05 for a fixed number "
                    "of epochs (no early stopping); the test accuracy of the weights at the end "
                    "(trainer.early_stopping.restore_best=false: the average where there is one, else the raw "
                    "weights) of averaging=ema (decay 0.999 with warm-up) and averaging=swa (from 75% of the "
                    "epochs, at the optimizer's lr) against averaging=none, paired by seed (the same seed draws "
                    "the same initialization and batches; EMA leaves training itself unchanged)",
        data="small: 8x8 digits, 10 epochs; full: MNIST's 10,000 test images split 7,200/800/2,000 "
             "(data.root=<the folder of t10k-*-idx*-ubyte.gz>), 20 epochs",
        seeds="3 (the issue's protocol): a claim holds where the paired difference exceeds 2 standard errors",
        conditions=(
            Claim("the raw models learned", "the raw weights' test accuracy >= {accuracy} for both models in "
                  "every seed: averaging is claimed to improve a model that has learned the task",
                  raw_model_learned, {"accuracy": 0.9}),
        )),
    claims=tuple(
        Claim(f"{kind} beats the raw weights on the {model}", f"{model} test accuracy, {kind} minus raw, paired by "
              "seed: mean above 0 by more than {errors:g} standard errors", averaged_tests_better,
              {"model": model, "averaging": kind, "errors": 2})
        for model in MODELS for kind in ("ema", "swa")),
    figures=averaging_figures)
