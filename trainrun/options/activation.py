"""Hidden-layer activations: torch modules (knobs are the class's own), built from registry.ACTIVATIONS."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..config import ActivationConfig
from ..registry import ACTIVATIONS


class Abs(nn.Module):
    def forward(self, x):
        return x.abs()


class Sign(nn.Module):
    """sign(x): its derivative is zero almost everywhere, so nothing below it learns."""

    def forward(self, x):
        return torch.sign(x)


def hardtanh(min_val, max_val):
    # nn.Hardtanh only asserts min_val < max_val; check.py says it in words first
    return nn.Hardtanh(min_val, max_val)


def make_activation(cfg: ActivationConfig) -> nn.Module:
    return ACTIVATIONS.create(cfg)


class Nonlinearity(NamedTuple):
    """What torch.nn.init.calculate_gain needs to know about the activation."""

    name: str
    slope: float = 0.0


def nonlinearity(cfg: ActivationConfig) -> Nonlinearity:
    """The activation's gain family (its record's `gain` trait) and, for leaky rectifiers, their slope."""
    traits = ACTIVATIONS[cfg.kind].traits
    slope = traits.slope
    if isinstance(slope, tuple):  # rrelu: the mean of its random slopes
        slope = sum(getattr(cfg, k) for k in slope) / len(slope)
    elif slope is not None:
        slope = getattr(cfg, slope)
    return Nonlinearity(traits.gain, slope or 0.0)
