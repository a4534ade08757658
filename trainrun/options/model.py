"""Model architectures: builders(data, layers, knobs) -> nn.Module (records in registry.MODELS), and transfer learning.

Every model's output layer is named `head`; hidden blocks are built by `Layers.block`, the one place
where the chosen activation, norm (and its position) and dropout are put together. Input shape and
number of outputs come from the data.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import runfiles
from ..config import ActivationConfig, Config, NormConfig
from .activation import make_activation, nonlinearity
from ..errors import ConfigError
from ..data import Data
from .init import LAYERS_WITH_WEIGHTS, initialize
from .norm import make_norm
from .weights import head_name, load_weights, new_head
from ..registry import ACTIVATIONS, INITS, MODELS, NORMS

log = logging.getLogger("trainrun")


class Layers:
    """Builds hidden blocks the same way in every model: weight layer, norm and activation in the
    configured order, then dropout (alpha dropout under SELU, which it keeps self-normalizing)."""

    def __init__(self, activation: ActivationConfig, norm: NormConfig, dropout: float):
        self.activation, self.norm, self.dropout = activation, norm, dropout

    def act(self) -> nn.Module:
        return make_activation(self.activation)

    def normalization(self, channels: int, dims: int) -> nn.Module:
        return make_norm(self.norm, channels, dims) or nn.Identity()

    def block(self, layer: nn.Module, channels: int, dims: int, with_norm: bool = True) -> nn.Sequential:
        norm, act = make_norm(self.norm, channels, dims) if with_norm else None, self.act()
        order = [("norm", norm), ("act", act)] if self.norm.position == "before" else [("act", act), ("norm", norm)]
        parts = [(type(layer).__name__.lower(), layer)] + [(n, m) for n, m in order if m is not None]
        if self.dropout:
            self_normalizing = ACTIVATIONS.trait(self.activation.kind, "self_normalizing")
            parts.append(("dropout", (nn.AlphaDropout if self_normalizing else nn.Dropout)(self.dropout)))
        return nn.Sequential(OrderedDict(parts))


def _hidden_stack(modules: list, width: int, hidden: list[int], layers: Layers, num_outputs: int,
                  with_norm: bool = True) -> nn.Sequential:
    for i, h in enumerate(hidden, 1):
        modules.append((f"fc{i}", layers.block(nn.Linear(width, h), h, dims=0, with_norm=with_norm)))
        width = h
    modules.append(("head", nn.Linear(width, num_outputs)))
    return nn.Sequential(OrderedDict(modules))


def mlp(data: Data, layers: Layers, hidden, depth=None, width=None):
    """Hidden layers of model.hidden's sizes, or, with model.depth, `depth` layers of model.width units."""
    if depth is not None:  # with model.width: check.py makes sure of it
        hidden = [width] * depth
    return _hidden_stack([("flatten", nn.Flatten())], math.prod(data.input_shape), list(hidden), layers, data.num_outputs)


def linear(data: Data, layers: Layers):
    return mlp(data, layers, hidden=())


def convnet(data: Data, layers: Layers, dims: int, channels, kernel_size, pool, hidden):
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    pooling = {"max": nn.MaxPool2d if dims == 2 else nn.MaxPool1d, "avg": nn.AvgPool2d if dims == 2 else nn.AvgPool1d}
    modules, width, size = [], data.input_shape[0], list(data.input_shape[1:])
    for i, c in enumerate(channels, 1):
        block = layers.block(conv(width, c, kernel_size, padding=kernel_size // 2), c, dims)
        if pool != "none":
            block.add_module("pool", pooling[pool](2))
            size = [s // 2 for s in size]
        if min(size) < 1:
            raise ConfigError(f"model: {len(channels)} pooled conv blocks shrink input {data.input_shape} to nothing; "
                              f"use fewer model.channels or model.pool=none")
        modules.append((f"conv{i}", block))
        width = c
    modules.append(("flatten", nn.Flatten()))
    # instance norm needs positions to average over: the conv blocks have them, the dense head does not
    return _hidden_stack(modules, width * math.prod(size), list(hidden), layers, data.num_outputs,
                         with_norm=not NORMS.trait(layers.norm.kind, "needs_positions"))


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut: He et al. 2016."""

    def __init__(self, cin: int, cout: int, stride: int, layers: Layers):
        super().__init__()
        self.conv1 = layers.block(nn.Conv2d(cin, cout, 3, stride, 1), cout, 2)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.norm2 = layers.normalization(cout, 2)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride), layers.normalization(cout, 2))
        self.act = layers.act()

    def forward(self, x):
        return self.act(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))


def resnet(data: Data, layers: Layers, depth, width):
    n = (depth - 2) // 6  # depth is 6n+2: its record's range
    modules = [("stem", layers.block(nn.Conv2d(data.input_shape[0], width, 3, 1, 1), width, 2))]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width), 1):
        blocks = [BasicBlock(cin if i == 0 else cout, cout, 2 if (i == 0 and stage > 1) else 1, layers) for i in range(n)]
        modules.append((f"stage{stage}", nn.Sequential(*blocks)))
        cin = cout
    modules += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("head", nn.Linear(cin, data.num_outputs))]
    return nn.Sequential(OrderedDict(modules))


class PolynomialFeatures(nn.Module):
    def __init__(self, degree: int):
        super().__init__()
        self.register_buffer("powers", torch.arange(1, degree + 1, dtype=torch.float32))

    def forward(self, x):
        return x.pow(self.powers)  # (N, 1) -> (N, degree): [x, x^2, ..., x^degree]


def polynomial(data: Data, layers: Layers, degree):
    return nn.Sequential(OrderedDict([("features", PolynomialFeatures(degree)), ("head", nn.Linear(degree, data.num_outputs))]))


SMALL_IMAGE = 64  # px a side at most: model.small_input=auto gives such images a small stem


def torchvision_model(data: Data, layers: Layers, name, small_input):
    """A torchvision classification architecture with the data's outputs; its first convolution takes the data's
    channels, and small images get a small stem. The saved tensors keep the architecture's own names."""
    import difflib

    from torchvision import models

    classifiers = models.list_models(module=models)
    if name not in classifiers:
        close = difflib.get_close_matches(name, classifiers, n=3)
        what = "a segmentation, detection or video model" if name in models.list_models() else "not one"
        raise ConfigError(f"model.name={name} is {what}; model=torchvision takes a classification model of "
                          f"torchvision.models" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    net = models.get_model(name, weights=None, num_classes=data.num_outputs)
    small = small_input is True or (small_input == "auto" and max(data.input_shape[1:]) <= SMALL_IMAGE)
    if small and isinstance(getattr(net, "maxpool", None), nn.MaxPool2d) and isinstance(net.conv1, nn.Conv2d):
        conv = net.conv1  # ImageNet's 7x7 stride-2 stem and max-pool leave 2x2 of an 8x8 digit
        net.conv1 = nn.Conv2d(data.input_shape[0], conv.out_channels, 3, stride=1, padding=1,
                              bias=conv.bias is not None)
        net.maxpool = nn.Identity()
        net.made_for_the_data = ("conv1",)  # pretrained weights for the ImageNet stem do not fit it: it starts anew
    elif small_input is True:
        raise ConfigError(f"model.small_input=true: {name} has no conv1 + maxpool stem to replace (ResNet-like "
                          "models do); use model.small_input=false")
    first, conv = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels != data.input_shape[0]:
        _replace(net, first, nn.Conv2d(data.input_shape[0], conv.out_channels, conv.kernel_size, conv.stride,
                                       conv.padding, conv.dilation, conv.groups, conv.bias is not None))
    return net


def torchvision_weights(name: str, weights: str) -> dict:
    """torchvision's pretrained weights of that name for the architecture, from torch's hub cache."""
    from torchvision import models

    enum = getattr(models.get_model_weights(name), weights)
    return fetched(lambda: enum.get_state_dict(progress=False), f"model.weights={weights}",
                   f"torchvision downloads {enum.url} into {_hub_dir()}")


def torchvision_weight_names(name: str) -> list[str]:
    """The names torchvision gives `name`'s pretrained weights (IMAGENET1K_V1, ..., DEFAULT): downloaded once
    into torch's hub cache, read from there after."""
    from torchvision import models

    try:
        return [w.name for w in models.get_model_weights(name)] + ["DEFAULT"]
    except (ValueError, KeyError):
        return []


def timm_weight_names(name: str) -> list[str]:
    """`pretrained`: timm's default pretrained weights for `name`, downloaded from the Hugging Face Hub once."""
    return ["pretrained"]


def _hub_dir() -> str:
    import torch.hub

    return str(Path(torch.hub.get_dir()) / "checkpoints")


def fetched(fetch: Callable, what: str, how: str):
    """A library's download, or one line saying what it tried and what to do offline."""
    try:
        return fetch()
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; huggingface_hub's offline errors too
        reason = str(getattr(e, "reason", None) or e).splitlines()[0][:120]
        raise ConfigError(f"{what}: {how}, which failed here ({reason}); offline, fetch the file elsewhere and "
                          "give its path") from None


def timm_model(data: Data, layers: Layers, name):
    """timm.create_model with the data's outputs and channels (timm is an extra)."""
    import difflib

    try:
        import timm
    except ImportError:
        raise ConfigError("model=timm needs timm: pip install 'trainrun[timm]'") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ConfigError(f"model.name={name} is not a timm model" + (f" (did you mean {', '.join(close)}?)" if close
                                                                      else " (timm.list_models() lists them)"))
    return timm.create_model(name, num_classes=data.num_outputs, in_chans=data.input_shape[0])


def timm_weights(name: str, weights: str) -> dict:
    """timm's default pretrained weights for the architecture (its own head and RGB stem), from the Hugging Face
    Hub's cache."""
    import timm

    return fetched(lambda: timm.create_model(name, pretrained=True).state_dict(), f"model.weights={weights}",
                   f"timm downloads {name}'s weights from the Hugging Face Hub")


def torchvision_statistics(name: str) -> tuple[list, list]:
    """The per-channel mean and std torchvision's pretrained weights of `name` expect (its transforms' meta,
    read offline)."""
    from torchvision import models

    transforms = models.get_model_weights(name).DEFAULT.transforms()
    return list(transforms.mean), list(transforms.std)


def timm_statistics(name: str) -> tuple[list, list] | None:
    """The per-channel mean and std of timm's default pretrained config for `name` (None where it has none)."""
    import timm

    config = timm.get_pretrained_cfg(name)
    return (list(config.mean), list(config.std)) if config else None


def _replace(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, module)


def build_model(cfg: Config, data: Data) -> tuple[nn.Module, set[str]]:
    """The initialized model and the names of parameters reused from model.weights."""
    for registry, group in ((ACTIVATIONS, cfg.activation), (INITS, cfg.init)):
        if registry.trait(group.kind, "warning"):
            log.warning(registry.trait(group.kind, "warning"))
    layers = Layers(cfg.activation, cfg.norm, cfg.regularization.dropout)
    model = MODELS.create(cfg.model, data, layers)
    if MODELS.trait(cfg.model.kind, "own_layers"):
        fixed = [f"{k}={v}" for k, v, default in (("activation", cfg.activation.kind, "relu"),
                 ("norm", cfg.norm.kind, "none"), ("regularization.dropout", cfg.regularization.dropout, 0))
                 if v != default]
        if fixed:
            log.warning(f"model={cfg.model.kind} keeps its own activations, norms and dropout: {', '.join(fixed)} "
                        "do not apply")
    initialize(model, cfg.init, nonlinearity(cfg.activation))
    if NORMS.trait(cfg.norm.kind, "reparametrizes"):
        for layer in [m for m in model.modules() if isinstance(m, LAYERS_WITH_WEIGHTS)]:
            nn.utils.parametrizations.weight_norm(layer)
    reused = load_weights(model, cfg.model, runfiles.class_names(data.preprocessing())) if cfg.model.weights else set()
    if cfg.model.new_head or cfg.model.head_only:
        reused -= new_head(model)  # trains at the full lr: nothing of it is reused
    freeze(model, cfg.model.freeze, cfg.model.head_only)
    return model, reused


def freeze(model: nn.Module, layers, head_only: bool) -> None:
    """Freeze named layers, the first N top-level layers, or (head_only) all but the output layer."""
    if head_only:
        head = head_name(model)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(head + "."))
        return
    if layers is None:
        return
    trainable = [name for name, m in model.named_children() if any(True for _ in m.parameters())]
    if isinstance(layers, int):
        names = trainable[:layers]
    else:
        names = list(layers)
        for name in names:
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ConfigError(f"model.freeze: no layer '{name}'; layers: {', '.join(trainable)}") from None
    for name in names:
        model.get_submodule(name).requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model.freeze={layers} freezes every layer ({', '.join(trainable)}): nothing is left "
                          "to train; freeze fewer layers")
