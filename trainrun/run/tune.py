"""tune=lr_find: the learning-rate range test (Smith 2017, "Cyclical learning rates"; Lightning's lr_find).

One short run of the composed model, data and optimizer: the learning rate of every parameter group is set
to min_lr * (max_lr / min_lr) ** (i / (steps - 1)) before step i, the loss is averaged exponentially (and
debiased), and the test stops when that average exceeds stop_factor times its minimum, or is not finite.
The suggestion is the learning rate where the averaged loss falls fastest against log(lr), on the part of
the curve before its minimum: the steepest descent, where the step is large but still useful. The weights
it leaves are not kept.
"""
from __future__ import annotations

import json
import math
from itertools import count
from pathlib import Path



def lr_find(run, ui, overrides: dict) -> dict:
    """Training the range test on `run` (a trainer.Training, built and checked); returns what lr_find.json holds.
    `overrides` (the command line's) make the printed command that trains with the suggestion."""
    t, parts = run.parts.cfg.tune, run.parts
    factor = (t.max_lr / t.min_lr) ** (1 / (t.steps - 1))
    lrs, losses, average, best = [], [], 0.0, math.inf
    parts.model.train()
    batches = (idx for epoch in count(1) for idx in parts.batches.epoch(epoch))
    for i in range(t.steps):
        lr = t.min_lr * factor ** i
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        loss, _ = run.optimizer_step([run.prepare(next(batches))])
        loss = float(loss)
        average = (1 - t.smoothing) * average + t.smoothing * loss
        smoothed = average / (1 - (1 - t.smoothing) ** (i + 1))
        if not math.isfinite(smoothed):
            break
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > t.stop_factor * best:
            break
    suggestion = suggest(lrs, losses)
    result = {"lr": lrs, "loss": losses, "suggested_lr": suggestion,
              "rule": "the steepest descent of the smoothed loss against log(lr), before its minimum",
              "min_loss_lr": lrs[losses.index(min(losses))] if losses else None}
    (run.run_dir / "lr_find.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    plot(result, run.run_dir / "lr_find.png")
    if suggestion is None:
        ui.note("lr_find: the loss did not fall at any learning rate tried; widen tune.min_lr / tune.max_lr", error=True)
    else:
        kept = [f"{k}={v}" for k, v in overrides.items()
                if k.lstrip("+~").split(".")[0] != "tune" and k != "optimizer.lr" and not k.startswith("hydra")]
        ui.note(f"lr_find: suggested optimizer.lr={suggestion:.3g} ({result['rule']}; the loss was lowest at "
                f"{result['min_loss_lr']:.3g})\n  train with: trainrun {' '.join([*kept, f'optimizer.lr={suggestion:.3g}'])}"
                f"\n  the curve: {run.run_dir / 'lr_find.png'}")
    return result


def suggest(lrs: list[float], losses: list[float]) -> float | None:
    end = losses.index(min(losses)) if losses else 0
    if end < 2:
        return None
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1])) for i in range(1, end)]
    steepest = min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[steepest + 1] if slopes[steepest] < 0 else None


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lr"], result["loss"])
    if result["suggested_lr"]:
        ax.axvline(result["suggested_lr"], color="red", linestyle="--", label=f"suggested {result['suggested_lr']:.2g}")
        ax.legend()
    if result["loss"]:  # the final blow-up would flatten everything before it
        low, start = min(result["loss"]), result["loss"][0]
        ax.set_ylim(low - 0.05 * (start - low + 1e-12), start + 0.5 * (start - low + 1e-12))
    ax.set(xscale="log", xlabel="learning rate (log)", ylabel="training loss (smoothed)",
           title="learning-rate range test")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
