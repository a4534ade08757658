"""Weight initializers for every Linear and Conv layer: functions(weight, nonlinearity, knobs) in registry.INITS."""
from __future__ import annotations

from torch import nn

from ..config import InitConfig
from .activation import Nonlinearity
from ..registry import INITS

LAYERS_WITH_WEIGHTS = (nn.Linear, nn.modules.conv._ConvNd)


def default(w, act):
    """Keep PyTorch's own reset_parameters()."""


def xavier_uniform(w, act, gain):
    nn.init.xavier_uniform_(w, gain=gain)


def xavier_normal(w, act, gain):
    nn.init.xavier_normal_(w, gain=gain)


def kaiming_uniform(w, act, mode):
    nn.init.kaiming_uniform_(w, act.slope, mode, act.name)


def kaiming_normal(w, act, mode):
    nn.init.kaiming_normal_(w, act.slope, mode, act.name)


def lecun_uniform(w, act):  # LeCun: variance 1/fan_in, i.e. Kaiming with the linear gain
    nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="linear")


def lecun_normal(w, act):
    nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear")


def orthogonal(w, act, gain):
    nn.init.orthogonal_(w, gain=gain)


def normal(w, act, mean, std):
    nn.init.normal_(w, mean, std)


def uniform(w, act, a, b):
    nn.init.uniform_(w, a, b)


def zeros(w, act):
    nn.init.zeros_(w)


def initialize(model: nn.Module, cfg: InitConfig, act: Nonlinearity) -> None:
    """Apply the chosen initializer to every Linear/Conv weight; biases to zero when init.bias=zeros."""
    for layer in model.modules():
        if isinstance(layer, LAYERS_WITH_WEIGHTS):
            INITS.create(cfg, layer.weight, act)
            if cfg.bias == "zeros" and layer.bias is not None:
                nn.init.zeros_(layer.bias)
