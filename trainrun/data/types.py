"""What the data are once loaded: Split (tensors in memory), Loaded (a loader's arrays), Datasets (a user's
torch Datasets) and Data (the splits with their shape, task, normalization and home)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch


PREPROCESSING_VERSION = 1


@dataclass
class Split:
    """A split held as tensors in memory (on the training device or the host). stream.DiskSplit and
    stream.DatasetSplit have the same interface for data that are not."""

    x: torch.Tensor
    y: torch.Tensor
    streams = False  # batches need no plan: they are slices of tensors already here

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def take(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]

    def plan(self, batches: list) -> None:
        pass

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.x), size):
            yield self.x[start:start + size]


@dataclass
class Loaded:
    """What a loader returns where a plain (x, y, x_test, y_test) tuple does not say enough."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    x_val: torch.Tensor | None = None  # a validation split of the data's own (else carved from train)
    y_val: torch.Tensor | None = None
    class_names: list[str] | None = None
    on_disk: bool = False  # the inputs are memory-mapped from a file already (nothing to spill to stream them)
    inputs: dict | None = None  # how the loader made its inputs (data=folder: channels, size), for new ones


@dataclass
class Datasets:
    """What data=custom returns when the user's function gives torch Datasets: streamed by a DataLoader."""

    train: object
    val: object | None = None
    test: object | None = None
    num_workers: int = 0
    num_classes: int | None = None


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    task: str  # classification | regression
    num_outputs: int
    normalize: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device  # the training device; the splits may live in host memory instead
    home: str = "device"  # where the data live, and why: shown in the run header
    memory_format: torch.memory_format = torch.contiguous_format
    class_names: list[str] | None = None  # what class index i stands for, where the data name their classes
    fitted: dict | None = None  # what was fitted on the train split: inputs' encoding, normalization
    shares: Data | None = None  # the data whose tensors this record shares, kept loaded while in use (load.Shared)

    def preprocessing(self) -> dict:
        """What predict and export need to turn new inputs into this run's (the run's preprocessing.json)."""
        sample = getattr(self.train, "x", None)  # a user's Dataset streams: its inputs are made float
        return {"version": PREPROCESSING_VERSION, "task": self.task, "num_outputs": self.num_outputs,
                "class_names": self.class_names, "input_shape": list(self.input_shape),
                "input_dtype": str(sample.dtype).removeprefix("torch.") if sample is not None else "float32",
                **(self.fitted or {})}

    def fetch(self, split: Split, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `idx` (a slice or an index tensor) of a split, on the training device, as float inputs."""
        x, y = split.take(idx)
        if x.device != self.device:  # from (pinned) host memory, without waiting for the copy
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:  # pixels: converted on the device, after the (4x smaller) copy
            x = x.float().div_(255)
        if self.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=self.memory_format)
        return x, y

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    @property
    def gives(self) -> str:
        """What a model or augmentation may need (registry: the `needs` trait): images, sequences or features."""
        return {3: "images", 2: "sequences"}.get(len(self.input_shape), "features")

    @property
    def metric(self) -> str:
        return "acc" if self.task == "classification" else "mae"

    @property
    def num_classes(self) -> int:
        return self.num_outputs if self.task == "classification" else 0
