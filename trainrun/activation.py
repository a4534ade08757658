"""Hidden-layer activations: registry name -> torch module class (knobs are the class's own)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from omegaconf import DictConfig
from torch import nn

from .registry import create


class Abs(nn.Module):
    def forward(self, x):
        return x.abs()


class Sign(nn.Module):
    """sign(x): its derivative is zero almost everywhere, so nothing below it learns."""

    def forward(self, x):
        return torch.sign(x)


ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "prelu": nn.PReLU, "rrelu": nn.RReLU,
    "elu": nn.ELU, "selu": nn.SELU, "celu": nn.CELU, "gelu": nn.GELU, "silu": nn.SiLU,
    "mish": nn.Mish, "softplus": nn.Softplus, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "hardtanh": nn.Hardtanh, "abs": Abs, "identity": nn.Identity, "sign": Sign,
}


def make_activation(cfg: DictConfig) -> nn.Module:
    return create(ACTIVATIONS, cfg, "activation")


class Nonlinearity(NamedTuple):
    """What torch.nn.init.calculate_gain needs to know about the activation."""

    name: str
    slope: float = 0.0


def nonlinearity(cfg: DictConfig) -> Nonlinearity:
    """The gain family closest to the activation; rectifier-like ones use ReLU's gain."""
    if cfg.kind == "leaky_relu":
        return Nonlinearity("leaky_relu", cfg.negative_slope)
    if cfg.kind == "prelu":
        return Nonlinearity("leaky_relu", cfg.init)
    if cfg.kind == "rrelu":
        return Nonlinearity("leaky_relu", (cfg.lower + cfg.upper) / 2)
    exact = {"relu": "relu", "tanh": "tanh", "hardtanh": "tanh", "sigmoid": "sigmoid", "selu": "selu",
             "identity": "linear", "abs": "linear", "sign": "linear"}
    return Nonlinearity(exact.get(cfg.kind, "relu"))
