"""R runs' models of the same shape as one stacked model: each weight a [R, *shape] tensor, one forward pass.

Each run's model is built alone, as a run alone builds it (its own initializer and seed), then stacked: its
parameters and buffers become views of their slice of the stacked tensors, so the run's own module evaluates,
checkpoints and predicts as ever. Dense activations are [R, batch, features] (torch.baddbmm); convolutional
ones [batch, R * channels, *positions], a convolution with R times the groups, so batch norm, group norm and
pooling act per run's channel as they do alone. Dropout draws each run's mask from that run's own generator,
with the shape and call a run alone makes (torch's CPU dropout: `empty_like(x).bernoulli_(1 - p)`), so a
stacked run draws exactly the masks it would draw alone.

A model is stackable when it is a tree of nn.Sequential whose leaves are among the layers below (the built-in
MLP, CNN and linear models); anything else is named by `NotStackable`, and its runs train one at a time.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..options.activation import Abs, Sign
from .optimizers import StackedParam

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Softplus, nn.Tanh,
               nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Identity, Abs, Sign)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)


class NotStackable(Exception):
    """Why these runs' models cannot be one stacked model (said in the sweep's header)."""


def leaves(model: nn.Module) -> dict[str, nn.Module]:
    """The layers a Sequential tree applies, in order, by their qualified names."""
    if not isinstance(model, nn.Sequential):
        raise NotStackable(f"its model is a {type(model).__name__}, not a sequence of layers")
    out = {}
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            out |= {f"{name}.{k}": v for k, v in leaves(child).items()}
        else:
            out[name] = child
    return out


def aligned(models: list[nn.Module]) -> list[tuple[str, list[nn.Module | None]]]:
    """Each layer with every run's module; None where a run lacks a dropout layer the others have (dropout 0
    adds no layer: its mask keeps everything)."""
    per_run = [leaves(m) for m in models]
    order = max(per_run, key=len)
    for own in per_run:
        missing = [n for n in order if n not in own and not isinstance(order[n], nn.Dropout)]
        extra = [n for n in own if n not in order]
        if missing or extra:
            raise NotStackable(f"its models differ in their layers ({(missing + extra)[0]})")
    return [(name, [own.get(name) for own in per_run]) for name in order]


SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm,
             nn.InstanceNorm1d, nn.InstanceNorm2d, nn.Flatten) + ELEMENTWISE + POOLS


def refusal(first: nn.Module, mods: list) -> str | None:
    """Why a layer has no stacked form here, or None."""
    if not (isinstance(first, SUPPORTED) or type(first) is nn.Dropout):
        return f"a {type(first).__name__}, which has no stacked form"
    if any(not p.requires_grad for m in mods if m is not None for p in m.parameters()):
        return "frozen layers (model.freeze)"
    if isinstance(first, (nn.Conv1d, nn.Conv2d)) and first.padding_mode != "zeros":
        return f"convolutions that pad with {first.padding_mode}"
    if isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d)) and not first.track_running_stats:
        return "a batch norm without running statistics"
    if isinstance(first, (nn.InstanceNorm1d, nn.InstanceNorm2d)) and first.track_running_stats:
        return "an instance norm with running statistics"
    return None


class StackedModel:
    """The stacked forward pass of R runs' models; `params` are what the stacked optimizer steps."""

    def __init__(self, models: list[nn.Module], generators: list[torch.Generator]):
        self.runs, self.generators = len(models), generators
        self.params: list[StackedParam] = []
        self.buffers: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
        self.layers: list[Callable] = []
        self.rates: list[list[float]] = []  # each dropout layer's rate in each run
        self.convolutional = None  # the layout of the input, set by the first layer with weights
        self.sources: list[tuple[str, str]] = []  # (layer, attribute) of each stacked param, then of each buffer
        self.buffer_sources: list[tuple[str, str]] = []
        self.dropouts: list[str] = []  # the dropout layers, by name
        layers = aligned(models)
        for name, mods in layers:  # every refusal before any tensor is stacked: the runs then train alone as they are
            why = refusal(next(m for m in mods if m is not None), mods)
            if why:
                raise NotStackable(f"its model has {why} ({name})")
        self.names = [name for name, _ in layers]
        for name, mods in layers:
            self.layer = name
            self.layers.append(self.stacked(name, mods))
        if self.convolutional is None:
            raise NotStackable("its model has no layer with weights")

    # -- stacking tensors --------------------------------------------------------------------------------
    def param(self, mods: list[nn.Module], attr: str, penalized: bool = False) -> torch.Tensor | None:
        members = [getattr(m, attr) for m in mods]
        if members[0] is None:
            return None
        sp = StackedParam(torch.stack([p.detach() for p in members]).requires_grad_(), members, penalized=penalized)
        sp.alias()
        self.params.append(sp)
        self.sources.append((self.layer, attr))
        return sp.data

    def buffer(self, mods: list[nn.Module], attr: str) -> torch.Tensor | None:
        members = [getattr(m, attr) for m in mods]
        if members[0] is None:
            return None
        stacked = torch.stack([b.detach() for b in members])
        for r, b in enumerate(members):
            b.data = stacked[r]
        self.buffers.append((stacked, members))
        self.buffer_sources.append((self.layer, attr))
        return stacked

    def release(self, rows: list[int]) -> None:
        """Only the runs at `rows` go on: the others' tensors become their own copies, the rest are restacked."""
        for sp in self.params:
            leaving = [p for r, p in enumerate(sp.members) if r not in rows]
            for p in leaving:
                p.data, p.grad = p.data.clone(), None
            sp.members = [sp.members[r] for r in rows]
            sp.data = sp.data.detach()[rows].clone().requires_grad_()
            sp.alias()
        for i, (stacked, members) in enumerate(self.buffers):
            for r, b in enumerate(members):
                if r not in rows:
                    b.data = b.data.clone()
            kept = stacked[rows].clone()
            members = [members[r] for r in rows]
            for r, b in enumerate(members):
                b.data = kept[r]
            self.buffers[i] = (kept, members)
        self.generators = [self.generators[r] for r in rows]
        self.rates = [[rates[r] for r in rows] for rates in self.rates]
        self.runs = len(rows)

    def admit(self, models: list[nn.Module], generators: list[torch.Generator]) -> None:
        """Runs that join: their tensors appended as new slices, every run's views made again."""
        own = [leaves(m) for m in models]
        for layers in own:
            missing = [n for n in self.names if n not in layers and n not in self.dropouts]
            if missing or set(layers) - set(self.names):
                raise NotStackable(f"its model differs in its layers ({(missing or sorted(set(layers) - set(self.names)))[0]})")
        for sp, (name, attr) in zip(self.params, self.sources):
            joining = [getattr(layers[name], attr) for layers in own]
            sp.members += joining
            sp.data = torch.cat([sp.data.detach(), *(p.detach().unsqueeze(0) for p in joining)]).requires_grad_()
            sp.alias()
        for i, (name, attr) in enumerate(self.buffer_sources):
            stacked, members = self.buffers[i]
            members = members + [getattr(layers[name], attr) for layers in own]
            stacked = torch.cat([stacked, *(b.detach().unsqueeze(0) for b in members[len(stacked):])])
            for r, b in enumerate(members):
                b.data = stacked[r]
            self.buffers[i] = (stacked, members)
        for rates, name in zip(self.rates, self.dropouts):
            rates += [layers[name].p if name in layers else 0.0 for layers in own]
        self.generators = self.generators + generators
        self.runs += len(models)

    @torch.no_grad()
    def copy(self, source: int, target: int) -> None:
        """Run `target`'s weights and buffers (batch-norm statistics) become run `source`'s."""
        for sp in self.params:
            sp.data[target] = sp.data[source]
        for stacked, _ in self.buffers:
            stacked[target] = stacked[source]

    # -- the layers ----------------------------------------------------------------------------------------
    def stacked(self, name: str, mods: list) -> Callable:
        first = next(m for m in mods if m is not None)
        if isinstance(first, nn.Linear):
            return self.dense(mods)
        if isinstance(first, (nn.Conv1d, nn.Conv2d)):
            return self.conv(mods)
        if isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self.batch_norm(mods)
        if isinstance(first, nn.LayerNorm):
            return self.layer_norm(mods)
        if isinstance(first, (nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)):
            return self.group_norm(mods)
        if type(first) is nn.Dropout:
            return self.dropout(mods)
        if isinstance(first, ELEMENTWISE + POOLS):
            return first
        return self.flatten

    def flat(self, index: int, affine: bool) -> tuple:
        """A norm's scale and shift (params index, index + 1) over all runs' channels, or none."""
        if not affine:
            return None, None
        return self.tensor(index).flatten(), self.tensor(index + 1).flatten()

    def tensor(self, index: int) -> torch.Tensor:
        """A stacked param in this pass: every run's slice, or the passing runs' (`rows`)."""
        data = self.params[index].data
        return data if self.rows is None else data[self.rows]

    def layout(self, convolutional: bool) -> None:
        if self.convolutional is None:
            self.convolutional = convolutional

    def dense(self, mods) -> Callable:
        self.layout(False)
        index = len(self.params)
        self.param(mods, "weight", penalized=True)
        has_bias = mods[0].bias is not None
        if has_bias:
            self.param(mods, "bias")

        def forward(x):  # [R, B, in] -> [R, B, out]
            weight = self.tensor(index)
            if has_bias:
                return torch.baddbmm(self.tensor(index + 1).unsqueeze(1), x, weight.transpose(1, 2))
            return torch.bmm(x, weight.transpose(1, 2))
        return forward

    def conv(self, mods) -> Callable:
        self.layout(True)
        m = mods[0]
        index = len(self.params)
        self.param(mods, "weight", penalized=True)
        has_bias = m.bias is not None
        if has_bias:
            self.param(mods, "bias")
        conv = F.conv2d if isinstance(m, nn.Conv2d) else F.conv1d

        def forward(x):  # [B, R * in, *S] -> [B, R * out, *S']
            weight = self.tensor(index)
            bias = self.tensor(index + 1).flatten() if has_bias else None
            return conv(x, weight.flatten(0, 1), bias, m.stride, m.padding, m.dilation, m.groups * self.width)
        return forward

    def batch_norm(self, mods) -> Callable:
        m = mods[0]
        index, affine = len(self.params), m.affine
        if affine:
            self.param(mods, "weight")
            self.param(mods, "bias")
        first_buffer = len(self.buffers)
        for attr in ("running_mean", "running_var", "num_batches_tracked"):
            self.buffer(mods, attr)

        def forward(x):
            mean, var, batches = (self.buffers[first_buffer + i][0] for i in range(3))
            rows = self.rows
            if rows is None:
                batches.add_(1)
            else:  # the passing runs' statistics (copies: updated below, then put back)
                mean, var = mean[rows], var[rows]
                batches[rows] += 1
            # momentum None: a cumulative average (the run's own count of batches)
            counted = batches[0] if rows is None else batches[rows[0]]
            momentum = m.momentum if m.momentum is not None else 1.0 / float(counted)
            out = F.batch_norm(self.channels_first(x), mean.view(-1), var.view(-1), *self.flat(index, affine), True,
                               momentum, m.eps)
            if rows is not None:
                self.buffers[first_buffer][0][rows] = mean
                self.buffers[first_buffer + 1][0][rows] = var
            return self.channels_back(out, x)
        return forward

    def layer_norm(self, mods) -> Callable:
        m = mods[0]
        index, affine = len(self.params), m.elementwise_affine
        if affine:
            self.param(mods, "weight")
            if m.bias is not None:
                self.param(mods, "bias")

        def forward(x):  # [R, B, F]: normalized over features, then each run's own scale and shift
            out = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
            if affine:
                out = out * self.tensor(index).unsqueeze(1)
                if m.bias is not None:
                    out = out + self.tensor(index + 1).unsqueeze(1)
            return out
        return forward

    def group_norm(self, mods) -> Callable:
        m = mods[0]
        index = len(self.params)
        affine = m.weight is not None
        if affine:
            self.param(mods, "weight")
            self.param(mods, "bias")
        groups = m.num_groups if isinstance(m, nn.GroupNorm) else m.num_features

        def forward(x):  # [B, R * C, *S] (or dense [R, B, F] as [B, R * F]): run r's groups are its own channels'
            out = F.group_norm(self.channels_first(x), groups * self.width, *self.flat(index, affine), m.eps)
            return self.channels_back(out, x)
        return forward

    def dropout(self, mods) -> Callable:
        index = len(self.rates)
        self.dropouts.append(self.layer)
        self.rates.append([m.p if m is not None else 0.0 for m in mods])  # a run without the layer: rate 0

        def forward(x):
            masks = []
            for position, r in enumerate(range(self.runs) if self.rows is None else self.rows):
                rate, generator = self.rates[index][r], self.generators[r]
                own = self.slice(x, position)
                noise = torch.empty(own.shape, dtype=x.dtype, device=x.device)
                if rate:  # as torch's CPU dropout draws it: the mask of a run alone, from its own generator
                    noise.bernoulli_(1 - rate, generator=generator).div_(1 - rate)
                else:
                    noise.fill_(1)
                masks.append(noise)
            return x * (torch.stack(masks) if self.flattened else torch.cat(masks, 1))
        return forward

    # -- layouts -------------------------------------------------------------------------------------------
    flattened = False  # in a pass: whether the activations are [R, B, F] by now (dense), not [B, R * C, *S]
    rows: list[int] | None = None  # in a pass: the runs passing (None: all)
    width = 0  # in a pass: how many runs pass

    def slice(self, x, r: int) -> torch.Tensor:
        if self.flattened:
            return x[r]
        width = x.shape[1] // self.width
        return x[:, r * width:(r + 1) * width]

    def channels_first(self, x) -> torch.Tensor:
        """[R, B, C] -> [B, R * C] for batch norm over features; convolutional maps are already so."""
        return x.transpose(0, 1).reshape(x.shape[1], -1) if self.flattened else x

    def channels_back(self, out, x) -> torch.Tensor:
        return out.view(x.shape[1], self.width, -1).transpose(0, 1) if self.flattened else out

    def flatten(self, x) -> torch.Tensor:
        self.flattened = True
        if self.convolutional:  # [B, R * C, *S] -> [R, B, C * S]
            return x.reshape(x.shape[0], self.width, -1).transpose(0, 1)
        return x.flatten(2)  # [R, B, *shape] -> [R, B, F]

    # -- the pass --------------------------------------------------------------------------------------------
    def inputs(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Each run's batch, as the first layer takes them."""
        if self.convolutional:
            return torch.cat(xs, 1)  # [B, R * C, *S]
        return torch.stack(xs)  # [R, B, *shape]

    def __call__(self, xs: list[torch.Tensor], rows: list[int] | None = None) -> torch.Tensor:
        """[R, B, outputs]: every run's outputs for its own batch; with `rows`, those runs' only (a pass takes one
        batch size: runs at their epochs' shorter last batch pass on their own)."""
        self.flattened, self.rows = not self.convolutional, rows
        self.width = self.runs if rows is None else len(rows)
        x = self.inputs(xs)
        for layer in self.layers:
            x = layer(x)
        return x
