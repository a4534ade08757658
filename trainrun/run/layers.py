"""Per-layer statistics (logger.layers): what the lectures' claims about depth, activations and initializers are
about. On a fixed probe batch, at initialization and after every epoch: each block's output (mean, standard
deviation, and the spread across its units: zero when every unit computes the same thing) and the gradient
norm of each weight. Kept in layers.json beside metrics.json (which stays flat).

The probe pass runs in eval mode and takes gradients with torch.autograd.grad: no random number is drawn,
no buffer or .grad changes, so a run measured this way trains exactly as one that is not.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion) -> dict:
    outputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
             for name, m in model.named_children()]
    weights = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss = criterion(model(x).float(), y)
            grads = torch.autograd.grad(loss, [p for _, p in weights], allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    activations = {}
    for name, out in outputs.items():
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            flat = out.detach().float().flatten(1)
            activations[name] = {"mean": number(flat.mean()), "std": number(flat.std()),
                                 "unit_spread": number(flat.std(dim=1).mean()) if flat.shape[1] > 1 else 0.0}
    return {"activations": activations,
            "grad_norms": {n: number(g.norm()) if g is not None else 0.0 for (n, _), g in zip(weights, grads)}}


def number(value: torch.Tensor) -> float | None:
    """Strict JSON: an exploded (non-finite) statistic is null."""
    value = float(value)
    return value if math.isfinite(value) else None


class LayerLog:
    """layers.json: one record per measurement ({"epoch", "step", "activations", "grad_norms"}), rewritten
    atomically after each; a resumed run drops what was measured after its checkpoint, then appends."""

    def __init__(self, run_dir: Path, resumed_epoch: int | None):
        self.path = run_dir / "layers.json"
        self.records: list[dict] = []
        if resumed_epoch is not None and self.path.is_file():
            self.records = [r for r in json.loads(self.path.read_text())["records"] if r["epoch"] <= resumed_epoch]

    def add(self, epoch: int, step: int, stats: dict) -> None:
        self.records.append({"epoch": epoch, "step": step, **stats})
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"records": self.records}, allow_nan=False) + "\n")
        tmp.replace(self.path)
