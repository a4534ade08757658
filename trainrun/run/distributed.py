"""One run over several processes with PyTorch's own engine: torchrun and DistributedDataParallel.

`torchrun --nproc_per_node=N -m trainrun ...` or `trainrun trainer.devices=N` (which launches the same
through torch.distributed.run). NCCL on GPUs, gloo on CPU. Every rank loads the same data and walks the
same permutation; each takes its shard of every global batch, so a run on N processes takes the same
steps as one process with the same global batch. Only rank 0 logs, checkpoints and prints.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .checkpoint import CheckpointError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx):
        """This rank's part of a global batch (an index tensor or a slice)."""
        if self.size == 1:
            return idx
        if isinstance(idx, slice):
            return slice(idx.start + self.rank, idx.stop, self.size)
        return idx[self.rank::self.size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place, returned)."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, true when it is true on any rank (so every rank stops at the same step)."""
        if self.size == 1:
            return list(flags)
        values = torch.tensor([int(f) for f in flags], device=_collective_device())
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    def gather(self, value) -> list | None:
        """`value` from every rank, in rank order, on rank 0 (None on the others)."""
        if self.size == 1:
            return [value]
        values = [None] * self.size if self.is_main else None
        dist.gather_object(value, values, dst=0)
        return values

    def own(self, per_rank: list):
        """This rank's entry of a per-rank list saved by `gather`."""
        if len(per_rank) != self.size:
            raise CheckpointError(f"trainer.resume: this run was checkpointed by {len(per_rank)} process(es), "
                                  f"not {self.size}; resume it with trainer.devices={len(per_rank)}")
        return per_rank[self.rank]

    def agree(self, decision: bool) -> bool:
        """Rank 0's decision, on every rank (early stopping is decided once)."""
        if self.size == 1:
            return decision
        flag = torch.tensor([int(decision)], device=_collective_device())
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def environment() -> World:
    """The world torchrun describes in the environment (one process when it is not there)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group; each rank takes its own GPU."""
    if world.size == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def worker_arguments(argv: list[str]) -> list[str]:
    """Ranks other than 0 write nothing of their own: their Hydra output goes to a scratch directory."""
    world = environment()
    if world.is_main:
        return argv
    scratch = os.path.join(tempfile.gettempdir(), f"trainrun-rank{world.rank}-{os.environ.get('MASTER_PORT', '0')}")
    return [*argv, f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


def launch(devices: int, argv: list[str]) -> int:
    """`trainrun trainer.devices=N`: run the same command on N local processes through torch.distributed.run."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    # one directory for the run, decided here, so rank 0 writes where the user expects (a resumed run's own)
    if not any(a.startswith(("hydra.run.dir=", "trainer.resume=")) for a in argv):
        import time

        argv = [*argv, f"hydra.run.dir=outputs/{time.strftime('%Y-%m-%d')}/{time.strftime('%H-%M-%S')}"]
    threads = max(1, (os.cpu_count() or 1) // devices)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # N processes share the cores, not N x all of them
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # not its notes on shutting down
    try:
        torchrun(["--standalone", f"--nproc_per_node={devices}", "-m", "trainrun", *argv])
    except SignalException as e:  # Ctrl-C or SIGTERM reached every process: the ranks checkpointed and said so
        return 128 + e.sigval
    except Exception as e:  # torchrun raises ChildFailedError when a rank fails; its message is enough
        print(f"error: a training process failed: {str(e).splitlines()[0][:200]}", file=sys.stderr)
        return 1
    return 0
