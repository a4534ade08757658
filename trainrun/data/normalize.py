"""Input normalization (records in registry.NORMALIZERS), with statistics from the train split only."""
from __future__ import annotations

import math

import torch


class Normalizer:
    """Statistics fitted on the train split (tensors named in `fitted`), kept with the run in its
    preprocessing.json (`record`) and read back from it (`restored`) by predict and export."""

    fitted: tuple[str, ...] = ()

    def record(self) -> dict:
        return {name: getattr(self, name).cpu().tolist() for name in self.fitted}

    @classmethod
    def restored(cls, record: dict) -> "Normalizer":
        normalizer = cls.__new__(cls)
        for name in cls.fitted:  # float32 values written as float64: read back exactly
            setattr(normalizer, name, torch.tensor(record[name], dtype=torch.float32))
        return normalizer

    def to(self, device) -> "Normalizer":
        for name in self.fitted:
            setattr(self, name, getattr(self, name).to(device))
        return self


class Identity(Normalizer):
    def __init__(self, train):
        pass

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


STATISTICS_CHUNK = 2**21  # values converted to float64 at a time (16 MiB): statistics without a float copy


def _chunks(train, flat: bool = False):
    """The train split's inputs in float64 chunks (a split on disk is read chunk by chunk, never whole)."""
    row = math.prod(next(train.chunks(1)).shape[1:])
    for c in train.chunks(max(1, STATISTICS_CHUNK // row)):
        c = c.double().div_(255) if c.dtype == torch.uint8 else c.double()
        yield c.flatten(1) if flat else c


class Standardize(Normalizer):
    """Zero mean, unit variance per feature; for images per channel (a per-pixel std is near zero at the
    borders, and would blow up any augmentation that moves ink there)."""

    fitted = ("mean", "scale")

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale


class PCA(Normalizer):
    """x -> ((x - mean) @ principal axes), divided by sqrt(variance) when whitening, on flattened features."""

    fitted = ("mean", "rotation", "scale")

    def __init__(self, train, whiten: bool):
        n = len(train)
        mean = sum(c.sum(0) for c in _chunks(train, flat=True)) / n
        scatter = sum((c - mean).T @ (c - mean) for c in _chunks(train, flat=True))
        variances, vectors = torch.linalg.eigh(scatter / max(n - 1, 1))
        self.mean, self.rotation = mean.float(), vectors.flip(1).float()  # principal axes, largest variance first
        variances = variances.flip(0).clamp_min(0)
        # whitening divides by sqrt(variance); the floor keeps near-empty directions from exploding
        self.scale = ((variances + 1e-3 * variances.max()).rsqrt() if whiten else torch.ones_like(variances)).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (((x.flatten(1) - self.mean) @ self.rotation) * self.scale).view_as(x)
