"""Which rows each step trains on: samplers (records in registry.SAMPLERS) and Batches, an epoch's index slices."""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

from ..registry import SAMPLERS


def shuffled(n: int, batch_size: int, g: torch.Generator, device) -> Iterator[torch.Tensor | slice]:
    if batch_size == n:  # full-batch GD reads the tensors as they are
        yield from sequential(n, batch_size, g, device)
        return
    yield from torch.randperm(n, generator=g).to(device).split(batch_size)


def with_replacement(n: int, batch_size: int, g: torch.Generator, device) -> Iterator[torch.Tensor | slice]:
    for _ in range(math.ceil(n / batch_size)):
        yield torch.randint(n, (batch_size,), generator=g).to(device)


def sequential(n: int, batch_size: int, g: torch.Generator, device) -> Iterator[torch.Tensor | slice]:
    # contiguous slices are views: no gather at all
    for start in range(0, n, batch_size):
        yield slice(start, start + batch_size)


class Batches:
    """Index batches over the train split, drawn by the sampler (registry.SAMPLERS). The order of each
    epoch is a function of (seed, epoch) alone, so a resumed run sees the same batches. `plan`, where the
    split streams, is handed each epoch's batches before it starts, so their rows are gathered ahead."""

    def __init__(self, n: int, batch_size: int, sampler: str, seed: int, device: torch.device,
                 plan: Callable[[list], None] | None = None):
        self.n, self.batch_size, self.sampler, self.seed, self.device = n, min(batch_size, n), sampler, seed, device
        self.plan = plan

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    @property
    def order(self) -> tuple:
        """What decides every epoch's batches: equal for two runs, they take the same rows at every step."""
        return self.n, self.batch_size, self.sampler, self.seed

    def epoch(self, epoch: int) -> Iterator[torch.Tensor | slice]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        batches = SAMPLERS.create(None, self.n, self.batch_size, g, self.device, kind=self.sampler)
        if self.plan is None:
            return batches
        batches = list(batches)
        self.plan(batches)
        return iter(batches)
