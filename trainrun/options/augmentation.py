"""Training-time augmentation of whole batches on the training device.

Factories(data, knobs) -> function(x, y) -> (x, y), one record each in registry.AUGMENTATIONS. Each sample draws its own random
parameters (a torchvision v2 transform called on a batch tensor draws one set for the whole batch,
so the per-sample versions here use masks and per-sample affine grids). The policy augmentations
(RandAugment, AutoAugment, TrivialAugment) are torchvision's own, drawn once per group of samples.
Inputs are raw images in [0, 1]; normalization comes after.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..data import Data
from ..registry import AUGMENTATIONS

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _chosen(x: torch.Tensor, p: float) -> torch.Tensor:
    """A per-sample Bernoulli(p) mask, shaped to broadcast over x."""
    return (torch.rand(len(x), device=x.device) < p).view(-1, *[1] * (x.dim() - 1))


def _random_affine(x, p, degrees=0.0, translate=0.0, scale=(1.0, 1.0), integer_shift=0):
    """Rotate, scale and translate each sample by its own random amounts (zero fill outside)."""
    n, dev = len(x), x.device
    angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(degrees)
    zoom = torch.empty(n, device=dev).uniform_(*scale)
    if integer_shift:  # whole pixels, as a padded random crop does
        size = torch.tensor([x.shape[-1], x.shape[-2]], device=dev)
        shift = torch.randint(-integer_shift, integer_shift + 1, (n, 2), device=dev) * 2 / size
    else:
        shift = (torch.rand(n, 2, device=dev) * 2 - 1) * 2 * translate
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="nearest" if integer_shift else "bilinear", align_corners=False)
    return torch.where(_chosen(x, p), moved, x)


def flip(data, p):
    return lambda x, y: (torch.where(_chosen(x, p), x.flip(-1), x), y)


def crop(data, p, padding):
    return lambda x, y: (_random_affine(x, p, integer_shift=padding), y)


def rotate(data, p, degrees):
    return lambda x, y: (_random_affine(x, p, degrees=degrees), y)


def affine(data, p, degrees, translate, scale):
    return lambda x, y: (_random_affine(x, p, degrees, translate, tuple(scale)), y)


def noise(data, p, std):
    return lambda x, y: (x + std * torch.randn_like(x) * _chosen(x, p), y)


def erase(data, p, scale):
    """Random erasing: each chosen sample loses a random square covering scale[0]..scale[1] of its area."""
    def apply(x, y):
        n, (h, w), dev = len(x), x.shape[-2:], x.device
        side = (torch.empty(n, device=dev).uniform_(*scale) * h * w).sqrt()
        top = torch.rand(n, device=dev) * (h - side).clamp_min(0)
        left = torch.rand(n, device=dev) * (w - side).clamp_min(0)
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + side).view(-1, 1, 1))
               & (cols >= left.view(-1, 1, 1)) & (cols < (left + side).view(-1, 1, 1))).unsqueeze(1)
        return torch.where(box & _chosen(x, p), torch.zeros_like(x), x), y
    return apply


def blur(data, p, kernel_size, sigma):
    from torchvision.transforms.v2 import functional as TF

    def apply(x, y):
        s = float(torch.empty(1).uniform_(*sigma))
        return torch.where(_chosen(x, p), TF.gaussian_blur(x, [kernel_size, kernel_size], [s, s]), x), y
    return apply


def color(data, p, brightness, contrast, saturation, hue, groups):
    """Colour jitter with per-sample brightness, contrast and saturation; hue per group of samples."""
    from torchvision.transforms.v2 import functional as TF

    def factor(x, amount):
        return torch.empty(len(x), 1, 1, 1, device=x.device).uniform_(1 - amount, 1 + amount)

    def apply(x, y):
        out = x * factor(x, brightness)
        gray = TF.rgb_to_grayscale(out)
        out = (out - gray.mean((2, 3), keepdim=True)) * factor(x, contrast) + gray.mean((2, 3), keepdim=True)
        out = (out - gray) * factor(x, saturation) + gray
        out = out.clamp(0, 1)
        if hue:
            out = torch.cat([TF.adjust_hue(c, float(torch.empty(1).uniform_(-hue, hue))) for c in out.tensor_split(groups)])
        return torch.where(_chosen(x, p), out, x), y
    return apply


def _policy(make: Callable) -> Callable:
    """A torchvision auto-augmentation policy, drawn once per group of samples."""
    def factory(data, groups, **knobs):
        policy = make(**knobs)
        return lambda x, y: (torch.cat([policy(c) for c in x.tensor_split(groups)]), y)
    return factory


def randaugment(data, num_ops, magnitude, groups):
    from torchvision.transforms import v2
    return _policy(v2.RandAugment)(data, groups, num_ops=num_ops, magnitude=magnitude)


def autoaugment(data, policy, groups):
    from torchvision.transforms import v2
    return _policy(lambda: v2.AutoAugment(v2.AutoAugmentPolicy(policy)))(data, groups)


def trivialaugment(data, groups):
    from torchvision.transforms import v2
    return _policy(v2.TrivialAugmentWide)(data, groups)


def _mixing(transform: str):
    """MixUp / CutMix from torchvision v2: they mix whole batches and return soft labels."""
    def factory(data, alpha):
        from torchvision.transforms import v2

        mix = getattr(v2, transform)(alpha=alpha, num_classes=data.num_classes)

        def apply(x, y):
            if x.dim() < 4:  # features and sequences: v2 wants (N, C, H, W); mixup treats them as one row
                mixed, soft = mix(x.reshape(len(x), 1, 1, -1), y)
                return mixed.reshape(x.shape), soft
            return mix(x, y)
        return apply
    return factory


mixup = _mixing("MixUp")
cutmix = _mixing("CutMix")


def make_augmentation(cfg: dict[str, AugmentConfig], data: Data) -> Augment | None:
    """The chosen augmentations in list order. With both mixup and cutmix, each batch gets one of them."""
    steps, mixers = [], []
    for name, aug_cfg in cfg.items():
        mixes = AUGMENTATIONS.trait(name, "mixes_labels")
        (mixers if mixes else steps).append(AUGMENTATIONS.create(aug_cfg, data, kind=name))
    if not steps and not mixers:
        return None

    def augment(x, y):
        for step in steps:
            x, y = step(x, y)
        if mixers:
            x, y = mixers[int(torch.randint(len(mixers), ()))](x, y)
        return x, y
    return augment
