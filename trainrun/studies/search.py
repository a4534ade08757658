"""The search study (`trainrun -m study=search`): with 9 runs over two knobs of which one matters, random search
finds a better configuration than a 3x3 grid.

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

import statistics
from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Protocol, Stage, Study, Sweep, need, paired
from .helpers import pyplot, save, finite, spreads


def search_bests(runs) -> dict:
    """{seed: {"grid" | "random": the search's best run by val loss (a diverged run counts as inf)}}."""
    out = {}
    for r in runs:
        if r.stage in ("grid", "random"):
            best = out.setdefault(r.choices.get("trainer.seed"), {}).get(r.stage)
            if best is None or finite(r.metrics.get("val/loss")) < finite(best.metrics.get("val/loss")):
                out[r.choices.get("trainer.seed")][r.stage] = r
    return {seed: bests for seed, bests in out.items() if len(bests) == 2}

def random_beats_grid(runs, errors: float) -> tuple[str, str]:
    bests = need(search_bests(runs), "a seed with both searches")
    grid = {s: finite(b["grid"].metrics.get("val/loss")) for s, b in bests.items()}
    random_ = {s: finite(b["random"].metrics.get("val/loss")) for s, b in bests.items()}
    mean, error, n = paired(grid, random_, "both searches")
    wins = sum(random_[s] < grid[s] for s in bests)
    test = {k: statistics.fmean(b[k].metrics.get("test/acc") or 0.0 for b in bests.values()) for k in ("grid", "random")}
    return (HOLDS if mean - errors * error > 0 else FAILS), \
        (f"best val loss, grid minus random, over {n} seeds: {mean:+.4f} ± {error:.4f} (random lower in {wins}); "
         f"test accuracy of each search's choice, mean: grid {test['grid']:.3f}, random {test['random']:.3f}")

def optimum_inside(runs, margin: float) -> tuple[str, str]:
    """Where each seed's best run of both searches put the learning rate, against the range's ends."""
    bests = need(search_bests(runs), "a seed with both searches")
    lrs = [float(r.choices["optimizer.lr"]) for r in runs if r.stage in ("grid", "random")]
    low, high = min(lrs), max(lrs)
    best = {s: float(min(b.values(), key=lambda r: finite(r.metrics.get("val/loss"))).choices["optimizer.lr"])
            for s, b in bests.items()}
    inside = [s for s, lr in best.items() if low * margin < lr < high / margin]
    return (HOLDS if len(inside) > len(best) / 2 else FAILS), \
        (f"the best lr of each seed, inside [{low:.3g}, {high:.3g}] by more than {margin:g}x from both ends in "
         f"{len(inside)} of {len(best)} seeds: " + ", ".join(f"{lr:.3g}" for _, lr in sorted(best.items())))

def only_lr_matters(runs, ratio: float) -> tuple[str, str]:
    seeds = need(sorted({r.choices.get("trainer.seed") for r in runs if r.stage == "grid"}), "the grid")
    pairs = [(max(need(spreads(runs, s, "optimizer.lr", "optimizer.weight_decay"), f"seed {s}'s full grid")),
              min(need(spreads(runs, s, "optimizer.weight_decay", "optimizer.lr"), f"seed {s}'s full grid")))
             for s in seeds]
    holds = all(by_wd < ratio * by_lr for by_wd, by_lr in pairs)
    return (HOLDS if holds else FAILS), "largest val-accuracy range over weight decay / smallest over lr: " + \
        ", ".join(f"seed {s}: {a:.3f} / {b:.3f}" for s, (a, b) in zip(seeds, pairs))

def search_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    fig, (tried, by_lr, best) = plt.subplots(1, 3, figsize=(15, 4))
    seeds = sorted({r.choices.get("trainer.seed") for r in runs}, key=str)
    for search, marker in (("grid", "s"), ("random", "o")):
        own = [r for r in runs if r.stage == search]
        first = [r for r in own if r.choices.get("trainer.seed") == seeds[0]]
        tried.scatter([float(r.choices["optimizer.lr"]) for r in first],
                      [float(r.choices["optimizer.weight_decay"]) for r in first], marker=marker, label=search)
        by_lr.scatter([float(r.choices["optimizer.lr"]) for r in own], [r.metrics.get("val/acc") or 0 for r in own],
                      marker=marker, alpha=0.6, label=search)
    tried.set(xscale="log", yscale="log", xlabel="learning rate (log)", ylabel="weight decay (log)",
              title=f"the 9 configurations tried (seed {seeds[0]})")
    by_lr.set(xscale="log", xlabel="learning rate (log)", ylabel="val accuracy (best epoch)",
              title="what each run reached, every seed")
    bests = search_bests(runs)
    xs = range(len(bests))
    for offset, search in ((-0.2, "grid"), (0.2, "random")):
        best.bar([x + offset for x in xs], [finite(b[search].metrics.get("val/loss")) for b in bests.values()],
                 0.4, label=search)
    best.set_xticks(list(xs), [str(s) for s in bests])
    best.set(xlabel="seed", ylabel="best val loss found (lower is better)", title="each search's best run")
    for ax in (tried, by_lr, best):
        ax.legend(fontsize=8)
    return [save(fig, out / "search.png")]

SEARCH_SEEDS = {"small": "0,1,2,3,4,5", "full": "0,1,2,3,4,5,6,7,8,9,10,11"}


STUDY = Study(
    summary="with 9 runs over two knobs of which one matters, random search finds a better configuration than a 3x3 grid",
    claim="With the same budget of 9 runs over two hyperparameters of which only one matters, random search "
          "finds a better configuration than grid search, because it tries 9 values of the one that matters "
          "where the grid tries 3 (Bergstra and Bengio 2012).",
    sweep=Sweep(
        epochs={"small": 5, "full": 20},
        options={"optimizer": "sgd"},
        stages=(
            # 3 values of each, ends included, evenly spaced on the log scale
            Stage("grid", {"optimizer.lr": "0.001,0.1,10.0", "optimizer.weight_decay": "1e-06,3.162e-05,0.001",
                           "trainer.seed": SEARCH_SEEDS}),
            # 9 draws per seed, log-uniform over the same ranges
            Stage("random", {"optimizer.lr": "tag(log, interval(0.001, 10.0))",
                             "optimizer.weight_decay": "tag(log, interval(1e-06, 0.001))", "trainer.seed": SEARCH_SEEDS},
                  samples=9),
        ),
        settings={"trainer.early_stopping.enabled": False}),
    protocol=Protocol(
        note="Ju Sun, Training DNNs: Basic Methods and Tricks, hyperparameter search (../shared/seeds/002)",
        paper="Bergstra and Bengio 2012 (Random search for hyper-parameter optimization): with low effective "
              "dimensionality, random search's distinct values of the parameter that matters find better "
              "configurations than a grid of the same budget",
        measurement="per seed, each search's best validation loss (the objective a search minimizes; the "
                    "test accuracy of its choice is shown beside it), paired by seed; SGD, the lr from 1e-3 to "
                    "10 (two decades either side of SGD's usual 0.1), weight decay from 1e-6 to 1e-3",
        data="digits, 5 epochs at small, 20 at full",
        seeds="6 at small, 12 at full: each seed its own draws and initializations; the claim needs a paired "
              "difference beyond 2 standard errors",
        conditions=(
            Claim("low effective dimensionality: only the learning rate matters", "in the grid, per seed: the "
                  "largest range of val accuracy over weight decay at a fixed lr is below {ratio:g} times the "
                  "smallest range over lr at a fixed weight decay", only_lr_matters, {"ratio": 0.1}),
            Claim("the optimum lies inside the range", "the best lr of each seed (both searches) is more than "
                  "{margin:g}x inside both ends of the range, in more than half the seeds", optimum_inside,
                  {"margin": 3}),
        )),
    claims=(
        Claim("random search finds the better configuration", "best val loss of the 3x3 grid minus the 9 "
              "random runs', paired by seed: mean above 0 by more than {errors:g} standard errors",
              random_beats_grid, {"errors": 2}),
    ),
    figures=search_figures)
