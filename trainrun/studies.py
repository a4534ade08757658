"""The studies' records: each claim's rule over the measured numbers, and the figures (matplotlib).

Rules read layers.json's record at initialization (epoch 0) or after training, and metrics.json. A rule takes
its thresholds and the settings it reads runs at from its Claim's `given` (the rule's text is formatted from
them), finds runs by value (`pick`), and asks for each number it reads through `need`: one that it cannot read
(a run missing, a statistic that exploded to null) makes the claim `inconclusive`.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

from .study import FAILS, HOLDS, INCONCLUSIVE, Claim, Inconclusive, Study, fmt, hidden, hidden_weights, judged, need, pick, same


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

# -------------------------------------------------------------------------------------------- activations


def sign_hidden_gradients(runs) -> tuple[str, str]:
    records = need(need(pick(runs, activation="sign"), "the sign run")[0].layers, "the sign run's layers.json")
    hidden_norms = [r["grad_norms"][n] for r in records for n in hidden_weights(r["grad_norms"])]
    head = [r["grad_norms"].get("head.weight") for r in records]
    measured = f"largest hidden-layer gradient norm {max(hidden_norms):g} over {len(records)} measurements; head's {fmt(min(head))} to {fmt(max(head))}"
    return (HOLDS if max(hidden_norms) == 0 and min(h or 0 for h in head) > 0 else FAILS), measured


def first_to_last_ratio(run) -> float | None:
    norms = run.at_init()["grad_norms"]
    names = hidden_weights(norms)
    first, last = norms.get(names[0]) if names else None, norms.get(names[-1]) if names else None
    return first / last if first is not None and last else None


def sigmoid_vanishes(runs, vanished: float, kept: float) -> tuple[str, str]:
    sigmoid, relu = need(pick(runs, activation="sigmoid"), "the sigmoid run"), need(pick(runs, activation="relu"), "the relu run")
    s = need(first_to_last_ratio(sigmoid[0]), "sigmoid's gradient norm")
    r = need(first_to_last_ratio(relu[0]), "relu's gradient norm")
    return (HOLDS if s < vanished and r > kept else FAILS), f"first/last hidden gradient norm at init: sigmoid {s:.2g}, relu {r:.2g}"


def abs_is_acceptable(runs, within: float) -> tuple[str, str]:
    acc_a = need(need(pick(runs, activation="abs"), "the abs run")[0].metrics.get("test/acc"), "abs's test accuracy")
    acc_r = need(need(pick(runs, activation="relu"), "the relu run")[0].metrics.get("test/acc"), "relu's test accuracy")
    return (HOLDS if acc_a >= acc_r - within else FAILS), f"test accuracy: abs {acc_a:.3f}, relu {acc_r:.3f}"


def activation_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        norms = run.at_init()["grad_norms"]
        names = hidden_weights(norms)
        values = [norms[n] if norms[n] else 1e-12 for n in names]  # an exact zero drawn at the floor
        left.plot(range(1, len(names) + 1), values, marker="o", label=run.choices.get("activation"))
    left.set(yscale="log", xlabel="hidden layer (input to output)", ylabel="gradient norm of its weight (at init)",
             title="gradients per layer at initialization\n(zero drawn at 1e-12)")
    left.legend()
    names = [r.choices.get("activation") for r in runs]
    right.bar(names, [r.metrics.get("test/acc") or 0 for r in runs])
    right.set(ylabel="test accuracy", title="after training", ylim=(0, 1))
    return [save(fig, out / "activations.png")]


# -------------------------------------------------------------------------------------------- init_depth


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


def std_growth(runs, init) -> float:
    """Last hidden layer's activation std at init, deepest net over shallowest."""
    d = need(depths(runs), "a run with model.depth")
    deep = need(pick(runs, init=init, **{"model.depth": d[-1]}), f"the {init} run at depth {d[-1]}")
    shallow = need(pick(runs, init=init, **{"model.depth": d[0]}), f"the {init} run at depth {d[0]}")
    # an std that exploded past float range is null in layers.json
    a = need(last_hidden_std(deep[0]), f"{init}'s activation std at depth {d[-1]}")
    b = need(last_hidden_std(shallow[0]) or None, f"{init}'s activation std at depth {d[0]}")
    return a / b


def naive_normal_explodes(runs, growth: float) -> tuple[str, str]:
    measured = std_growth(runs, "standard_normal")
    return (HOLDS if measured >= growth else FAILS), f"last hidden std, deepest / shallowest: {measured:.3g}"


def xavier_shrinks_kaiming_keeps(runs, shrunk: float, kept: tuple) -> tuple[str, str]:
    x, k = std_growth(runs, "xavier_normal"), std_growth(runs, "kaiming_normal")
    return (HOLDS if x < shrunk and kept[0] <= k <= kept[1] else FAILS), \
        f"last hidden std, deepest / shallowest: xavier {x:.3g}, kaiming {k:.3g}"


def kaiming_trains_deepest(runs, within: float) -> tuple[str, str]:
    d = need(depths(runs), "a run with model.depth")
    at_depth = {r.choices["init"]: r.metrics.get("test/acc") for r in pick(runs, **{"model.depth": d[-1]})}
    kaiming = need(at_depth.get("kaiming_normal"), f"the kaiming run at depth {d[-1]}")
    best = max(v for v in at_depth.values() if v is not None)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(at_depth.items()) if v is not None)
    return (HOLDS if kaiming >= best - within else FAILS), f"test accuracy at depth {d[-1]}: {shown}"


def init_depth_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
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


def plot_curves(runs, out: Path, name: str, tag: str, label_key: str, title: str, ylabel: str) -> Path:
    """`tag` per epoch and per second of wall time, one line per run (log scale)."""
    plt = pyplot()
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for run in runs:
        points = run.curves.get(tag, [])
        if points:
            epochs, seconds, values = zip(*points)
            by_epoch.plot(epochs, values, marker=".", label=run.choices.get(label_key, run.name))
            by_time.plot(seconds, values, marker=".", label=run.choices.get(label_key, run.name))
    by_epoch.set(yscale="log", xlabel="epoch", ylabel=ylabel, title=title)
    by_time.set(xlabel="wall time (s, log)", xscale="log", title="the same, against time")
    by_epoch.legend(fontsize=8)
    return save(fig, out / f"{name}.png")


# -------------------------------------------------------------------------------------------- selu

SELU_UNIT_STD = (0.8, 1.2)  # the std band of "about unit variance"


def layer_moments(run) -> list[tuple[float, float]]:
    acts = run.at_init()["activations"]
    return [(acts[n]["mean"], acts[n]["std"]) for n in hidden(acts)]


def selu_self_normalizes(runs, mean: float, std: tuple) -> tuple[str, str]:
    moments = need(layer_moments(need(pick(runs, init="lecun_normal"), "the lecun_normal run")[0]), "its statistics")
    for m, s in moments:
        need(m, "an activation mean"), need(s, "an activation std")
    worst_mean = max(abs(m) for m, _ in moments)
    stds = [s for _, s in moments]
    holds = worst_mean <= mean and all(std[0] <= s <= std[1] for s in stds)
    return (HOLDS if holds else FAILS), (f"{len(moments)} layers: largest |mean| {worst_mean:.3f}, "
                                         f"std from {min(stds):.3f} to {max(stds):.3f}")


def other_inits_drift(runs, std: tuple) -> tuple[str, str]:
    others = need([r for r in runs if r.choices.get("init") != "lecun_normal"], "a run of another init")
    last = {r.choices["init"]: layer_moments(r)[-1][1] for r in others}
    drifted = {k: v for k, v in last.items() if v is None or not std[0] <= v <= std[1]}
    shown = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(last.items()))
    return (HOLDS if len(drifted) == len(last) else FAILS), f"last hidden layer's std: {shown}"


def selu_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    fig, (means, stds) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        moments = layer_moments(run)
        layers = range(1, len(moments) + 1)
        means.plot(layers, [m for m, _ in moments], marker=".", label=run.choices.get("init"))
        stds.plot(layers, [s for _, s in moments], marker=".", label=run.choices.get("init"))
    means.set(xlabel="hidden layer", ylabel="activation mean at init", title="SELU: mean per layer")
    stds.set(xlabel="hidden layer", ylabel="activation std at init (log)", yscale="log", title="SELU: std per layer")
    stds.axhspan(*SELU_UNIT_STD, color="green", alpha=0.1)
    means.legend(fontsize=8)
    return [save(fig, out / "selu.png")]


# -------------------------------------------------------------------------------------------- optimizers


def final_train_loss(run) -> float | None:
    points = run.curves.get("loss/train", [])
    return points[-1][2] if points else None


def momentum_beats_sgd(runs) -> tuple[str, str]:
    losses = {r.choices.get("optimizer"): final_train_loss(r) for r in runs}
    for kind in ("sgd", "momentum", "nesterov"):
        need(losses.get(kind), f"the {kind} run's train loss")
    holds = losses["momentum"] < losses["sgd"] and losses["nesterov"] < losses["sgd"]
    shown = ", ".join(f"{k} {fmt(v)}" for k, v in losses.items())
    return (HOLDS if holds else FAILS), f"train loss after the last epoch: {shown}"


# -------------------------------------------------------------------------------------------- mc_dropout


def wrong_more_uncertain(runs) -> tuple[str, str]:
    metrics = need(runs, "the run")[0].metrics
    right = need(metrics.get("test/mc_entropy_correct"), "a test sample predicted right")
    wrong = need(metrics.get("test/mc_entropy_wrong"), "a test sample predicted wrong")
    return (HOLDS if wrong > right else FAILS), f"right {right:.3f}, wrong {wrong:.3f} nats"


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


# -------------------------------------------------------------------------------------------- transfer


def transfer_runs(runs) -> dict:
    """The learning stage's runs by approach."""
    learn = [r for r in runs if r.stage == "learn"]
    approach = {("best.pt", "false"): "fine-tuned", ("best.pt", "true"): "frozen backbone",
                ("null", "false"): "from scratch", ("null", "true"): "frozen random features"}
    out = {}
    for r in learn:
        checkpoint = "null" if r.choices.get("model.checkpoint") in (None, "null") else "best.pt"
        head_only = "true" if same(r.choices.get("model.head_only"), True) else "false"
        out[approach[(checkpoint, head_only)]] = r.metrics.get("test/acc")
    return out


def pretrained_beats_scratch(runs) -> tuple[str, str]:
    acc = transfer_runs(runs)
    for approach in ("fine-tuned", "frozen backbone", "from scratch"):
        need(acc.get(approach), f"the learning stage's {approach} run")
    shown = ", ".join(f"{k} {v:.3f}" for k, v in acc.items() if v is not None)
    holds = acc["fine-tuned"] > acc["from scratch"] and acc["frozen backbone"] > acc["from scratch"]
    return (HOLDS if holds else FAILS), f"test accuracy on 5-9 from 10 labels per class: {shown}"


def transfer_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    acc = transfer_runs(runs)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(list(acc), [v or 0 for v in acc.values()])
    ax.set(ylabel="test accuracy (digits 5-9)", ylim=(0, 1), title="learning 5-9 from 10 labels per class")
    ax.tick_params(axis="x", labelsize=8)
    return [save(fig, out / "transfer.png")]


# -------------------------------------------------------------------------------------------- lr_diagnosis


def factor_of(run, suggested: float) -> float:
    """The run's lr as a power of ten times the suggestion (the sweep's values are rounded to 4 digits)."""
    return 10.0 ** round(math.log10(float(run.choices["optimizer.lr"]) / suggested))


def diagnosis_runs(runs) -> tuple[float, dict]:
    """(the suggested lr, {(factor, scheduler): final val loss or inf when diverged})."""
    found = need(pick(runs, tune="lr_find"), "the range test")
    suggested = need(found[0].metrics.get("suggested_lr"), "the range test's suggestion")
    out = {}
    for r in runs:
        if "optimizer.lr" in r.choices:
            factor = factor_of(r, suggested)
            loss = r.val_loss[-1][1] if r.val_loss else None
            diverged = r.metrics.get("stop_reason") == "diverged" or loss is None or loss != loss
            out[(factor, r.choices.get("scheduler", "none"))] = float("inf") if diverged else loss
    return suggested, out


def diagnosis_loss(loss: dict, factor: float, scheduler: str = "none") -> float:
    return need(loss.get((factor, scheduler)), f"the run at {factor:g}x the suggestion, scheduler={scheduler},")


def lr_too_low_crawls(runs, low: float, worse: float) -> tuple[str, str]:
    suggested, loss = diagnosis_runs(runs)
    crawl, mid = diagnosis_loss(loss, low), diagnosis_loss(loss, 1.0)
    return (HOLDS if crawl >= worse * mid else FAILS), \
        f"suggested lr {suggested:.3g}; final val loss at {low:g}x: {fmt(crawl)}, at 1x: {fmt(mid)}"


def lr_too_high_fails(runs, high: float, worse: float) -> tuple[str, str]:
    _, loss = diagnosis_runs(runs)
    far, mid = diagnosis_loss(loss, high), diagnosis_loss(loss, 1.0)
    return (HOLDS if far >= worse * mid else FAILS), f"final val loss at {high:g}x: {fmt(far)} (inf: diverged), at 1x: {fmt(mid)}"


def staircase_recovers(runs, high: float, within: float) -> tuple[str, str]:
    _, loss = diagnosis_runs(runs)
    constant, stepped, mid = diagnosis_loss(loss, high), diagnosis_loss(loss, high, "step"), diagnosis_loss(loss, 1.0)
    return (HOLDS if stepped < constant and stepped <= within * mid else FAILS), \
        f"final val loss at {high:g}x: constant {fmt(constant)}, staircase {fmt(stepped)}; at 1x: {fmt(mid)}"


def diagnosis_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    try:
        suggested = diagnosis_runs(runs)[0]
    except Inconclusive:
        suggested = None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, scheduler in zip(axes, ("none", "step")):
        for r in sorted((r for r in runs if r.choices.get("scheduler", "none") == scheduler and "optimizer.lr" in r.choices),
                        key=lambda r: float(r.choices["optimizer.lr"])):
            if r.val_loss and suggested:
                ax.plot(*zip(*r.val_loss), marker=".", label=f"{factor_of(r, suggested):g}x suggested")
        ax.set(yscale="log", xlabel="epoch", title="constant lr" if scheduler == "none" else "staircase (step) schedule")
    axes[0].set_ylabel("validation loss (log)")
    axes[0].legend(fontsize=8)
    return [save(fig, out / "lr_diagnosis.png")]


# -------------------------------------------------------------------------------------------- normalization


def norm_runs(runs, lr: float) -> dict:
    """{"none" | "batch before" | "batch after": run} at learning rate `lr` (none's two positions are one setting)."""
    out = {}
    for r in runs:
        if r.stage == "batchnorm" and same(r.choices.get("optimizer.lr"), lr):
            key = "none" if r.choices.get("norm") == "none" else f"batch {r.choices.get('norm.position')}"
            out.setdefault(key, r)
    return out


def first_seed(runs) -> list:
    """The runs of the first seed of a study swept over trainer.seed (its figure shows one seed)."""
    first = min((r.choices.get("trainer.seed", "") for r in runs), key=str, default="")
    return [r for r in runs if r.choices.get("trainer.seed", "") == first]


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


def input_normalization_faster(runs, epoch: int) -> tuple[str, str]:
    inputs = {r.choices.get("data.normalize"): val_loss_at(r, epoch) for r in runs if r.stage == "inputs"}
    for kind in ("none", "standardize", "pca", "whiten"):
        need(inputs.get(kind), f"the inputs stage's {kind} run's val loss at epoch {epoch}")
    holds = all(inputs[k] < inputs["none"] for k in ("standardize", "pca", "whiten"))
    return (HOLDS if holds else FAILS), f"val loss after {epoch} epochs: " + ", ".join(f"{k} {v:.4g}" for k, v in inputs.items())


def val_loss_at(run, epoch: int) -> float | None:
    return next((v for e, v in run.val_loss if e == epoch), None)


NORMS = ("none", "batch before", "batch after")


def batch_norm_faster(runs, lr: float, epoch: int) -> tuple[str, str]:
    at_lr = norm_runs(runs, lr)
    loss = {k: need(val_loss_at(need(at_lr.get(k), f"the {k} run at lr {lr:g}"), epoch),
                    f"the {k} run's val loss at epoch {epoch}") for k in NORMS}
    holds = loss["batch before"] < loss["none"] and loss["batch after"] < loss["none"]
    return (HOLDS if holds else FAILS), f"val loss after {epoch} epochs: " + ", ".join(f"{k} {fmt(v)}" for k, v in loss.items())


def batch_norm_tolerates_large_lr(runs, lr: float, accuracy: float) -> tuple[str, str]:
    at_lr = norm_runs(runs, lr)
    acc = {k: need(at_lr.get(k), f"the {k} run at lr {lr:g}").metrics.get("test/acc") or 0.0 for k in NORMS}
    holds = acc["batch before"] >= accuracy and acc["batch after"] >= accuracy and acc["none"] < accuracy
    return (HOLDS if holds else FAILS), "test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())


def normalization_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    runs = first_seed(runs)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    rates = sorted({float(r.choices["optimizer.lr"]) for r in runs if r.stage == "batchnorm"})  # the sweep's own
    for ax, lr in zip(axes, rates):
        for key, r in norm_runs(runs, lr).items():
            if r.val_loss:
                ax.plot(*zip(*r.val_loss), marker=".", label=key)
        ax.set(yscale="log", xlabel="epoch", title=f"batch norm: SGD, lr {lr:g}, 10-layer MLP")
        ax.legend(fontsize=8)
    for r in (r for r in runs if r.stage == "inputs"):
        if r.val_loss:
            axes[2].plot(*zip(*r.val_loss), marker=".", label=f"data.normalize={r.choices.get('data.normalize')}")
    axes[2].set(yscale="log", xlabel="epoch", title="input normalization: 2-layer MLP, lr 0.01")
    axes[2].legend(fontsize=8)
    axes[0].set_ylabel("validation loss (log)")
    return [save(fig, out / "normalization.png")]


# -------------------------------------------------------------------------------------------- regularization


def final_gap(run) -> float | None:
    train, val = run.curves.get("acc/train"), run.curves.get("acc/val")
    return train[-1][2] - val[-1][2] if train and val else None


def regularizers_shrink_the_gap(runs, errors: float) -> tuple[str, str]:
    gaps = {}  # regularization -> {seed: its gap}
    for r in runs:
        gaps.setdefault(r.choices.get("regularization"), {})[r.choices.get("trainer.seed")] = final_gap(r)
    seeds = sorted(gaps.get("none", {}), key=str)
    need(seeds[1:], "a second seed (the rule pairs seeds)")
    for k in ("none", "l2", "l1", "dropout"):
        for seed in seeds:
            need(gaps.get(k, {}).get(seed), f"the {k} run of seed {seed}")
    shown, holds = [], True
    for k in ("l2", "l1", "dropout"):
        change = [gaps[k][s] - gaps["none"][s] for s in seeds]  # paired: the same seed draws the same subset
        mean, error = statistics.fmean(change), statistics.stdev(change) / math.sqrt(len(change))
        holds &= mean + errors * error < 0
        shown.append(f"{k} {mean:+.4f} ± {error:.4f}")
    return (HOLDS if holds else FAILS), f"change of the train - val accuracy gap against none, mean over {len(seeds)} " \
        "seeds ± standard error: " + ", ".join(shown) + f" (none's gap {statistics.fmean(gaps['none'].values()):.3f})"


def regularization_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    runs = first_seed(runs)  # a panel per regularization
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.4), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], runs):
        for tag, style in (("loss/train", "-"), ("loss/val", "--")):
            points = r.curves.get(tag, [])
            if points:
                ax.plot([p[0] for p in points], [p[2] for p in points], style, label=tag.split("/")[1])
        if r.val_loss:
            stop = min(r.val_loss, key=lambda p: p[1])[0]
            ax.axvline(stop, color="gray", linestyle=":", label=f"early stop (epoch {stop})")
        ax.set(yscale="log", xlabel="epoch", title=r.choices.get("regularization"))
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss (log)")
    return [save(fig, out / "regularization.png")]


# -------------------------------------------------------------------------------------------- gd_vs_sgd


def stage_run(runs, stage: str, scheduler: str):
    return next((r for r in runs if r.stage == stage and r.choices.get("scheduler") == scheduler), None)


TASKS = {"": "least squares", "digits-": "logistic regression (digits)"}  # stage-name prefix -> task


def train_curve(runs, stage: str, scheduler: str) -> list:
    run = need(stage_run(runs, stage, scheduler), f"the {stage} run with scheduler={scheduler}")
    return need(run.curves.get("loss/train"), f"the {stage} run's train loss")


def sgd_stalls(runs, task: str, fall_below: float, above: float) -> tuple[str, str]:
    losses = [p[2] for p in train_curve(runs, f"{task}sgd", "none")]
    half = losses[len(losses) // 2 - 1]
    fall = (half - losses[-1]) / half
    gd_final = train_curve(runs, f"{task}gd", "none")[-1][2]
    holds = fall < fall_below and losses[-1] > above * gd_final
    return (HOLDS if holds else FAILS), (f"batch 1, constant step: train loss {half:.4g} at mid-run, {losses[-1]:.4g} at "
                                         f"the end ({100 * fall:.1f}% lower); full-batch GD ends at {gd_final:.4g}")


def inverse_time_descends(runs, task: str) -> tuple[str, str]:
    a, b = train_curve(runs, f"{task}sgd", "none")[-1][2], train_curve(runs, f"{task}sgd", "inverse_time")[-1][2]
    return (HOLDS if b < a else FAILS), f"batch 1, final train loss: constant {a:.4g}, 1/t schedule {b:.4g}"


def gd_vs_sgd_figures(runs, out: Path) -> list[Path]:
    figures = []
    for task, title in TASKS.items():
        own = [dataclasses.replace(r, choices={**r.choices, "method": f"{r.stage.removeprefix(task)}, "
                                                                       f"{r.choices.get('scheduler')}"})
               for r in runs if r.stage in {task + method for method in ("gd", "sgd", "minibatch")}]
        figures.append(plot_curves(own, out, f"gd_vs_sgd_{title.split()[0]}", "loss/train", "method",
                                   f"{title}: training loss", "train loss (log)"))
    return figures


# -------------------------------------------------------------------------------------------- search


def finite(value) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf


def search_bests(runs) -> dict:
    """{seed: {"grid" | "random": the search's best run by val loss (a diverged run counts as inf)}}."""
    out = {}
    for r in runs:
        if r.stage in ("grid", "random"):
            best = out.setdefault(r.choices.get("trainer.seed"), {}).get(r.stage)
            if best is None or finite(r.metrics.get("val/loss")) < finite(best.metrics.get("val/loss")):
                out[r.choices.get("trainer.seed")][r.stage] = r
    return {seed: bests for seed, bests in out.items() if len(bests) == 2}


def random_beats_grid(runs) -> tuple[str, str]:
    bests = need(search_bests(runs), "a seed with both searches")
    loss = lambda r: finite(r.metrics.get("val/loss"))  # noqa: E731
    wins = sum(loss(b["random"]) < loss(b["grid"]) for b in bests.values())
    shown = "; ".join(f"seed {s}: random {fmt(loss(b['random']))} (lr {b['random'].choices['optimizer.lr']}), "
                      f"grid {fmt(loss(b['grid']))} (lr {b['grid'].choices['optimizer.lr']})"
                      for s, b in sorted(bests.items()))
    return (HOLDS if wins > len(bests) / 2 else FAILS), f"random better in {wins} of {len(bests)} seeds; best val loss: {shown}"


def spreads(runs, seed, fixed: str, varied: str) -> list[float]:
    """Over the grid runs of `seed`: for each value of `fixed`, the range of val accuracy as `varied` changes."""
    groups = {}
    for r in runs:
        if r.stage == "grid" and r.choices.get("trainer.seed") == seed:
            groups.setdefault(r.choices.get(fixed), []).append(r.metrics.get("val/acc") or 0.0)
    return [max(v) - min(v) for v in groups.values() if len(v) > 1]


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


STUDIES = {
    "activations": Study(
        summary="sign passes no gradient to the hidden layers; sigmoid's vanish toward the input, ReLU's do not; abs is acceptable",
        claim="In a deep MLP the sign activation passes no gradient to its hidden layers (only the head learns), "
              "sigmoid's gradients vanish toward the input while ReLU's do not, and abs is an acceptable activation.",
        source="Ju Sun, Training DNNs: Basic Methods and Tricks (../shared/seeds/002)",
        claims=(
            Claim("sign: the hidden layers receive exactly zero gradient", "every hidden weight's gradient norm is "
                  "exactly 0 at init and after every epoch, the head's is not", sign_hidden_gradients),
            Claim("sigmoid's gradient vanishes toward the input, ReLU's does not", "at init, first/last hidden "
                  "gradient norm < {vanished} under sigmoid and > {kept} under ReLU", sigmoid_vanishes,
                  {"vanished": 0.01, "kept": 0.1}),
            Claim("abs is acceptable", "abs's test accuracy within {within} of ReLU's", abs_is_acceptable,
                  {"within": 0.05}),
        ),
        figures=activation_figures),
    "init_depth": Study(
        summary="zeros keeps units identical; N(0,1) explodes; Xavier shrinks with depth, Kaiming keeps the scale and trains the deepest",
        claim="In deep ReLU MLPs, zero initialization keeps hidden units identical, naive N(0,1) explodes, Xavier's "
              "activations shrink with depth while Kaiming's stay about constant, and Kaiming trains the deepest net "
              "(He et al. 2015).",
        source="Gilles Louppe, Deep Learning, lecture 4: Training neural networks (../shared/seeds/004)",
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
        figures=init_depth_figures),
    "selu": Study(
        summary="SELU + LeCun normal keeps zero mean, unit variance through 32 layers; other inits drift",
        claim="SELU with LeCun-normal initialization keeps activations near zero mean and unit variance through 32 "
              "layers without normalization; with other initializations they drift (Klambauer et al. 2017).",
        source="Gilles Louppe, Deep Learning, lecture 4 (../shared/seeds/004)",
        claims=(
            Claim("SELU + LeCun normal self-normalizes", "at init, every hidden layer's |mean| <= {mean} and std in "
                  "[{std[0]}, {std[1]}]", selu_self_normalizes, {"mean": 0.2, "std": SELU_UNIT_STD}),
            Claim("other initializations drift", "at init, every other init's last hidden std is outside "
                  "[{std[0]}, {std[1]}]", other_inits_drift, {"std": SELU_UNIT_STD}),
        ),
        figures=selu_figures),
    "optimizers": Study(
        summary="momentum and Nesterov beat plain SGD; every optimizer on steps and on wall time",
        claim="On the same problem, momentum and Nesterov momentum bring the training loss down faster than "
              "plain SGD; adaptive methods and L-BFGS compared on steps and on wall time.",
        source="Ju Sun, Training DNNs: Basic Methods and Tricks (../shared/seeds/002)",
        claims=(
            Claim("momentum and Nesterov beat plain SGD", "each option at its shipped learning rate: momentum's and "
                  "Nesterov's train loss after the last epoch below SGD's", momentum_beats_sgd),
        ),
        figures=lambda runs, out: [plot_curves(runs, out, "optimizers", "loss/train", "optimizer",
                                               "training loss per optimizer", "train loss (log)")]),
    "mc_dropout": Study(
        summary="MC-dropout predictions are more uncertain on the test samples the model gets wrong",
        claim="Monte-Carlo dropout's predictions are more uncertain (higher predictive entropy) on the test samples "
              "the model gets wrong than on those it gets right.",
        source="Ju Sun, Training DNNs: Basic Methods and Tricks (../shared/seeds/002)",
        claims=(
            Claim("wrong predictions carry more entropy", "in every seed, the mean entropy of the MC-dropout "
                  "prediction over wrong test samples exceeds that over right ones", per_seed(wrong_more_uncertain)),
        ),
        figures=mc_dropout_figures),
    "transfer": Study(
        summary="features from digits 0-4 help learn 5-9 from 10 labels per class (frozen or fine-tuned)",
        claim="Features learned on digits 0-4 help learn 5-9 from 10 labels per class: a frozen pretrained backbone "
              "with a new head, and the backbone fine-tuned, both beat training from scratch.",
        source="Yingfan, Machine Learning: Training DNN (../shared/seeds/001)",
        claims=(
            Claim("pretrained beats scratch with few labels", "test accuracy on 5-9 of the fine-tuned and of the "
                  "frozen-backbone runs both above the from-scratch run's", pretrained_beats_scratch),
        ),
        figures=transfer_figures),
    "lr_diagnosis": Study(
        summary="a range test, then decades around it: too low crawls, too high diverges, a staircase recovers",
        claim="Around the learning rate a range test suggests: too low crawls, too high stalls or diverges, and a "
              "staircase schedule recovers a rate that is too high.",
        source="Ju Sun, Training DNNs: Basic Methods and Tricks (../shared/seeds/002)",
        claims=(
            Claim("too low crawls", "constant lr at {low:g}x the suggestion: final val loss >= {worse:g}x the "
                  "suggestion's", lr_too_low_crawls, {"low": 0.001, "worse": 2}),
            Claim("too high stalls or diverges", "constant lr at {high:g}x: final val loss >= {worse:g}x the "
                  "suggestion's, or diverged", lr_too_high_fails, {"high": 100, "worse": 2}),
            Claim("the staircase recovers", "at {high:g}x, scheduler=step (lr / 10 at epoch 10) ends below the "
                  "constant lr's val loss and within {within:g}x of the suggestion's", staircase_recovers,
                  {"high": 10, "within": 2}),
        ),
        figures=diagnosis_figures),
    "normalization": Study(
        summary="batch norm (before or after the activation) trains a deep MLP faster and tolerates a larger lr",
        claim="Batch normalization, before or after the activation, makes a deep MLP train faster and tolerate a "
              "larger learning rate (Ioffe and Szegedy 2015); normalized inputs train faster than raw ones.",
        source="Gilles Louppe, Deep Learning, lecture 4 (../shared/seeds/004)",
        claims=(
            Claim("batch norm converges faster", "at lr {lr:g}, both batch-norm runs' val loss after {epoch} epochs "
                  "below no normalization's, in every seed", per_seed(batch_norm_faster), {"lr": 0.01, "epoch": 3}),
            Claim("batch norm tolerates a larger lr", "at lr {lr:g}, both batch-norm runs reach test accuracy >= "
                  "{accuracy}, the run without normalization does not, in every seed",
                  per_seed(batch_norm_tolerates_large_lr), {"lr": 1.0, "accuracy": 0.85}),
            Claim("normalized inputs train faster", "a 2-layer MLP at lr 0.01, no batch norm: the val loss after "
                  "{epoch} epochs with standardized, PCA'd and whitened inputs each below raw inputs', in every seed",
                  per_seed(input_normalization_faster), {"epoch": 3}),
        ),
        figures=normalization_figures),
    "regularization": Study(
        summary="L2, L1 and dropout shrink the train-validation gap on a small training set",
        claim="On a small training set, L2, L1 and dropout shrink the gap between training and validation "
              "accuracy; early stopping stops where the validation loss is lowest.",
        source="Ju Sun, Training DNNs: Basic Methods and Tricks (../shared/seeds/002)",
        claims=(
            Claim("regularizers shrink the train-validation gap", "train minus val accuracy after the last epoch, "
                  "paired by seed: for each of l2, l1 and dropout, the mean change against none is below 0 by more "
                  "than {errors:g} standard errors", regularizers_shrink_the_gap, {"errors": 2}),
        ),
        figures=regularization_figures),
    "gd_vs_sgd": Study(
        summary="least squares and logistic regression: constant-step SGD stalls at a noise floor, a 1/t schedule descends",
        claim="On least squares and on logistic regression, SGD with a constant step stalls at a noise floor above "
              "full-batch gradient descent, while a 1/t step schedule keeps it descending.",
        source="Ju Sun, Training DNNs: Basic Methods and Tricks (../shared/seeds/002)",
        claims=tuple(claim for task, title in TASKS.items() for claim in (
            Claim(f"{title}: constant-step SGD stalls", "batch 1 with a constant step: train loss falls < "
                  "{fall_below:.0%} over the second half of the epochs and ends above {above:g}x full-batch GD's",
                  sgd_stalls, {"task": task, "fall_below": 0.1, "above": 2}),
            Claim(f"{title}: a 1/t schedule keeps descending", "batch 1: the inverse_time schedule ends below "
                  "the constant step", inverse_time_descends, {"task": task}),
        )),
        figures=gd_vs_sgd_figures),
    "search": Study(
        summary="with 9 runs over two knobs of which one matters, random search beats a 3x3 grid more often",
        claim="With the same budget of 9 runs over two hyperparameters of which only one matters, random search "
              "finds a better configuration than grid search more often, because it tries 9 values of the one "
              "that matters where the grid tries 3 (Bergstra and Bengio 2012).",
        source="Ju Sun, Training DNNs: Basic Methods and Tricks, hyperparameter search (../shared/seeds/002)",
        claims=(
            Claim("only the learning rate matters", "in the grid, per seed: the largest range of val accuracy over "
                  "weight decay at a fixed lr is below {ratio:g} times the smallest range over lr at a fixed weight "
                  "decay", only_lr_matters, {"ratio": 0.1}),
            Claim("random search finds the better configuration more often", "per seed, the best val loss of "
                  "the 9 random runs below the 3x3 grid's, in more than half of the seeds", random_beats_grid),
        ),
        figures=search_figures),
}

