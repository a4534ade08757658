"""A run's files, read in one place: predict, export, `model.weights` and a sweep's choice of its best run read
a run through here, so a damaged file is named, with what is wrong with it and what the user can do, in one line.

A run writes each file whole (atomically): .hydra/config.yaml (its composed config) and preprocessing.json (how
its inputs were read and normalized, its classes) when it starts, last.pt (everything to resume) and best.pt
(the best epoch's weights) as it trains, metrics.json when it ends. A file cut or edited by hand afterwards is
what this module meets.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError


class DamagedRun(ConfigError):
    """A run's file that is missing, cut or not what the run wrote."""


PREPROCESSING_KEYS = ("task", "num_outputs", "input_shape", "normalize")
RESTORE = "restore it from a copy, or train the run again"


def read_json(path: Path, keys: tuple[str, ...] = (), remedy: str = RESTORE) -> dict:
    """The JSON object in `path`, holding `keys`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DamagedRun(f"{path} is missing; {remedy}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedRun(f"{path} cannot be read ({e}); {remedy}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty" if not text.strip() else f"not JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        raise DamagedRun(f"{path} is damaged ({what}); {remedy}") from None
    if not isinstance(value, dict):
        raise DamagedRun(f"{path} is damaged (a JSON {type(value).__name__}, not an object); {remedy}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise DamagedRun(f"{path} is damaged (it has no {', '.join(missing)}); {remedy}")
    return value


def preprocessing(run_dir: Path) -> dict:
    """preprocessing.json, with what predict, export and a run starting from these weights read of it."""
    path = run_dir / "preprocessing.json"
    if not path.is_file():
        raise DamagedRun(f"{run_dir} has no preprocessing.json (trained by an older trainrun, which did not save its "
                         "input statistics, or deleted): train it again to use it")
    record = read_json(path, PREPROCESSING_KEYS)
    normalize, shape = record["normalize"], record["input_shape"]
    if not isinstance(normalize, dict) or "kind" not in normalize:
        raise DamagedRun(f"{path} is damaged (its normalize holds no kind); {RESTORE}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise DamagedRun(f"{path} is damaged (input_shape {shape!r} is not a list of sizes); {RESTORE}")
    if not isinstance(record["num_outputs"], int) or record["num_outputs"] < 1:
        raise DamagedRun(f"{path} is damaged (num_outputs {record['num_outputs']!r}); {RESTORE}")
    return record


def class_names(record: dict) -> list[str] | None:
    """What each output of a classification run stands for (its index where the data named none)."""
    if record.get("task") != "classification":
        return None
    return list(record.get("class_names") or [str(i) for i in range(record["num_outputs"])])


def metrics(run_dir: Path) -> dict | None:
    """metrics.json, or None for a run that has not ended (killed, or still training)."""
    path = run_dir / "metrics.json"
    return read_json(path, remedy="it is written when the run ends: resume the run with "
                                  f"trainrun trainer.resume={run_dir} or train it again") if path.is_file() else None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint (best.pt, last.pt), on the CPU."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DamagedRun(f"no checkpoint at {path}") from None
    except Exception as e:
        # torch's words for a file cut short ("PytorchStreamReader failed reading zip archive: ..."); for a file that is
        # not a PyTorch file at all, whatever its unpickler met ("pop from empty list", advice on weights_only)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        reason = reason.split(". ")[0][:80] if reason.startswith("PytorchStreamReader") else "not a PyTorch file"
        raise DamagedRun(f"{path} is unreadable (truncated or corrupt: {reason}); expected a trainrun checkpoint or a "
                         "state dict; nothing was changed") from None


def epoch_tag(key: str) -> str:
    """train/loss -> loss/train (curves first in TensorBoard's alphabetical order), val_ema/loss (the averaged
    weights') -> loss/val_ema beside it; epoch -> time/epoch."""
    split, _, name = key.partition("/")
    if split in ("train", "val") or split.startswith("val_"):
        return f"{name}/{split}"
    return "time/epoch" if key == "epoch" else key


def epoch_curves(run_dir: Path) -> dict:
    """The per-epoch curves of a run's TensorBoard events, against epochs and wall time."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its reader logs each file it finishes
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    if "time/epoch" not in tags:
        return {}
    epochs = {e.step: int(e.value) for e in events.Scalars("time/epoch")}
    start = min(e.wall_time for e in events.Scalars(tags[0])) if tags else 0.0
    return {tag: [(epochs[e.step], e.wall_time - start, e.value) for e in events.Scalars(tag) if e.step in epochs]
            for tag in tags if tag.split("/")[0] in ("loss", "acc", "mae")}
