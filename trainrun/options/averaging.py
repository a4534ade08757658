"""Weight averaging (averaging=ema|swa): a copy of the model whose weights average the model's over training.

EMA follows timm's ModelEmaV3: after every optimizer step each floating-point tensor of the state (parameters and
buffers, so batch-norm statistics too) moves toward the model's by 1 - decay. The first update copies the model;
with warm-up the decay then grows as 1 - (1 + step / warmup_gamma)^-warmup_power up to `decay`, so the early
steps, far from where training ends, soon weigh little.

SWA follows torch.optim.swa_utils (Izmailov et al. 2018): from `start_epoch` on, the weights at each epoch's end
are averaged with equal weights, the learning rate goes to SWA's own (SWALR, annealed over `anneal_epochs`), and
the batch-norm statistics, which an average of weights does not give, are recomputed on the training data
(update_bn).
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch


class WeightAverage:
    """The averaged copy (`module`, always in eval mode) and how many models it averages (`count`)."""

    def __init__(self, model: torch.nn.Module):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.count = 0

    def after_step(self, model: torch.nn.Module, step: int) -> None:
        """Called after each optimizer step (`step` counts them from 1)."""

    def after_epoch(self, model: torch.nn.Module, epoch: int, train_inputs: Callable[[], Iterable]) -> bool:
        """Called at each epoch's end, before evaluation; True when it stepped the learning rate itself."""
        return False

    def sets_lr(self, epoch: int) -> bool:
        """Whether the averaging sets the learning rate during `epoch` (the run's schedule then stands still)."""
        return False

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.count = state["count"]


class EMA(WeightAverage):
    def __init__(self, model, *, decay: float, warmup: bool, warmup_power: float, warmup_gamma: float):
        super().__init__(model)
        self.decay, self.warmup, self.warmup_power, self.warmup_gamma = decay, warmup, warmup_power, warmup_gamma

    def decay_at(self, step: int) -> float:
        """timm's ModelEmaV3.get_decay: 0 at the first update (a copy), then `decay`, or its warm-up."""
        step = step - 1
        if step <= 0:
            return 0.0
        if not self.warmup:
            return self.decay
        return min(1 - (1 + step / self.warmup_gamma) ** -self.warmup_power, self.decay)

    @torch.no_grad()
    def after_step(self, model, step):
        averaged, current = [], []
        for mine, theirs in zip(self.module.state_dict().values(), model.state_dict().values()):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs)
            else:  # counters (batch norm's num_batches_tracked)
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, current, 1 - self.decay_at(step))
        self.count += 1


class SWA(WeightAverage):
    def __init__(self, model, optimizer, *, start_epoch: int, lr: float | None, anneal_epochs: int,
                 anneal_strategy: str):
        super().__init__(model)
        self.start_epoch = start_epoch
        # each parameter group's own starting lr (model.weights' backbone scale), or SWA's lr scaled alike
        initial = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
        swa_lrs = initial if lr is None else [lr * i / max(initial) for i in initial]
        self.scheduler = torch.optim.swa_utils.SWALR(optimizer, swa_lrs, anneal_epochs=anneal_epochs,
                                                     anneal_strategy=anneal_strategy)

    def sets_lr(self, epoch):
        return epoch > self.start_epoch

    @torch.no_grad()
    def after_epoch(self, model, epoch, train_inputs):
        if epoch < self.start_epoch:
            return False
        averaged, current = zip(*zip(self.module.parameters(), model.parameters()))
        torch._foreach_lerp_(list(averaged), list(current), 1 / (self.count + 1))  # the running mean
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            mine.copy_(theirs)
        self.count += 1
        with torch.enable_grad():  # update_bn runs forward passes only; grad mode is as training's
            torch.optim.swa_utils.update_bn(train_inputs(), self.module)
        self.module.eval()
        self.scheduler.step()
        return True

    def state_dict(self):
        return {**super().state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.scheduler.load_state_dict(state["scheduler"])


def none(model, optimizer) -> None:
    return None


def ema(model, optimizer, *, decay: float, warmup: bool, warmup_power: float, warmup_gamma: float) -> EMA:
    return EMA(model, decay=decay, warmup=warmup, warmup_power=warmup_power, warmup_gamma=warmup_gamma)


def swa(model, optimizer, *, start_epoch: int, lr: float | None = None, anneal_epochs: int,
        anneal_strategy: str) -> SWA:
    return SWA(model, optimizer, start_epoch=start_epoch, lr=lr, anneal_epochs=anneal_epochs,
               anneal_strategy=anneal_strategy)
