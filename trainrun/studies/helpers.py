"""What several studies share: finding runs and their numbers, judging per seed, drawing figures (matplotlib),
and the stage settings several studies start from."""
from __future__ import annotations

import math
from pathlib import Path

from .framework import FAILS, HOLDS, INCONCLUSIVE, hidden_weights, judged, need, seed_of


def pyplot():
    """matplotlib's pyplot, drawing to files (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def first_to_last_ratio(run) -> float | None:
    norms = run.at_init()["grad_norms"]
    names = hidden_weights(norms)
    first, last = norms.get(names[0]) if names else None, norms.get(names[-1]) if names else None
    return first / last if first is not None and last else None

def plot_curves(runs, out: Path, name: str, tag: str, label_key: str, title: str, ylabel: str) -> Path:
    """`tag` per epoch and per second of wall time, one line per run (log scale)."""
    plt = pyplot()
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    lengths = []
    for run in runs:
        points = run.curves.get(tag, [])
        if points:
            epochs, seconds, values = zip(*points)
            lengths.append(epochs[-1])
            by_epoch.plot(epochs, values, marker=".", label=run.choices.get(label_key, run.name))
            by_time.plot(seconds, values, marker=".", label=run.choices.get(label_key, run.name))
    # GD's 1,000 one-step epochs beside SGD's 40 would squeeze SGD into the first 4% of a linear axis
    spread = len(lengths) > 1 and max(lengths) >= 10 * min(lengths)
    by_epoch.set(yscale="log", xscale="log" if spread else "linear", xlabel="epoch (log)" if spread else "epoch",
                 ylabel=ylabel, title=title)
    by_time.set(xlabel="wall time (s, log)", xscale="log", title="the same, against time")
    by_epoch.legend(fontsize=8)
    return save(fig, out / f"{name}.png")

def train_losses(run) -> list[float]:
    """The train loss after each epoch; a run that diverged ends in inf."""
    losses = [v for _, _, v in run.curves.get("loss/train", [])]
    if run.metrics.get("stop_reason") == "diverged" or not all(map(math.isfinite, losses)):
        return [v for v in losses if math.isfinite(v)] + [math.inf]
    return losses

def first_seed(runs) -> list:
    """The runs of the first seed of a study swept over trainer.seed (its figure shows one seed)."""
    first = min((r.choices.get("trainer.seed", "") for r in runs), key=str, default="")
    return [r for r in runs if r.choices.get("trainer.seed", "") == first]

def best_on_validation(runs, key: str) -> dict:
    """{value of `key`: {seed: its run at the setting with the best val accuracy in that seed}}: a method
    compared at its best setting (strength, lr), chosen on validation only."""
    out = {}
    for r in runs:
        if r.metrics.get("val/acc") is None:
            continue
        best = out.setdefault(r.choices.get(key), {}).get(seed_of(r))
        if best is None or r.metrics["val/acc"] > best.metrics["val/acc"]:
            out[r.choices.get(key)][seed_of(r)] = r
    return out

def test_accuracies(best: dict, kind: str) -> dict:
    """{seed: test accuracy} of `kind`'s runs in `best` (best_on_validation's)."""
    return {s: r.metrics.get("test/acc") for s, r in need(best.get(kind), f"the {kind} runs").items()}

def per_seed(check):
    """A rule that holds when `check` holds on the runs of every seed (a study swept over trainer.seed)."""
    def rule(runs, **given) -> tuple[str, str]:
        seeds = {}
        for r in runs:
            seeds.setdefault(r.choices.get("trainer.seed"), []).append(r)
        need(seeds, "a run")
        results = {seed: judged(check, own, given) for seed, own in sorted(seeds.items(), key=lambda s: str(s[0]))}
        verdicts = [v for v, _ in results.values()]
        verdict = INCONCLUSIVE if not results or INCONCLUSIVE in verdicts else HOLDS if set(verdicts) == {HOLDS} else FAILS
        if len(results) == 1:
            return verdict, next(iter(results.values()))[1]
        return verdict, f"holds in {verdicts.count(HOLDS)} of {len(results)} seeds; " + \
            "; ".join(f"seed {seed}: {numbers}" for seed, (_, numbers) in results.items())
    return rule

def finite_accuracies(run) -> list[tuple[int, float]]:
    """(epoch, val accuracy) after each epoch; a diverged epoch's NaN left out."""
    return [(e, v) for e, _, v in run.curves.get("acc/val", []) if v == v]

def finite(value) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

def spreads(runs, seed, fixed: str, varied: str) -> list[float]:
    """Over the grid runs of `seed`: for each value of `fixed`, the range of val accuracy as `varied` changes."""
    groups = {}
    for r in runs:
        if r.stage == "grid" and r.choices.get("trainer.seed") == seed:
            groups.setdefault(r.choices.get(fixed), []).append(r.metrics.get("val/acc") or 0.0)
    return [max(v) - min(v) for v in groups.values() if len(v) > 1]

# What several studies' stages share. Small: the 8x8 digits; full: MNIST's 10,000 test images
# (data.root=<the folder of t10k-*-idx*-ubyte.gz>)
DIGITS_OR_MNIST = {"data": {"small": "digits", "full": "mnist"}, "data.test_set_only": {"full": "true"}}

TWO_OR_FIVE_SEEDS = {"small": "0,1", "full": "0,1,2,3,4"}

UNTIL_CONVERGED = {"small": "300", "full": "1000"}  # full-batch GD's epochs: one step each

ONE_OVER_T = "none,inverse_time"  # a constant step and a 1/t schedule
