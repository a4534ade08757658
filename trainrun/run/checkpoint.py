"""Checkpoints: atomic writes, safe reads, every RNG, and the config a resumed run must keep.

A checkpoint is written to a temporary file, flushed, fsynced and renamed over the old one, so a
crash at any moment leaves either the previous checkpoint or the new one, never half of one.
Reading uses torch.load(weights_only=True): a checkpoint file cannot run code.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..config import CheckpointConfig, upgraded
from ..errors import ConfigError
from ..runfiles import read_checkpoint

# what may differ between a run and its resumption: where and how long it runs, not what it trains
RESUMABLE_KEYS = ("trainer.resume", "trainer.epochs", "trainer.max_steps", "trainer.device", "trainer.checkpoint",
                  "logger")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: unreadable, or from another configuration."""


def save_atomic(state: dict, path: Path, previous: Path | None = None) -> None:
    """Write to a temporary file, fsync, then rename: a crash mid-write leaves the previous file intact.
    `previous`: the file being replaced is kept there (a hard link, so `path` never goes missing)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if previous is not None and path.is_file():
            linked = previous.with_name(previous.name + ".tmp")
            linked.unlink(missing_ok=True)
            os.link(path, linked)
            os.replace(linked, previous)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}; the previous checkpoint is intact") from None


class BackgroundWriter:
    """Checkpoints written by one background thread, so the fsync does not stall training.

    `save` snapshots the state (a copy of every tensor) before it returns, so the file holds exactly
    the state at that step; writes happen one at a time, in order. An error in a write is raised by
    the next `save` or by `wait`.
    """

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending = []

    def save(self, state: dict, path: Path, copy: bool = True, previous: Path | None = None) -> dict:
        """Copy the state now (unless the caller hands over tensors it will not change), write it later;
        returns the copy."""
        self.raise_errors(block=False)
        snapshot = _copy_tensors(state) if copy else state
        self.pending.append(self.pool.submit(save_atomic, snapshot, path, previous))
        return snapshot

    def raise_errors(self, block: bool) -> None:
        done = [f for f in self.pending if block or f.done()]
        self.pending = [f for f in self.pending if f not in done]
        for future in done:
            future.result()

    def wait(self) -> None:
        """Block until every checkpoint is on disk."""
        self.raise_errors(block=True)


PREVIOUS = "last.prev.pt"


class Checkpointer:
    """last.pt and best.pt of one run, written by rank 0 in the background.

    `parts` are the objects whose state a resume needs (model, optimizer, scheduler, scaler, early stopping),
    each with state_dict/load_state_dict, saved under its name; the loop's own counters come with each save.
    last.pt is due at the end of the first epoch at the latest (a short run never loses everything), then on
    the configured schedule. best.pt holds only the best weights, their epoch and metrics, and is written
    with the next last.pt after it changed, before it: a crash between the two never leaves a last.pt whose
    early stopping knows a better epoch than the weights in best.pt.
    """

    def __init__(self, run_dir: Path, parts: dict, config: dict, world, cfg: CheckpointConfig):
        import time

        self.run_dir, self.parts, self.config, self.world, self.cfg = run_dir, parts, config, world, cfg
        self.clock, self.last_time, self.saved_once = time.perf_counter, time.perf_counter(), False
        self.writer = BackgroundWriter()
        self.best_state: dict | None = None
        self.best_epoch, self.best_metrics, self.best_written = 0, {}, 0
        self.best_weights = "raw"  # or the averaging's name (ema, swa) when its weights were the better
        self.rng_states = rng_states  # a stacked run's own generators instead of the process's (stack/)
        self.keep_previous = False  # last.pt's previous version kept as PREVIOUS (a population's, stack/pbt.py)

    def due(self, step: int, epoch_ended: int = 0) -> bool:
        """At the end of the first epoch (when nothing was saved yet) and of every n-th, every n-th step,
        or n seconds after the last."""
        epochs, steps, seconds = self.cfg.every_n_epochs, self.cfg.every_n_steps, self.cfg.every_n_seconds
        return bool((epoch_ended and (not self.saved_once or (epochs and epoch_ended % epochs == 0)))
                    or (steps and step % steps == 0) or (seconds and self.clock() - self.last_time >= seconds))

    def keep_best(self, model, epoch: int, metrics: dict, weights: str = "raw") -> None:
        """The best weights so far, in memory (a copy: best_state is never changed in place)."""
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.best_epoch, self.best_metrics, self.best_weights = epoch, metrics, weights

    def save(self, counters: dict, per_rank: dict) -> None:
        """Snapshot now, write in the background. `per_rank` (each rank's RNG and partial epoch sums) is
        gathered from every rank: a collective, so every rank checkpoints at the same step."""
        self.last_time, self.saved_once = self.clock(), True
        ranks = self.world.gather({**per_rank, "rng": self.rng_states()})
        if not self.world.is_main:
            return
        if self.cfg.save_best and self.best_state is not None and self.best_written != self.best_epoch:
            self.writer.save({"model": self.best_state, "epoch": self.best_epoch, "metrics": self.best_metrics,
                              "weights": self.best_weights, "config": self.config}, self.run_dir / "best.pt",
                             copy=False)
            self.best_written = self.best_epoch
        if not self.cfg.save_last:
            return
        state = {name: part.state_dict() if part is not None else None for name, part in self.parts.items()}
        state.update(counters, best_metrics=self.best_metrics, config=self.config,
                     per_rank=[{k: v for k, v in r.items()} for r in ranks])
        self.writer.save(state, self.run_dir / "last.pt", previous=self.run_dir / PREVIOUS if self.keep_previous else None)

    def restore(self, saved: dict) -> dict:
        """Load every part and this rank's RNG; returns the saved counters and this rank's own entries."""
        for name, part in self.parts.items():
            if part is not None:
                part.load_state_dict(saved[name])
        self.best_metrics, self.saved_once = saved["best_metrics"], True
        best = self.run_dir / "best.pt"
        if best.is_file():
            saved_best = read_checkpoint(best)
            self.best_state, self.best_epoch = saved_best["model"], saved_best["epoch"]
            self.best_weights = saved_best.get("weights", "raw")
            self.best_written = self.best_epoch
        own = self.world.own(saved["per_rank"])
        set_rng_states(own["rng"])
        return {**saved, **own}

    def wait(self) -> None:
        self.writer.wait()


def _copy_tensors(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _copy_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_tensors(v) for v in value)
    return value


def rng_states() -> dict:
    """Every RNG, in types that torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, gauss),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def find_run(resume: str, outputs: Path = Path("outputs")) -> Path:
    """The run directory `trainer.resume` names: a path, or `last` for the newest run (by when it started).
    A run is a directory with a last.pt or, killed before its first checkpoint, Hydra's record of its config."""
    if resume == "last":
        started = sorted(outputs.glob("**/.hydra/config.yaml"), key=lambda p: p.stat().st_mtime)
        if not started:
            raise CheckpointError(f"trainer.resume=last: no run under {outputs.resolve()}")
        return started[-1].parent.parent
    run_dir = Path(resume).expanduser()
    if not (run_dir / "last.pt").is_file() and not (run_dir / ".hydra" / "config.yaml").is_file():
        raise CheckpointError(f"trainer.resume={resume}: no run there (no last.pt, no .hydra/config.yaml)")
    return run_dir


def resumed_config(composed: DictConfig, saved: dict, overridden: list[str]) -> DictConfig:
    """The saved run's config, with only the keys a resumption may change taken from this command.

    An explicit override of anything else must agree with the saved run; otherwise it is another run.
    """
    saved_cfg = OmegaConf.create(upgraded(saved))  # in place: the caller compares with it too
    for key in overridden:
        if key.startswith(RESUMABLE_KEYS):
            continue
        ours, theirs = OmegaConf.select(composed, key), OmegaConf.select(saved_cfg, key)
        if _plain(ours) != _plain(theirs):
            raise CheckpointError(f"trainer.resume: this run was trained with {key}={_short(theirs)}, "
                                  f"not {_short(ours)}; resume without that override, or start a new run")
    # only what this command sets: `trainrun trainer.resume=D` alone continues with the run's own epochs
    for key in ["trainer.resume", *(k for k in overridden if k.startswith(RESUMABLE_KEYS))]:
        OmegaConf.update(saved_cfg, key, OmegaConf.select(composed, key), merge=False)
    OmegaConf.set_struct(saved_cfg, True)
    return saved_cfg


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) or OmegaConf.is_list(value) else value


def _short(value) -> str:
    value = _plain(value)
    if isinstance(value, dict) and "kind" in value:
        return str(value["kind"])
    return str(value)
