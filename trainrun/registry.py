"""One helper behind every group's registry: pick the builder for `cfg.kind`, pass it the knobs it takes.

A registry is a plain dict from option name to a callable (a torch class or a small function).
The knobs set in the config (not None) are passed as keyword arguments; a knob that the chosen
option does not take is a ConfigError naming it and listing the ones it does take.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf

from .config import ConfigError


def knobs(cfg: DictConfig, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config's set values as plain Python, without `kind` and the keys in `skip`."""
    values = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in values.items() if v is not None and k != "kind" and k not in skip}


def accepted(fn: Callable) -> set[str] | None:
    """Keyword names `fn` takes, or None when it takes any (**kwargs)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_knobs(fn: Callable, given: Mapping[str, Any], where: str, supplied: int = 0, internal=()) -> None:
    """Raise on a knob `fn` does not take; `supplied` leading arguments and `internal` names are ours."""
    names = accepted(fn)
    if names is None:
        return
    leading = [p.name for p in inspect.signature(fn).parameters.values()][:supplied]
    user_knobs = sorted(names - set(leading) - set(internal) - {"inplace", "foreach", "maximize", "capturable",
                                                                 "differentiable", "fused", "verbose"})
    for key in given:
        if key not in names:
            raise ConfigError(f"{where}.{key} does not apply here; it takes: {', '.join(user_knobs) or 'no knobs'}")


def create(registry: Mapping[str, Callable], cfg: DictConfig, group: str, *args: Any,
           skip: tuple[str, ...] = (), **context: Any) -> Any:
    """registry[cfg.kind](*args, **context, **knobs), with every set knob checked against its signature."""
    if cfg.kind not in registry:
        raise ConfigError(f"unknown {group} '{cfg.kind}'; choose one of: {', '.join(sorted(registry))}")
    fn = registry[cfg.kind]
    given = knobs(cfg, skip)
    check_knobs(fn, given, f"{group}={cfg.kind}: {group}", len(args), context)
    return fn(*args, **context, **given)
