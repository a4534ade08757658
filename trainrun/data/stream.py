"""Splits that are not tensors in memory: rows memory-mapped on disk, and a user's torch Dataset.

Both keep the in-memory Split's interface (`len`, `take(idx)`, `plan(batches)`), so the training loop
does not change: `plan` is handed an epoch's batches before the epoch starts (data.Batches does this),
and `take` returns each batch's rows, gathered while the previous step ran: by a background thread from
the memory map (torch's gather releases the GIL), or by the DataLoader's worker processes.
"""
from __future__ import annotations

import os
import queue
import threading
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..errors import DataError

AHEAD = 4  # batches gathered ahead of the step: enough to hide a gather behind a step, few enough to stay small


def host_budget_bytes(budget_gb: float | None) -> float:
    """data.host_memory_gb in bytes; null: half of this machine's memory (the rest is for the model, the
    optimizer, the page cache and everything else running)."""
    if budget_gb is not None:
        return budget_gb * 2**30
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2


def memory_map(x: torch.Tensor, directory: Path) -> torch.Tensor:
    """`x`, written once to a file under `directory` and memory-mapped back: its pages become the page
    cache's, which the kernel can drop, not the process's. The file is unlinked at once (the mapping
    keeps it alive until the process ends), so nothing is left behind."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"spill-{os.getpid()}-{uuid.uuid4().hex[:8]}.pt"
    try:
        torch.save(x, path)
        return torch.load(path, mmap=True, weights_only=True)
    finally:
        path.unlink(missing_ok=True)


def same(a, b) -> bool:
    if isinstance(a, slice) or isinstance(b, slice):
        return a == b
    return a.shape == b.shape and bool(torch.equal(a, b))


class Ahead:
    """(idx, rows) pairs from `pairs`, produced in a background thread at most AHEAD in advance."""

    def __init__(self, pairs: Iterator):
        self.queue: queue.Queue = queue.Queue(AHEAD)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(pairs,), daemon=True, name="trainrun-gather")
        self.thread.start()

    def _fill(self, pairs: Iterator) -> None:
        try:
            for pair in pairs:
                if not self._put(pair):
                    return
        except Exception as e:  # raised again in the training loop, where it can be reported
            self._put(e)
            return
        self._put(None)

    def _put(self, item) -> bool:
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take(self, idx):
        """The rows of `idx`; planned batches before it that were never taken (skipped by a resume) are
        dropped. None when `idx` was not planned."""
        while True:
            item = self.queue.get()
            if item is None:
                self.queue.put(None)  # stays exhausted
                return None
            if isinstance(item, Exception):
                raise item
            if same(item[0], idx):
                return item[1]

    def close(self) -> None:
        self.closed.set()
        self.thread.join()


class DiskSplit:
    """A split's `rows` of tensors memory-mapped from disk; y (small) may live in memory.

    With `pin` (training on an accelerator) batches are gathered ahead into pinned memory by a thread, so the
    copy to the device overlaps the step. Training on the CPU they are gathered in the step: there the thread
    competes with torch's own threads for the cores, and measured slower (scripts/bench_stream.py: 1.44x the
    in-memory epoch with the thread, against a gather that costs ~0.1 ms per batch of 64 CIFAR images)."""

    device = torch.device("cpu")

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, pin: bool):
        self.x, self.y, self.rows, self.pin = x, y, rows, pin
        self.streams = pin  # batches are planned (and gathered ahead) only where a copy can overlap
        self.ahead: Ahead | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def gather(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows[idx]
        x, y = self.x[rows], self.y[rows]
        return (x.pin_memory(), y.pin_memory()) if self.pin else (x, y)

    def plan(self, batches: list) -> None:
        if self.ahead:
            self.ahead.close()
        self.ahead = Ahead((idx, self.gather(idx)) for idx in batches)

    def take(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        found = self.ahead.take(idx) if self.ahead else None
        return found if found is not None else self.gather(idx)

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """The inputs in row order, `size` rows at a time (for statistics)."""
        for start in range(0, len(self.rows), size):
            yield self.x[self.rows[start:start + size]]


class PlannedBatches:
    """The DataLoader's batch sampler: the dataset indices of the batches `plan` was given last."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class DatasetSplit:
    """A split's `rows` of a user's map-style torch Dataset of (input, target) pairs, loaded by a DataLoader
    with worker processes. Uint8 inputs (decoded images) become floats in [0, 1] in Data.fetch, as everywhere."""

    streams = True
    device = torch.device("cpu")

    def __init__(self, dataset, rows: torch.Tensor, num_workers: int, pin: bool, persistent: bool):
        from torch.utils.data import DataLoader

        self.dataset, self.rows = ItemReader(dataset), rows
        self.sampler = PlannedBatches()
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=num_workers, pin_memory=pin,
                                 persistent_workers=persistent and num_workers > 0, collate_fn=collate)
        self.pending: Iterator | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def plan(self, batches: list) -> None:
        self.sampler.batches = [self.rows[idx].tolist() for idx in batches]
        self.pending = zip(batches, iter(self.loader))

    def take(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next((rows for planned, rows in self.pending or () if same(planned, idx)), None)
        if batch is None:
            self.pending = None
            batch = collate([self.dataset[i] for i in self.rows[idx].tolist()])
        if isinstance(batch, UnreadableItem):
            raise DataError(batch.message)
        return batch


@dataclass
class UnreadableItem:
    """An item whose reading raised, in the user's code: passed back from a DataLoader worker as a value (an
    exception from a worker arrives wrapped in its traceback), and raised as one DataError line in the run."""

    message: str


class ItemReader:
    """A user's Dataset, whose failing item becomes an UnreadableItem naming the item, the exception, and
    the user's file and line."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return self.dataset[i]
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            own = [f for f in frames if "site-packages" not in f.filename and "/trainrun/" not in f.filename]
            where = (own or frames)[-1]
            text = " ".join(str(error).split())[:160]
            return UnreadableItem(f"data: item {i} of the {type(self.dataset).__name__} raised "
                                  f"{type(error).__name__}: {text} ({where.filename}:{where.lineno})")


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor] | UnreadableItem:
    """(input, target) pairs -> a batch: inputs stacked, float inputs as float32; integer targets as int64
    class indices, float targets as float32 rows (regression). An unreadable item is passed on."""
    failed = next((item for item in items if isinstance(item, UnreadableItem)), None)
    if failed is not None:
        return failed
    xs = [torch.as_tensor(x) for x, _ in items]
    ys = [torch.as_tensor(y) for _, y in items]
    x = torch.stack(xs)
    if x.is_floating_point():
        x = x.float()
    y = torch.stack(ys)
    y = y.float().reshape(len(y), -1) if y.is_floating_point() else y.long().reshape(len(y))
    return x, y
