"""Learning-rate schedulers: registry name -> function(optimizer, plan, knobs), on torch.optim.lr_scheduler.

A schedule counts in intervals (`scheduler.interval`: epoch or step); `plan` says how many intervals
the run has and how many make an epoch, so schedules that span the run (cosine, onecycle) fit it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from omegaconf import DictConfig
from torch.optim import lr_scheduler as sched

from .registry import create


class Plan(NamedTuple):
    total: int  # intervals in the whole run
    per_epoch: int  # intervals per epoch
    monitor_mode: str  # min | max, for plateau


def warmup_cosine(opt, plan, warmup_epochs=1, eta_min=0.0):
    warmup = min(warmup_epochs * plan.per_epoch, plan.total - 1)
    cosine = sched.CosineAnnealingLR(opt, T_max=max(plan.total - warmup, 1), eta_min=eta_min)
    if warmup == 0:
        return cosine
    ramp = sched.LinearLR(opt, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return sched.SequentialLR(opt, [ramp, cosine], milestones=[warmup])


def onecycle(opt, plan, max_lr=None, pct_start=0.3):
    lr = opt.param_groups[0]["lr"]
    momentum = any(k in opt.defaults for k in ("betas", "momentum")) and opt.defaults.get("momentum", 1) != 0
    return sched.OneCycleLR(opt, max_lr=max_lr or 10 * lr, total_steps=plan.total, pct_start=pct_start,
                            cycle_momentum=momentum)


def cyclic(opt, plan, base_lr=None, max_lr=None, step_size_up=200, mode="triangular"):
    lr = opt.param_groups[0]["lr"]
    return sched.CyclicLR(opt, base_lr=base_lr or lr / 10, max_lr=max_lr or lr, step_size_up=step_size_up,
                          mode=mode, cycle_momentum=False)


SCHEDULERS = {
    "none": lambda opt, plan: None,
    "step": lambda opt, plan, step_size=10, gamma=0.1: sched.StepLR(opt, step_size, gamma),
    "multistep": lambda opt, plan, milestones=(10, 15), gamma=0.1: sched.MultiStepLR(opt, list(milestones), gamma),
    "exponential": lambda opt, plan, gamma=0.9: sched.ExponentialLR(opt, gamma),
    "inverse_time": lambda opt, plan, k=0.5: sched.LambdaLR(opt, lambda t: 1.0 / (1.0 + k * t)),
    "cosine": lambda opt, plan, eta_min=0.0: sched.CosineAnnealingLR(opt, T_max=plan.total, eta_min=eta_min),
    "warmup_cosine": warmup_cosine,
    "onecycle": onecycle,
    "cyclic": cyclic,
    "plateau": lambda opt, plan, factor=0.1, patience=2: sched.ReduceLROnPlateau(opt, plan.monitor_mode, factor, patience),
}


def make_scheduler(cfg: DictConfig, optimizer, epochs: int, steps_per_epoch: int, max_steps: int | None,
                   monitor_mode: str):
    per_epoch = steps_per_epoch if cfg.interval == "step" else 1
    total = epochs * per_epoch
    if max_steps is not None:
        total = min(total, max_steps if cfg.interval == "step" else math.ceil(max_steps / steps_per_epoch))
    return create(SCHEDULERS, cfg, "scheduler", optimizer, Plan(total, per_epoch, monitor_mode), skip=("interval",))
