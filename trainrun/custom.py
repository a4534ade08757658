"""A user's own class or function as an option: `<group>=custom <group>._target_=my_project.nets.WideNet`.

One mechanism for every group: the `custom` record of each registry names one of the builders below,
which import `_target_` (from the current directory or PYTHONPATH), call it with the option's `params`
and with whatever of the run's context its signature names (a model gets `input_shape` and
`num_outputs`, and `activation`/`norm` factories, when it names them), and check what comes back.
Errors are one line naming the dotted path and what is missing.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Callable

from .errors import ConfigError


def resolve(target: str | None, group: str) -> Callable:
    """The object a dotted path names; the current directory is importable, as it is for `python -m`."""
    if not target:
        raise ConfigError(f"{group}=custom needs {group}._target_, the dotted path of a class or function "
                          f"(e.g. {group}._target_=my_project.module.Name)")
    module_name, _, name = target.rpartition(".")
    if not module_name:
        raise ConfigError(f"{group}._target_={target}: give module.Name (a dotted path)")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{group}._target_={target}: cannot import {module_name} ({error})") from None
    except Exception as error:  # the user's module raised while it was imported
        raise ConfigError(f"{group}._target_={target}: importing {module_name} raised "
                          f"{type(error).__name__}: {error}") from None
    obj = getattr(module, name, None)
    if obj is None:
        raise ConfigError(f"{group}._target_={target}: {module_name} has no {name}")
    if not callable(obj):
        raise ConfigError(f"{group}._target_={target} is not callable (a {type(obj).__name__})")
    return obj


def call(fn: Callable, params: dict, offered: dict[str, Any]) -> Any:
    """fn(**params, **the offered arguments its signature names). Never through **kwargs: torchvision's and timm's
    factories take **kwargs and hand them to a class that knows no `input_shape`."""
    try:
        accepted = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: params only
        return fn(**params)
    named = {name for name, p in accepted.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    context = {k: v for k, v in offered.items() if k in named and k not in params}
    return fn(**params, **context)


def model(data, layers, params, _target_=None):
    from torch import nn

    net = call(resolve(_target_, "model"), dict(params), {
        "input_shape": tuple(data.input_shape), "num_outputs": data.num_outputs,
        "activation": layers.act, "norm": lambda channels, dims=0: layers.normalization(channels, dims)})
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model._target_={_target_} returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def activation(params, _target_=None):
    from torch import nn

    module = call(resolve(_target_, "activation"), dict(params), {})
    if not isinstance(module, nn.Module):
        raise ConfigError(f"activation._target_={_target_} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def optimizer(groups, params, lr, closure, _target_=None, weight_decay=None):
    import torch

    cls = resolve(_target_, "optimizer")
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"optimizer._target_={_target_} is not a torch.optim.Optimizer subclass")
    knobs = {"lr": lr, **({"weight_decay": weight_decay} if weight_decay is not None else {}), **params}
    return call(cls, knobs, {"params": groups})


def scheduler(opt, plan, params, on_metric, _target_=None):
    return call(resolve(_target_, "scheduler"), dict(params), {
        "optimizer": opt, "total_steps": plan.total, "steps_per_epoch": plan.per_epoch})


def loss(task, num_classes, smoothing, params, _target_=None):
    made = call(resolve(_target_, "loss"), dict(params), {"num_classes": num_classes})
    if not callable(made):
        raise ConfigError(f"loss._target_={_target_} returned a {type(made).__name__}, not a loss(output, target)")
    return made
