"""Weight initializers for every Linear and Conv layer: registry name -> function(weight, nonlinearity, knobs)."""
from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from .activation import Nonlinearity
from .registry import check_knobs, knobs

LAYERS_WITH_WEIGHTS = (nn.Linear, nn.modules.conv._ConvNd)

INITS = {
    "default": lambda w, act: None,  # keep PyTorch's own reset_parameters()
    "xavier_uniform": lambda w, act, gain=1.0: nn.init.xavier_uniform_(w, gain=gain),
    "xavier_normal": lambda w, act, gain=1.0: nn.init.xavier_normal_(w, gain=gain),
    "kaiming_uniform": lambda w, act, mode="fan_in": nn.init.kaiming_uniform_(w, act.slope, mode, act.name),
    "kaiming_normal": lambda w, act, mode="fan_in": nn.init.kaiming_normal_(w, act.slope, mode, act.name),
    # LeCun: variance 1/fan_in, i.e. Kaiming with the linear gain
    "lecun_uniform": lambda w, act: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="linear"),
    "lecun_normal": lambda w, act: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear"),
    "orthogonal": lambda w, act, gain=1.0: nn.init.orthogonal_(w, gain=gain),
    "normal": lambda w, act, mean=0.0, std=0.01: nn.init.normal_(w, mean, std),
    "uniform": lambda w, act, a=-0.05, b=0.05: nn.init.uniform_(w, a, b),
    "zeros": lambda w, act: nn.init.zeros_(w),
}


def initialize(model: nn.Module, cfg: DictConfig, act: Nonlinearity) -> None:
    """Apply the chosen initializer to every Linear/Conv weight; biases to zero when init.bias=zeros."""
    from .config import ConfigError

    if cfg.kind not in INITS:
        raise ConfigError(f"unknown init '{cfg.kind}'; choose one of: {', '.join(sorted(INITS))}")
    fn, given = INITS[cfg.kind], knobs(cfg, skip=("bias",))
    check_knobs(fn, given, f"init={cfg.kind}: init", supplied=2)
    for layer in model.modules():
        if isinstance(layer, LAYERS_WITH_WEIGHTS):
            fn(layer.weight, act, **given)
            if cfg.bias == "zeros" and layer.bias is not None:
                nn.init.zeros_(layer.bias)
