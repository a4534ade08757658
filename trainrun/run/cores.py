"""Sharing the CPU cores with the other trainrun processes of this user.

torch's OpenMP threads wait for work by spinning, so two processes that each run one thread per core fight for
every core: on this project's 2-core machine a digits run and an MNIST run started together took 9.6x and 15.6x
their time alone, against 1.02x and 1.00x with one thread each (`python scripts/bench.py --only sharing`). A run
whose threads are not set (`trainer.threads: null`) on the CPU therefore registers itself (a locked file in a
folder of the temporary directory) and, at each epoch's start and at most every SECONDS, takes its share of the
cores: all of them alone, cores // n beside n - 1 others. A run alone keeps every core, so its results are the
same as ever; runs that share the machine change their thread count when another starts or ends, and sums are
then added in another order (equal up to rounding). A thread count given (trainer.threads, a parallel
launcher's share, or OMP_NUM_THREADS) is kept, and so is every core for a run with trainer.deterministic=true.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

import torch

SECONDS = 2.0  # how often the other processes are counted, at most


def registry() -> Path:
    return Path(tempfile.gettempdir()) / f"trainrun-running-{os.getuid()}"


def live(path: Path) -> bool:
    """Whether the process that created `path` still holds its lock (a file left by a dead one is removed)."""
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
        path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    return False


class CoreShare:
    def __init__(self):
        self.own = None  # this process's registered, locked file
        self.checked = -SECONDS
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def threads(self) -> int:
        """This process's share: the cores over the live trainrun processes (this one included)."""
        try:
            if self.own is None:
                folder = registry()
                folder.mkdir(exist_ok=True)
                self.own = open(folder / str(os.getpid()), "wb")
                fcntl.flock(self.own, fcntl.LOCK_EX)
            others = sum(live(p) for p in registry().iterdir() if p.name != str(os.getpid()))
        except OSError:  # no writable temporary directory: every core, as before
            return self.cores
        return max(1, self.cores // (1 + others))

    def adjust(self) -> None:
        """Take this process's share now, unless it was taken less than SECONDS ago."""
        now = time.monotonic()
        if now - self.checked < SECONDS:
            return
        self.checked = now
        threads = self.threads()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)


SHARE = CoreShare()


def shares_cores(threads: int | None, device: torch.device, world_size: int, deterministic: bool) -> bool:
    """Whether a run adjusts its threads to the others: no thread count given, on the CPU, one process, and not
    deterministic (a thread count that changed with the machine's load would change the last bits of its sums)."""
    return (threads is None and "OMP_NUM_THREADS" not in os.environ and device.type == "cpu" and world_size == 1
            and not deterministic)
