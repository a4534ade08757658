"""A user's own code, imported by dotted path: `<group>._target_=my_project.nets.WideNet`.

Used by the options' `custom` builders (options/custom.py) and by `data=custom`: the current directory is
importable, as it is for `python -m`, and every failure is one line naming the dotted path.
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
