"""preprocessing.json: a run's record of how its inputs were read and normalized (the statistics fitted on its
training split, the input shape and dtype, the class names), written by the run and read by predict, export and
a run that starts from its weights."""
from __future__ import annotations

import json
from pathlib import Path

from ..registry import MODELS, lazy


def write_preprocessing(path: Path, record: dict) -> None:
    """One top-level key per line (long lists of statistics stay on theirs), written whole or not at all."""
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in record.items()) + "\n}\n"
    path.with_name(path.name + ".tmp").write_text(text)
    path.with_name(path.name + ".tmp").replace(path)


def saved_statistics(weights: str) -> dict | None:
    """The input normalization a pretrained run saved (model.weights: its directory or a file in it), with
    the input shape it applies to and where it came from; None where that run saved none."""
    path = Path(weights).expanduser()
    record_file = (path if path.is_dir() else path.parent) / "preprocessing.json"
    if not record_file.is_file():
        return None
    record = json.loads(record_file.read_text())
    return {**record["normalize"], "input_shape": record["input_shape"], "source": str(record_file.parent)}


def pretrained_statistics(model) -> dict | None:
    """The input statistics the starting weights expect: those a trainrun run saved (model.weights naming a run
    or a file in one), else the per-channel mean and std a library architecture's pretrained weights were trained
    with (model=torchvision or timm given their library's weights, by name or as a fetched file); None without
    either."""
    if not model.weights:
        return None
    saved = saved_statistics(model.weights) if Path(model.weights).expanduser().exists() else None
    if saved is not None:
        return saved
    published = MODELS.trait(model.kind, "weights_statistics")
    if not published:
        return None
    statistics = lazy(published)(model.name)
    if statistics is None:
        return None
    mean, std = statistics
    return {"kind": "standardize", "channel_mean": mean, "channel_std": std,
            "source": f"model={model.kind} {model.name}'s pretrained weights"}
