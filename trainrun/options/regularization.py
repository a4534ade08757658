"""Regularization that is not a layer or a loss option: weight penalties, gradient clipping, max-norm.

Dropout lives in model.Layers, label smoothing in loss.py, weight decay also in the optimizer's own knob.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import RegularizationConfig
from .init import LAYERS_WITH_WEIGHTS


class Regularizer:
    def __init__(self, cfg: RegularizationConfig, model: nn.Module):
        self.cfg = cfg
        # penalties and max-norm act on weight matrices and kernels, not on biases or norm scales
        # (layers, not tensors: under weight normalization `layer.weight` is recomputed on every access)
        self.layers = [m for m in model.modules() if isinstance(m, LAYERS_WITH_WEIGHTS) and m.weight.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]

    def add_penalty(self, loss: torch.Tensor) -> torch.Tensor:
        """loss + 0.5 * weight_decay * sum ||W||^2 + l1 * sum |W| (the loss itself, no op, when neither is set)."""
        if self.cfg.weight_decay:
            loss = loss + 0.5 * self.cfg.weight_decay * sum(m.weight.pow(2).sum() for m in self.layers)
        if self.cfg.l1:
            loss = loss + self.cfg.l1 * sum(m.weight.abs().sum() for m in self.layers)
        return loss

    def clip_gradients(self) -> None:
        if self.cfg.grad_clip_value is not None:
            nn.utils.clip_grad_value_(self.params, self.cfg.grad_clip_value)
        if self.cfg.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip_norm)

    @torch.no_grad()
    def constrain(self) -> None:
        """Max-norm: rescale each neuron's incoming weights to norm <= max_norm (after the step)."""
        if self.cfg.max_norm is not None:
            for m in self.layers:
                m.weight.copy_(torch.renorm(m.weight, 2, 0, self.cfg.max_norm))
