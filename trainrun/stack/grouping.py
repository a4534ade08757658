"""Which runs of a sweep train together: runs whose configs differ only in keys the schema declares may differ
inside a stack (config.py: `stacks=True`) form one stack; a run whose config rules stacking out trains alone,
and the sweep says why."""
from __future__ import annotations

import dataclasses
import json
import typing

from omegaconf import DictConfig, OmegaConf

from ..config import Config, hints
from ..registry import OPTIMIZERS, PRECISIONS


def stack_key(cfg: DictConfig) -> str:
    """What every run of a stack shares: its config without the keys that may differ inside one, nor Hydra's."""
    values = {key: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
              for key, node in cfg.items() if key != "hydra"}
    return json.dumps(_shared(values, Config), sort_keys=True, default=str)


def _shared(values: dict, schema) -> dict:
    declared = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    out = {}
    for key, value in values.items():
        field = declared.get(key)
        if field is not None and field.metadata.get("stacks"):
            continue
        hint = hints(schema).get(key) if field is not None else None
        inner = next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)
        out[key] = _shared(value, inner) if isinstance(value, dict) and inner is not None else value
    return out


def splits(key: str) -> bool:
    """Whether runs that differ in `key` (dotted) train in different stacks: neither it nor a section above it is
    declared stackable."""
    schema = Config
    for part in key.split("."):
        declared = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
        if part not in declared:
            return True
        if declared[part].metadata.get("stacks"):
            return False
        hint = hints(schema)[part]
        schema = next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)
    return True


def alone_because(cfg) -> str | None:
    """Why a run cannot train in a stack, from its config alone (the model's layers are checked when built)."""
    tc = cfg.trainer
    reasons = [
        (OPTIMIZERS.trait(cfg.optimizer, "stacked_step") is None, f"optimizer={cfg.optimizer.kind} has no stacked step"),
        (tc.devices > 1, f"trainer.devices={tc.devices} trains it in several processes"),
        (tc.compile, "trainer.compile compiles its own model"),
        (tc.channels_last, "trainer.channels_last"),
        (tc.grad_accum_steps > 1, f"trainer.grad_accum_steps={tc.grad_accum_steps}"),
        (PRECISIONS.trait(tc.precision, "grad_scaler"), f"trainer.precision={tc.precision} scales its own loss"),
        (bool(tc.profile or tc.overfit_batches or tc.fast_dev_run), "it is a debugging run"),
        (cfg.tune is not None, "tune=lr_find"),
    ]
    return next((why for ruled_out, why in reasons if ruled_out), None)


def plan(configs: list[DictConfig]) -> list[tuple[list[int], str | None]]:
    """The runs (by position) of each stack, in the order of their first run; a run alone comes with why (None
    for a run that is alone only because no other run has its shape)."""
    stacks: dict[str, list[int]] = {}
    alone = []
    for i, cfg in enumerate(configs):
        why = alone_because(cfg)
        if why:
            alone.append(([i], why))
        else:
            stacks.setdefault(stack_key(cfg), []).append(i)
    groups = [(members, None) for members in stacks.values()] + alone
    return sorted(groups, key=lambda g: g[0][0])
