"""Normalization layers: functions(channels, dims, knobs) giving a layer, or None (records: registry.NORMS).

dims is 0 for a Linear layer's features, 1 for Conv1d and 2 for Conv2d maps.
Weight normalization adds no layer: model.py reparametrizes the weights instead.
"""
from __future__ import annotations

from torch import nn

from ..config import NormConfig
from ..errors import ConfigError
from ..registry import NORMS


def batch(channels, dims, eps, momentum):
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=eps, momentum=momentum)


def layer(channels, dims, eps):
    # over features for a Linear layer; over channels and positions (GroupNorm with one group) for a conv
    return nn.LayerNorm(channels, eps=eps) if dims == 0 else nn.GroupNorm(1, channels, eps=eps)


def group(channels, dims, num_groups, eps):
    if channels % num_groups:  # a custom model's layer (check.py refuses a built-in model's before it starts)
        raise ConfigError(f"norm.num_groups={num_groups} must divide the layer width {channels}")
    return nn.GroupNorm(num_groups, channels, eps=eps)


def instance(channels, dims, eps, affine):
    if dims == 0:  # a custom model's dense layer (check.py refuses a built-in model's before it starts)
        raise ConfigError("norm=instance needs a conv model (per-channel statistics over positions); "
                          "use model=cnn, cnn1d or resnet, or norm=layer")
    return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm1d)(channels, eps=eps, affine=affine)


def no_layer(channels, dims):
    return None


def make_norm(cfg: NormConfig, channels: int, dims: int) -> nn.Module | None:
    return NORMS.create(cfg, channels, dims)
