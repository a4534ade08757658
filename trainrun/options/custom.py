"""A user's own class or function as an option: `<group>=custom <group>._target_=my_project.nets.WideNet`.

One mechanism for every group: the `custom` record of each registry names one of the builders below,
which import `_target_` (from the current directory or PYTHONPATH), call it with the option's `params`
and with whatever of the run's context its signature names (a model gets `input_shape` and
`num_outputs`, and `activation`/`norm` factories, when it names them), and check what comes back.
Errors are one line naming the dotted path and what is missing.
"""
from __future__ import annotations

import inspect

from ..errors import ConfigError
from ..usercode import call, resolve


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
