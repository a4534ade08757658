"""The init_depth study (`trainrun -m study=init_depth`): zeros keeps units identical; N(0,1) explodes; Xavier
shrinks with depth, Kaiming keeps the scale and trains the deepest.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

import statistics
from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Inconclusive, Protocol, Stage, Study, Sweep, hidden, need, pick, seed_of
from .helpers import pyplot, save, first_seed


def depths(runs) -> list[int]:
    return sorted({int(r.choices["model.depth"]) for r in runs if "model.depth" in r.choices})

def last_hidden_std(run) -> float | None:
    acts = run.at_init()["activations"]
    names = hidden(acts)
    return acts[names[-1]]["std"] if names else None

def zeros_identical_units(runs) -> tuple[str, str]:
    runs = need(pick(runs, init="zeros"), "the zeros run")
    need(runs[0].layers, "the zeros run's layers.json")
    spreads = [a["unit_spread"] for run in runs for record in run.layers
               for name, a in record["activations"].items() if name.startswith("fc")]
    return (HOLDS if spreads and max(spreads) == 0 else FAILS), \
        f"largest spread across a hidden layer's units: {max(spreads):g} ({len(spreads)} layer measurements)"

def deepest_stds(runs, init) -> dict:
    """{seed: the last hidden layer's activation std at init in the deepest net}."""
    d = need(depths(runs), "a run with model.depth")
    deep = need(pick(runs, init=init, **{"model.depth": d[-1]}), f"the {init} run at depth {d[-1]}")
    # an std that exploded past float range is null in layers.json
    return {seed_of(r): need(last_hidden_std(r), f"{init}'s activation std at depth {d[-1]}") for r in deep}

def std_growth(runs, init) -> float:
    """Last hidden layer's activation std at init, deepest net over shallowest of the same seed: the median
    over seeds (a single finite-width net fluctuates around what the variance argument predicts)."""
    d = need(depths(runs), "a run with model.depth")
    shallow = {seed_of(r): need(last_hidden_std(r) or None, f"{init}'s activation std at depth {d[0]}")
               for r in pick(runs, init=init, **{"model.depth": d[0]})}
    deep = deepest_stds(runs, init)
    return statistics.median(need([deep[s] / shallow[s] for s in deep if s in shallow],
                                  f"{init}'s runs at depths {d[0]} and {d[-1]} with the same seed"))

def kaiming_fluctuates_little(runs, factor: float) -> tuple[str, str]:
    stds = deepest_stds(runs, "kaiming_normal")
    if len(stds) < 2:
        raise Inconclusive("the fluctuation needs the deepest Kaiming net in at least 2 seeds")
    spread = max(stds.values()) / min(stds.values())
    return (HOLDS if spread <= factor else FAILS), \
        f"deepest Kaiming net's last hidden std over {len(stds)} seeds: max / min {spread:.3g}"

def naive_normal_explodes(runs, growth: float) -> tuple[str, str]:
    measured = std_growth(runs, "standard_normal")
    return (HOLDS if measured >= growth else FAILS), f"last hidden std, deepest / shallowest: {measured:.3g}"

def xavier_shrinks_kaiming_keeps(runs, shrunk: float, kept: tuple) -> tuple[str, str]:
    x, k = std_growth(runs, "xavier_normal"), std_growth(runs, "kaiming_normal")
    return (HOLDS if x < shrunk and kept[0] <= k <= kept[1] else FAILS), \
        f"last hidden std, deepest / shallowest (median over seeds): xavier {x:.3g}, kaiming {k:.3g}"

def kaiming_trains_deepest(runs, within: float) -> tuple[str, str]:
    d = need(depths(runs), "a run with model.depth")
    scores = {}
    for r in pick(runs, **{"model.depth": d[-1]}):
        scores.setdefault(r.choices["init"], []).append(r.metrics.get("test/acc"))
    at_depth = {k: statistics.mean(v) for k, v in scores.items() if None not in v}
    kaiming = need(at_depth.get("kaiming_normal"), f"the kaiming runs at depth {d[-1]}")
    best = max(at_depth.values())
    shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(at_depth.items()))
    return (HOLDS if kaiming >= best - within else FAILS), \
        f"test accuracy at depth {d[-1]} (mean over seeds): {shown}"

def init_depth_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    runs = first_seed(runs)
    inits = sorted({r.choices["init"] for r in runs})
    fig, axes = plt.subplots(1, len(inits), figsize=(3.2 * len(inits), 3.4), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, init in zip(axes, inits):
        for run in sorted(pick(runs, init=init), key=lambda r: int(r.choices["model.depth"])):
            acts = run.at_init()["activations"]
            stds = [acts[n]["std"] for n in hidden(acts)]
            ax.plot(range(1, len(stds) + 1), [s if s else 1e-12 for s in stds], marker=".",
                    label=f"depth {run.choices['model.depth']}")
        ax.set(yscale="log", title=init, xlabel="hidden layer")
    axes[0].set_ylabel("activation std at init (log)")
    axes[0].legend(fontsize=8)
    stds = save(fig, out / "init_depth_activations.png")
    deepest = depths(runs)[-1]
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in pick(runs, **{"model.depth": deepest}):
        if run.val_loss:
            ax.plot(*zip(*run.val_loss), marker=".", label=run.choices["init"])
    ax.set(yscale="log", xlabel="epoch", ylabel="validation loss (log)", title=f"training the {deepest}-layer MLP")
    ax.legend(fontsize=8)
    curves = save(fig, out / "init_depth_loss.png")
    return [stds, curves]


STUDY = Study(
    summary="zeros keeps units identical; N(0,1) explodes; Xavier shrinks with depth, Kaiming keeps the scale and trains the deepest",
    claim="In deep ReLU MLPs, zero initialization keeps hidden units identical, naive N(0,1) explodes, Xavier's "
          "activations shrink with depth while Kaiming's stay about constant, and Kaiming trains the deepest net "
          "(He et al. 2015).",
    sweep=Sweep(
        epochs={"small": 10, "full": 40},
        stages=(Stage("init", {"model.depth": "2,8,20",
                               "init": "standard_normal,xavier_normal,kaiming_normal,orthogonal,zeros",
                               # the variance argument's fluctuation shrinks with the width
                               "model.width": {"small": "64", "full": "256"}, "trainer.seed": "0,1,2"}),),
        settings={"trainer.early_stopping.enabled": False, "logger.layers": True}),
    protocol=Protocol(
        note="Gilles Louppe, Deep Learning, lecture 4: Training neural networks (../shared/seeds/004)",
        paper="He et al. 2015 (Kaiming: Var(w) = 2/fan_in keeps a ReLU layer's output variance), Glorot and Bengio 2010 (Xavier)",
        measurement="the last hidden layer's activation std at initialization, depths 2, 8 and 20, deepest over "
                    "shallowest of the same seed, the median over seeds; each layer's spread across its units "
                    "(layers.json); test accuracy at the largest depth, the mean over seeds",
        data="scikit-learn's 8x8 digits at both sizes (the quantity is measured at initialization, where the "
             "data's difficulty does not enter); width 64 at small, 256 at full",
        seeds="3 at both sizes: the variance argument is about the expectation over initializations, so one "
              "net shows where it lies only together with how far nets of the same width scatter around it",
        conditions=(
            Claim("Xavier shrinks, Kaiming keeps: the width at which the variance argument holds",
                  "at the largest depth, Kaiming's last hidden std varies across seeds by at most {factor:g}x "
                  "(max / min): the argument is about the expectation, and at finite width each net's std "
                  "drifts from it by a random factor that grows with depth over width (Hanin and Rolnick "
                  "2018)", kaiming_fluctuates_little, {"factor": 2}, scope="Xavier shrinks"),
        )),
    claims=(
        Claim("zeros keeps hidden units identical", "the spread across each hidden layer's units is exactly 0 "
              "in every measurement", zeros_identical_units),
        Claim("naive N(0,1) explodes", "last hidden activation std at init grows >= {growth:g}x from the "
              "shallowest to the deepest net", naive_normal_explodes, {"growth": 100}),
        Claim("Xavier shrinks with depth, Kaiming keeps the scale", "deepest/shallowest last hidden std < {shrunk} "
              "under Xavier, within [{kept[0]}, {kept[1]}] under Kaiming", xavier_shrinks_kaiming_keeps,
              {"shrunk": 0.5, "kept": (0.5, 2)}),
        Claim("Kaiming trains the deepest net", "at the largest depth, Kaiming's test accuracy is within {within} "
              "of the best init's", kaiming_trains_deepest, {"within": 0.01}),
    ),
    figures=init_depth_figures)
