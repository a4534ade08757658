"""The transfer study (`trainrun -m study=transfer`): a network trained on digits 0-4 helps learn 5-9 from 3 labels
per class (frozen or fine-tuned).

Its rules over the measured numbers, its figures, and its record (`STUDY`: the sweep, the protocol, the claims)."""
from __future__ import annotations

import statistics
from pathlib import Path

from .framework import FAILS, HOLDS, Claim, Protocol, Stage, Study, Sweep, need, paired, same, seed_of
from .helpers import pyplot, save, DIGITS_OR_MNIST


APPROACHES = {("best.pt", "false"): "fine-tuned", ("best.pt", "true"): "frozen backbone",
              ("null", "false"): "from scratch", ("null", "true"): "frozen random features"}

def approach(run) -> str:
    weights = "null" if run.choices.get("model.weights") in (None, "null") else "best.pt"
    return APPROACHES[(weights, "true" if same(run.choices.get("model.head_only"), True) else "false")]

def transfer_runs(runs) -> dict:
    """The learning stage's test accuracy: {approach: {seed: accuracy}}."""
    out = {}
    for r in runs:
        if r.stage == "learn" and r.metrics.get("test/acc") is not None:
            out.setdefault(approach(r), {})[seed_of(r)] = r.metrics["test/acc"]
    return out

def transfer_beats_scratch(runs, approach: str, errors: float) -> tuple[str, str]:
    acc = transfer_runs(runs)
    ours = need(acc.get(approach), f"the learning stage's {approach} runs")
    scratch = need(acc.get("from scratch"), "the learning stage's from-scratch runs")
    mean, error, n = paired(ours, scratch, f"both {approach} and from-scratch runs")
    return (HOLDS if mean - errors * error > 0 else FAILS), \
        (f"test accuracy, {approach} minus from scratch, paired over {n} seeds: {mean:+.3f} ± {error:.3f} "
         f"({approach} {statistics.fmean(ours.values()):.3f}, from scratch {statistics.fmean(scratch.values()):.3f})")

def source_task_learned(runs, accuracy: float) -> tuple[str, str]:
    pretrain = need([r for r in runs if r.stage == "pretrain"], "the pretraining run")[0]
    acc = need(pretrain.metrics.get("test/acc"), "the pretraining run's test accuracy")
    return (HOLDS if acc >= accuracy else FAILS), f"pretraining test accuracy {acc:.3f}"

def too_few_labels(runs, margin: float) -> tuple[str, str]:
    reference = need([r for r in runs if r.stage == "reference"], "the all-labels reference run")[0]
    everything = need(reference.metrics.get("test/acc"), "the reference's test accuracy")
    few = statistics.fmean(need(transfer_runs(runs).get("from scratch"), "the from-scratch runs").values())
    return (HOLDS if few <= everything - margin else FAILS), \
        f"from scratch: {few:.3f} from the few labels (mean over seeds), {everything:.3f} from all"

def statistics_of(run) -> dict:
    """The fitted statistics of a run's preprocessing.json, without the record of where they came from."""
    return {k: v for k, v in run.preprocessing.get("normalize", {}).items() if k not in ("source", "input_shape")}

def pretrained_statistics_used(runs) -> tuple[str, str]:
    pretrain = need([r for r in runs if r.stage == "pretrain"], "the pretraining run")[0]
    expected = need(statistics_of(pretrain), "the pretraining run's preprocessing.json")
    reused = need([r for r in runs if r.stage == "learn" and approach(r) in ("fine-tuned", "frozen backbone")],
                  "a run that reuses the pretrained network")
    own = [r.name for r in reused if statistics_of(r) != expected]
    return (HOLDS if not own else FAILS), (f"{len(reused) - len(own)} of {len(reused)} reusing runs normalize with "
                                           f"the pretraining run's statistics ({expected.get('kind')})"
                                           + (f"; not: {', '.join(own[:3])}" if own else ""))

def transfer_figures(runs, out: Path) -> list[Path]:
    plt = pyplot()
    acc = transfer_runs(runs)
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [a for a in APPROACHES.values() if a in acc]
    ax.boxplot([list(acc[a].values()) for a in names])
    ax.set_xticks(range(1, len(names) + 1), names)
    reference = [r.metrics.get("test/acc") for r in runs if r.stage == "reference"]
    if reference and reference[0] is not None:
        ax.axhline(reference[0], color="gray", linestyle=":", label="from scratch, all labels")
        ax.legend(fontsize=8)
    ax.set(ylabel="test accuracy (classes 5-9)", ylim=(0, 1), title="learning 5-9 from 3 labels per class, per seed")
    ax.tick_params(axis="x", labelsize=8)
    return [save(fig, out / "transfer.png")]


STUDY = Study(
    summary="a network trained on digits 0-4 helps learn 5-9 from 3 labels per class (frozen or fine-tuned)",
    claim="Layers learned on a related task (digits 0-4) help learn a new one (5-9) from too few labels to learn "
          "it from scratch (3 per class): reused frozen under a new head, or fine-tuned, they beat the same "
          "network trained from scratch on the same labels.",
    sweep=Sweep(
        epochs={"small": 30, "full": 30},
        stages=(
            Stage("pretrain", {**DIGITS_OR_MNIST, "data.classes": "[0,1,2,3,4]"}),  # the source task, all its labels
            # the reference: the target task from scratch with all its labels
            Stage("reference", {**DIGITS_OR_MNIST, "data.classes": "[5,6,7,8,9]"}),
            # the target task from 3 labels per class, each seed its own 15
            Stage("learn", {**DIGITS_OR_MNIST, "data.classes": "[5,6,7,8,9]", "data.per_class": "3",
                            "model.weights": "{pretrain.dir}/best.pt,null", "model.head_only": "true,false",
                            # the note: replace the output layer (0-4's head is no start for 5-9)
                            "model.new_head": "true",
                            # the note: lower the lr of reused layers when unfreezing them
                            "optimizer.backbone_lr_scale": "0.1",
                            "trainer.seed": {"small": "0,1,2,3,4,5,6,7", "full": "0,1,2,3,4,5,6,7,8,9,10,11"}}),
        )),
    protocol=Protocol(
        note="Yingfan, Machine Learning: Training DNN, transfer learning and 'not enough labeled data' "
             "(../shared/seeds/001): reuse the lower layers, replace the output layer, freeze first, lower the "
             "learning rate when unfreezing",
        paper="Yosinski et al. 2014 (How transferable are features in deep neural networks?): features of a "
              "related source task, frozen or fine-tuned, help a target task with little data",
        measurement="test accuracy on the target classes of each approach, paired with from-scratch by seed "
                    "(the seed draws the same 15 labels for every approach); every stage normalizes inputs with "
                    "the pretraining run's statistics, as its weights expect",
        data="small: 8x8 digits, full: MNIST's 10,000 test images split 7,200/800/2,000 "
             "(data.root=<the folder of t10k-*-idx*-ubyte.gz>); source task 0-4 with all labels, target 5-9 "
             "from 3 per class, with a from-scratch reference on all of 5-9's labels",
        seeds="8 at small, 12 at full: with 15 labels a seed's accuracy varies by several points, and the "
              "claim needs a paired difference beyond 2 standard errors",
        conditions=(
            Claim("the source task is learned", "the pretraining run's test accuracy >= {accuracy}",
                  source_task_learned, {"accuracy": 0.9}),
            Claim("too few labels to learn the target from scratch", "from scratch, the few labels' test "
                  "accuracy (mean over seeds) is at least {margin} below all labels'", too_few_labels,
                  {"margin": 0.05}),
            Claim("the pretrained network's input statistics", "every run that reuses the pretrained network "
                  "normalizes with the pretraining run's statistics", pretrained_statistics_used),
        ),
        fixes=("the statistics condition compared the records' `input_shape` and `source` as well as the "
               "statistics, so it read 0 of 16 runs although all 16 used the pretraining run's",
               "the new task's output layer was the source task's (kept because both have 5 classes): the "
               "learning stage now asks for a new one (`model.new_head=true`), as the note's 'replace the "
               "output layer' does",
               "trainrun trained the new head of `model.head_only=true` at the reused layers' lr "
               "(`backbone_lr_scale`, a tenth): a new head now learns at the full lr")),
    claims=(
        Claim("fine-tuned beats from scratch", "test accuracy of fine-tuned minus from-scratch, paired by seed: "
              "mean above 0 by more than {errors:g} standard errors", transfer_beats_scratch,
              {"approach": "fine-tuned", "errors": 2}),
        Claim("a frozen pretrained backbone beats from scratch", "test accuracy of frozen backbone minus "
              "from-scratch, paired by seed: mean above 0 by more than {errors:g} standard errors",
              transfer_beats_scratch, {"approach": "frozen backbone", "errors": 2}),
    ),
    figures=transfer_figures)
