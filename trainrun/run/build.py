"""Build every part of a run from its config, and check that they work together before training.

`build` turns the validated config into objects (data, model, optimizer, schedule, loss, augmentation);
`preflight` then runs one forward and backward pass on a batch of two and steps a copy of the learning-
rate schedule over the whole run. Anything torch or a builder raises on the way is a ConfigError that
names the group, the option and its knobs, so a bad value is refused in one line before any training,
and the run it would have made leaves no directory behind. The check changes nothing: random streams
are forked and restored, no optimizer step is taken, batch-norm statistics are put back.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from . import distributed
from ..options.augmentation import make_augmentation
from ..check import check_data, check_model
from ..config import Config, direction
from ..errors import ConfigError
from ..data import Batches, Data, Split, load
from ..options.loss import make_loss
from ..options.model import build_model
from ..options.optimizer import make_optimizer
from ..options.regularization import Regularizer
from ..registry import AVERAGINGS, MODELS, PRECISIONS, building
from ..options.scheduler import Plan, check_schedule, make_scheduler, plan_for
from .stopping import EarlyStopping

log = logging.getLogger("trainrun")


@dataclass
class Parts:
    """What a run is made of; the training loop reads these and changes only their state."""

    cfg: Config
    device: torch.device
    data: Data
    model: torch.nn.Module
    forward: torch.nn.Module  # the model, or its DistributedDataParallel / torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    plan: Plan
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast: Callable
    batches: Batches
    steps_per_epoch: int
    augment: Callable | None
    criterion: Callable
    loss_name: str
    regularizer: Regularizer
    stopper: EarlyStopping
    average: Any = None  # averaging=ema|swa: options/averaging.WeightAverage

    @property
    def metric(self) -> str:
        return self.data.metric


def seed_everything(seed: int, deterministic: bool, compiled: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # both ways: the runs of a sweep share one process, and one run's choice must not leak into the next.
    # torch.use_deterministic_algorithms also sets torch.compile's flag, and imports torch._inductor to do it
    # (2.8 s of every run on this CPU): only where a model is compiled, or was in this process, is that needed
    if compiled or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(deterministic)
    else:
        torch._C._set_deterministic_algorithms(deterministic)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available; use trainer.device=cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps but MPS is not available here; use trainer.device=cpu or auto")
    return torch.device(name)


def build(cfg: Config, world: distributed.World, statistics: dict | None = None) -> Parts:
    """Every part of the run; `statistics`: the input normalization to use instead of fitting one (transfer)."""
    tc = cfg.trainer
    seed_everything(tc.seed, tc.deterministic, tc.compile)
    device = distributed.setup(world, pick_device(tc.device))
    data = load(cfg.data, tc.seed, device, prenormalize=not cfg.augmentation, statistics=statistics)
    batch_size = len(data.train) if cfg.data.batch_size == "full" else cfg.data.batch_size
    check_data(cfg, data, batch_size)
    if tc.overfit_batches:  # the same rows every epoch, in the same batches
        data.train = Split(*data.train.take(slice(0, min(len(data.train), tc.overfit_batches * batch_size))))
    if tc.fast_dev_run:  # one batch of validation and of test
        data.val, data.test = (Split(*s.take(slice(0, min(len(s), cfg.data.eval_batch_size)))) for s in (data.val, data.test))
    model, reused = build_model(cfg, data)
    check_model(cfg, data, model, batch_size)
    model.to(device)
    if tc.channels_last and data.is_image:
        model.to(memory_format=torch.channels_last)
        data.memory_format = torch.channels_last
    augment = None if tc.overfit_batches else make_augmentation(cfg.augmentation, data)
    criterion, loss_name = make_loss(cfg.loss, data.task, data.num_classes, cfg.regularization.label_smoothing)
    optimizer = make_optimizer(cfg.optimizer, model, reused)
    plan = (lambda epoch: data.train.plan([world.shard(idx) for idx in epoch])) if data.train.streams else None
    sampler = "sequential" if tc.overfit_batches else cfg.data.sampler
    batches = Batches(len(data.train), batch_size, sampler, tc.seed, data.train.device, plan)
    steps_per_epoch = math.ceil(len(batches) / tc.grad_accum_steps)
    es = tc.early_stopping
    stopper = EarlyStopping(es.monitor, direction(es.monitor, es.mode), es.patience, es.min_delta, es.enabled) \
        if not tc.overfit_batches else EarlyStopping("train/loss", "min", es.patience, es.min_delta, enabled=False)
    plan = plan_for(cfg.scheduler, tc.epochs, steps_per_epoch, tc.max_steps, stopper.mode)
    scheduler = make_scheduler(cfg.scheduler, optimizer, plan)
    precision = PRECISIONS[tc.precision].traits
    if precision.grad_scaler and device.type == "cpu":
        log.warning(f"trainer.precision={tc.precision} on CPU is slow and rarely helps; bf16 is the CPU choice")
    dtype = getattr(torch, precision.autocast) if precision.autocast else None
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
    forward = model
    if world.size > 1:
        forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        torch.manual_seed(tc.seed + world.rank)  # dropout and augmentation draw differently on each rank
    if tc.compile:
        forward = torch.compile(forward)
    return Parts(cfg=cfg, device=device, data=data, model=model, forward=forward, optimizer=optimizer, plan=plan,
                 scheduler=scheduler, scaler=scaler, autocast=autocast, batches=batches, steps_per_epoch=steps_per_epoch,
                 augment=augment, criterion=criterion, loss_name=loss_name,
                 regularizer=Regularizer(cfg.regularization, model), stopper=stopper,
                 average=AVERAGINGS.create(cfg.averaging, model, optimizer))


def preflight(parts: Parts) -> None:
    """One forward and backward pass on two training samples, and the schedule over the whole run."""
    cfg, data, model = parts.cfg, parts.data, parts.model
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    cuda = [parts.device] if parts.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        x, y = data.fetch(data.train, slice(0, 2))
        if parts.augment is not None:
            with building("augmentation", ",".join(cfg.augmentation)):
                x, y = parts.augment(x, y)
        model.train()
        with building("model", cfg.model.kind, MODELS.knobs(cfg.model, cfg.model.kind)), parts.autocast():
            out = model(data.normalize(x)).float()
        expected = (data.num_outputs,)
        if tuple(out.shape[1:]) != expected:
            # a user's model (or a library's factory) sets its own width: say which parameter does
            hint = (f"; give it the width, e.g. +model.params.num_classes={data.num_outputs} (the name its "
                    "signature uses)") if "params" in MODELS[cfg.model.kind].knobs else ""
            raise ConfigError(f"model={cfg.model.kind}: expected {data.num_outputs} outputs per sample, "
                              f"got shape {tuple(out.shape[1:])}{hint}")
        loss_kind = cfg.loss.kind if cfg.loss is not None else parts.loss_name
        with building("loss", loss_kind):
            loss = parts.regularizer.add_penalty(parts.criterion(out, y))
            loss.backward()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    check_schedule(cfg.scheduler, parts.optimizer, parts.plan)
