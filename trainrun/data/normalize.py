"""Input normalization (records in registry.NORMALIZERS), with statistics from the train split only."""
from __future__ import annotations

import math

import torch


class Identity:
    def __init__(self, train):
        pass

    def to(self, device) -> "Identity":
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


STATISTICS_CHUNK = 2**21  # values converted to float64 at a time (16 MiB): statistics without a float copy


def _chunks(train, flat: bool = False):
    """The train split's inputs in float64 chunks (a split on disk is read chunk by chunk, never whole)."""
    row = math.prod(next(train.chunks(1)).shape[1:])
    for c in train.chunks(max(1, STATISTICS_CHUNK // row)):
        c = c.double().div_(255) if c.dtype == torch.uint8 else c.double()
        yield c.flatten(1) if flat else c


class Standardize:
    """Zero mean, unit variance per feature; for images per channel (a per-pixel std is near zero at the
    borders, and would blow up any augmentation that moves ink there)."""

    def __init__(self, train):
        total = count = 0
        dims = None
        for c in _chunks(train):
            dims = (0, 2, 3) if c.dim() == 4 else (0,)
            total = total + c.sum(dims, keepdim=True)
            count += len(c) * (c.shape[2] * c.shape[3] if c.dim() == 4 else 1)
        mean = total / count
        squares = sum(((c - mean) ** 2).sum(dims, keepdim=True) for c in _chunks(train))
        std = (squares / max(count - 1, 1)).sqrt()
        self.mean = mean.float()
        self.scale = (1 / torch.where(std > 1e-8, std, torch.ones_like(std))).float()  # constant features stay put

    def to(self, device) -> "Standardize":
        self.mean, self.scale = self.mean.to(device), self.scale.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale


class PCA:
    """x -> ((x - mean) @ principal axes), divided by sqrt(variance) when whitening, on flattened features."""

    def __init__(self, train, whiten: bool):
        n = len(train)
        mean = sum(c.sum(0) for c in _chunks(train, flat=True)) / n
        scatter = sum((c - mean).T @ (c - mean) for c in _chunks(train, flat=True))
        variances, vectors = torch.linalg.eigh(scatter / max(n - 1, 1))
        self.mean, self.rotation = mean.float(), vectors.flip(1).float()  # principal axes, largest variance first
        variances = variances.flip(0).clamp_min(0)
        # whitening divides by sqrt(variance); the floor keeps near-empty directions from exploding
        self.scale = ((variances + 1e-3 * variances.max()).rsqrt() if whiten else torch.ones_like(variances)).float()

    def to(self, device) -> "PCA":
        self.mean, self.scale, self.rotation = self.mean.to(device), self.scale.to(device), self.rotation.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (((x.flatten(1) - self.mean) @ self.rotation) * self.scale).view_as(x)
