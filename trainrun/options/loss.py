"""Losses: functions(task, num_classes, smoothing, knobs) giving loss(output, target); records in registry.LOSSES.

The model always outputs raw scores; the loss applies the output activation it implies
(softmax for cross_entropy, log-softmax for nll and kl_div, sigmoid for bce, identity for regression).
Classification targets are class indices, or class probabilities after mixup/cutmix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import LossConfig
from ..registry import LOSSES


def probabilities(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    p = y if y.dim() == 2 else F.one_hot(y, num_classes).float()
    return p * (1 - smoothing) + smoothing / num_classes if smoothing else p


def cross_entropy(task, num_classes, smoothing):
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing)


def nll(task, num_classes, smoothing):
    def loss(out, y):
        log_p = F.log_softmax(out, 1)
        if y.dim() == 1 and not smoothing:
            return F.nll_loss(log_p, y)
        return -(probabilities(y, num_classes, smoothing) * log_p).sum(1).mean()
    return loss


def bce(task, num_classes, smoothing):
    return lambda out, y: F.binary_cross_entropy_with_logits(out, probabilities(y, num_classes, smoothing))


def kl_div(task, num_classes, smoothing):
    return lambda out, y: F.kl_div(F.log_softmax(out, 1), probabilities(y, num_classes, smoothing), reduction="batchmean")


def _regression(fn):
    """A distance loss; on classification it compares the scores with the one-hot target."""
    def make(task, num_classes, smoothing, **knobs):
        if task == "regression":
            return lambda out, y: fn(out, y, **knobs)
        return lambda out, y: fn(out, probabilities(y, num_classes, smoothing), **knobs)
    return make


mse = _regression(F.mse_loss)
l1 = _regression(F.l1_loss)


def huber(task, num_classes, smoothing, delta):
    return _regression(F.huber_loss)(task, num_classes, smoothing, delta=delta)


def make_loss(cfg: LossConfig | None, task: str, num_classes: int, smoothing: float):
    from omegaconf import OmegaConf

    if cfg is None:
        cfg = OmegaConf.create({"kind": "cross_entropy" if task == "classification" else "mse"})
    return LOSSES.create(cfg, task, num_classes, smoothing), cfg.kind


def metric(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Summed over the batch: correct predictions (classification) or absolute error (regression)."""
    if task == "classification":
        return (out.argmax(1) == (y if y.dim() == 1 else y.argmax(1))).sum()
    return (out - y).abs().sum()
