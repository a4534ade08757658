"""The layers a built-in model normalizes, as [(dims, width)], from its config alone and without torch:
check.py refuses a norm that cannot fit them (group norm's groups, instance norm on dense layers) before a
sweep starts. Each model's record names its function (registry.py, `normalized`); dims is 0 for a dense
layer, 1 or 2 for a convolution."""
from __future__ import annotations


def mlp(model) -> list[tuple[int, int]]:
    hidden = [model.width] * model.depth if model.depth is not None else list(model.hidden)
    return [(0, width) for width in hidden]


def linear(model) -> list[tuple[int, int]]:
    return []


def _convnet(model, dims: int) -> list[tuple[int, int]]:
    return [(dims, c) for c in model.channels] + [(0, h) for h in model.hidden]


def cnn(model) -> list[tuple[int, int]]:
    return _convnet(model, 2)


def cnn1d(model) -> list[tuple[int, int]]:
    return _convnet(model, 1)


def resnet(model) -> list[tuple[int, int]]:
    return [(2, model.width), (2, 2 * model.width), (2, 4 * model.width)]
