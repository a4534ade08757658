"""Learning-rate schedulers on torch.optim.lr_scheduler: functions(optimizer, plan, knobs) in registry.SCHEDULERS.

A schedule counts in intervals (`scheduler.interval`: epoch or step); `plan` says how many intervals
the run has and how many make an epoch, so schedules that span the run (cosine, onecycle) fit it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from torch.optim import lr_scheduler as sched

from ..config import SchedulerConfig
from ..errors import ConfigError
from ..registry import SCHEDULERS


class Plan(NamedTuple):
    total: int  # intervals in the whole run
    per_epoch: int  # intervals per epoch
    monitor_mode: str  # min | max, for plateau


def constant(opt, plan):
    return None


def step(opt, plan, step_size, gamma):
    return sched.StepLR(opt, step_size, gamma)


def multistep(opt, plan, milestones, gamma):
    return sched.MultiStepLR(opt, list(milestones), gamma)


def exponential(opt, plan, gamma):
    return sched.ExponentialLR(opt, gamma)


def inverse_time(opt, plan, k):
    return sched.LambdaLR(opt, lambda t: 1.0 / (1.0 + k * t))


def cosine(opt, plan, eta_min):
    return sched.CosineAnnealingLR(opt, T_max=plan.total, eta_min=eta_min)


def warmup_cosine(opt, plan, warmup_epochs, eta_min):
    warmup = min(warmup_epochs * plan.per_epoch, plan.total - 1)
    cosine = sched.CosineAnnealingLR(opt, T_max=max(plan.total - warmup, 1), eta_min=eta_min)
    if warmup == 0:
        return cosine
    ramp = sched.LinearLR(opt, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return sched.SequentialLR(opt, [ramp, cosine], milestones=[warmup])


def onecycle(opt, plan, pct_start, max_lr=None):
    lr = opt.param_groups[0]["lr"]
    momentum = any(k in opt.defaults for k in ("betas", "momentum")) and opt.defaults.get("momentum", 1) != 0
    return sched.OneCycleLR(opt, max_lr=max_lr or 10 * lr, total_steps=plan.total, pct_start=pct_start,
                            cycle_momentum=momentum)


def cyclic(opt, plan, step_size_up, mode, base_lr=None, max_lr=None):
    lr = opt.param_groups[0]["lr"]
    return sched.CyclicLR(opt, base_lr=base_lr or lr / 10, max_lr=max_lr or lr, step_size_up=step_size_up,
                          mode=mode, cycle_momentum=False)


def plateau(opt, plan, factor, patience):
    return sched.ReduceLROnPlateau(opt, plan.monitor_mode, factor, patience)


def plan_for(cfg: SchedulerConfig, epochs: int, steps_per_epoch: int, max_steps: int | None, monitor_mode: str) -> Plan:
    per_epoch = steps_per_epoch if cfg.interval == "step" else 1
    total = epochs * per_epoch
    if max_steps is not None:
        total = min(total, max_steps if cfg.interval == "step" else math.ceil(max_steps / steps_per_epoch))
    return Plan(total, per_epoch, monitor_mode)


def make_scheduler(cfg: SchedulerConfig, optimizer, plan: Plan):
    return SCHEDULERS.create(cfg, optimizer, plan)


SIMULATED_STEPS = 20_000  # ~0.2 s; past that the closed-form ranges in config.SchedulerConfig stand alone


def check_schedule(cfg: SchedulerConfig, optimizer, plan: Plan) -> None:
    """Step a copy of the schedule over the whole run on a dummy parameter: any lr it would set that is
    negative or not finite, or a step the scheduler refuses, is a ConfigError naming the scheduler."""
    import torch

    from ..registry import building

    if SCHEDULERS.trait(cfg, "steps_on_metric"):
        return  # driven by the metric; scheduler.factor in (0, 1) keeps it positive
    dummy = torch.nn.Parameter(torch.zeros(1))
    groups = [{"params": [dummy], "lr": g["lr"]} for g in optimizer.param_groups[:1]]
    defaults = {k: v for k, v in optimizer.defaults.items() if k in ("momentum", "betas")}
    shadow = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=defaults.get("momentum", 0) or 0) \
        if "betas" not in defaults else torch.optim.Adam(groups, lr=groups[0]["lr"], betas=defaults["betas"])
    knobs = SCHEDULERS.knobs(cfg, cfg.kind)
    with building("scheduler", cfg.kind, knobs):
        schedule = make_scheduler(cfg, shadow, plan)
        if schedule is None:
            return
        for t in range(min(plan.total, SIMULATED_STEPS)):
            lr = shadow.param_groups[0]["lr"]
            if not (math.isfinite(lr) and lr >= 0):
                shown = ", ".join(f"scheduler.{k}={v}" for k, v in knobs.items())
                raise ConfigError(f"scheduler={cfg.kind} would set the learning rate to {lr:.4g} at {cfg.interval} "
                                  f"{t + 1} ({shown}); it must stay finite and >= 0")
            shadow.step()
            schedule.step()
