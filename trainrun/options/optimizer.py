"""Optimizers: built from their records in registry.OPTIMIZERS (torch.optim classes and their own knobs)."""
from __future__ import annotations

import inspect

import torch
from torch import nn

from ..config import OptimizerConfig
from ..registry import OPTIMIZERS


def make_optimizer(cfg: OptimizerConfig, model: nn.Module, reused: set[str]) -> torch.optim.Optimizer:
    """Layers reused from a checkpoint train at lr * backbone_lr_scale; frozen ones are left out."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n not in reused]},
              {"params": [p for n, p in named if n in reused], "lr": cfg.lr * cfg.backbone_lr_scale}]
    groups = [g for g in groups if g["params"]]
    record = OPTIMIZERS[cfg.kind]
    if record.traits.one_param_group:
        groups = [p for _, p in named]
    extra = {}
    if "fused" in inspect.signature(record.builder()).parameters:
        # the fused kernel updates every tensor in one pass: ~0.78x the epoch time of the default on CPU (PERF_NOTES)
        extra["fused"] = True
    return OPTIMIZERS.create(cfg, groups, **extra)
