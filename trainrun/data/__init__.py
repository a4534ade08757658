"""Datasets as tensors: loaded once, split with a seeded permutation, kept on the training device.

Batches are index slices of these tensors (batches.py); augmentation and normalization act on whole
batches. Images are kept as uint8, shape (N, C, H, W) (a quarter of float32's memory), and become float32
in [0, 1] per batch on the training device, in `Data.fetch`; sequences are (N, C, L), features (N, D).
Classification targets are int64 class indices; regression targets float32 of shape (N, 1).

One module per kind of data, as conf/data/ offers them: shipped.py (digits ... synthetic_images), folder.py,
table.py, arrays.py, custom.py; then normalize.py (input statistics), load.py (split and place), stream.py
(splits that are not tensors in memory) and batches.py (samplers).
"""
from .batches import Batches
from .load import load, storage_device
from .types import Data, Datasets, Loaded, Split

__all__ = ["Batches", "Data", "Datasets", "Loaded", "Split", "load", "storage_device"]
