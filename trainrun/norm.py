"""Normalization layers: registry name -> function(channels, dims, knobs) giving a layer, or None.

dims is 0 for a Linear layer's features, 1 for Conv1d and 2 for Conv2d maps.
Weight normalization adds no layer: model.py reparametrizes the weights instead.
"""
from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from .config import ConfigError
from .registry import create


def batch(channels, dims, eps=1e-5, momentum=0.1):
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=eps, momentum=momentum)


def layer(channels, dims, eps=1e-5):
    # over features for a Linear layer; over channels and positions (GroupNorm with one group) for a conv
    return nn.LayerNorm(channels, eps=eps) if dims == 0 else nn.GroupNorm(1, channels, eps=eps)


def group(channels, dims, num_groups=8, eps=1e-5):
    if channels % num_groups:
        raise ConfigError(f"norm.num_groups={num_groups} must divide the layer width {channels}")
    return nn.GroupNorm(num_groups, channels, eps=eps)


def instance(channels, dims, eps=1e-5, affine=True):
    if dims == 0:
        raise ConfigError("norm=instance needs a conv model (per-channel statistics over positions); "
                          "use model=cnn, cnn1d or resnet, or norm=layer")
    return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm1d)(channels, eps=eps, affine=affine)


def no_layer(channels, dims):
    return None


NORMS = {"none": no_layer, "batch": batch, "layer": layer, "group": group, "instance": instance, "weight": no_layer}


def make_norm(cfg: DictConfig, channels: int, dims: int) -> nn.Module | None:
    return create(NORMS, cfg, "norm", channels, dims, skip=("position",))
