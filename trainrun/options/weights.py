"""model.weights: the weights a run starts from (a run's directory, a sweep's best run, a trainrun checkpoint, a
state dict or a .safetensors file, or a library's pretrained weights), loaded only where they fit: every tensor
of the same name and shape, except the output layer, which is replaced when its size or its classes differ. The
input statistics those weights expect come with them (the starting run's preprocessing.json)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .. import runfiles
from ..config import ModelConfig
from ..errors import ConfigError
from ..registry import MODELS, lazy
from ..runfiles import read_checkpoint

log = logging.getLogger("trainrun")


def weights_path(path: str) -> Path:
    """The file model.weights names: a weights file, a run directory (its best.pt, else its last.pt) or a sweep's
    (its best run's); a directory without weights is named with what it lacks."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"model.weights={path}: no such file or directory (give a run directory, a sweep's, a .pt "
                          "or a .safetensors file)")
    if not p.is_dir():
        return p
    if (p / "multirun.yaml").is_file():
        from ..sweeps.summary import best_run

        p = best_run(p)
    for name in ("best.pt", "last.pt"):
        if (p / name).is_file():
            return p / name
    if (p / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"model.weights={path}: this run has no best.pt or last.pt yet (stopped before its first "
                          f"epoch ended); finish it with trainrun trainer.resume={p}, or give another run")
    raise ConfigError(f"model.weights={path}: this directory holds no run (no best.pt, last.pt or .hydra/config.yaml); "
                      "give a run directory, a sweep's, a .pt or a .safetensors file")


def read_state(path: str) -> dict:
    """Model weights from a run or sweep directory, a trainrun checkpoint, a state dict or a safetensors file."""
    p = weights_path(path)
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(f"{path} is a safetensors file: pip install safetensors") from None
        try:
            return load_file(str(p))
        except Exception as e:
            raise ConfigError(f"cannot read weights from {p}: {str(e).splitlines()[0][:120]}") from None
    state = read_checkpoint(p)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        held = "no tensor" if isinstance(state, dict) and not state else f"a {type(state).__name__}"
        raise ConfigError(f"model.weights={path}: {p.name} holds {held}, not weights (a state dict of named tensors, "
                          "a trainrun checkpoint or a .safetensors file)")
    return state


def saved_record(weights: str) -> dict | None:
    """The preprocessing.json of the run whose weights model.weights names (a file in a run's directory, the
    directory, or a sweep's); None for weights from elsewhere (a state dict or .safetensors file on its own)."""
    if not Path(weights).expanduser().exists():
        return None  # a library's weights, by name
    run_dir = weights_path(weights).parent
    if not (run_dir / "preprocessing.json").is_file():
        return None
    return {**runfiles.preprocessing(run_dir), "source": str(run_dir)}


def saved_statistics(weights: str) -> dict | None:
    """The input normalization a pretrained run saved, with the input shape it applies to and where it came
    from; None where that run saved none."""
    record = saved_record(weights)
    if record is None:
        return None
    return {**record["normalize"], "input_shape": record["input_shape"], "source": record["source"]}


def pretrained_statistics(model) -> dict | None:
    """The input statistics the starting weights expect: those a trainrun run saved (model.weights naming a run
    or a file in one), else the per-channel mean and std a library architecture's pretrained weights were trained
    with (model=torchvision or timm given their library's weights, by name or as a fetched file); None without
    either."""
    if not model.weights:
        return None
    saved = saved_statistics(model.weights)
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


def load_weights(model: nn.Module, spec: ModelConfig, classes: list[str] | None) -> set[str]:
    """model.weights into the model, said with how many tensors it took; the names of those loaded. RGB weights
    of a convolution that takes one channel here are summed over their three: the same as repeating a gray
    image three times."""
    library = MODELS.trait(spec.kind, "weight_names")
    if library and spec.weights in lazy(library)(spec.name):
        state = lazy(MODELS.trait(spec.kind, "library_weights"))(spec.name, spec.weights)
        source = f"{spec.kind}'s {spec.name} {spec.weights}"
    else:
        state, source = read_state(spec.weights), spec.weights
    own = model.state_dict()
    record = saved_record(spec.weights)
    theirs = runfiles.class_names(record) if record else None
    for key, value in state.items():
        mine = own.get(key)
        if mine is not None and value.dim() == 4 and value.shape[1] == 3 and mine.shape == (
                value.shape[0], 1, *value.shape[2:]):
            state[key] = value.sum(1, keepdim=True)
    differ = (f"was trained on the classes {_listed(theirs)}, this run's are {_listed(classes)}"
              if theirs and classes and theirs != classes else None)
    loaded = load_matching(model, state, differ)
    log.warning("model.weights: loaded %d of the model's %d tensors from %s", len(loaded), len(own), source)
    return loaded


def load_matching(model: nn.Module, state: dict, classes_differ: str | None = None) -> set[str]:
    """The weights' tensors into a model with the same layers (the same tensor names and shapes, so the same
    architecture). Only the output layer may differ: in size (another number of outputs), or in meaning
    (`classes_differ`: the starting run's classes are not this run's); it is then initialized anew, and said.
    Returns the names loaded."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        first = f"it has no tensor {missing[0]}" if missing else f"its tensor {extra[0]} is not part of this model"
        raise ConfigError(f"model.weights: {first} (another architecture?); it holds {len(state)} tensors, "
                          f"this model {len(own)}")
    head = head_name(model)
    in_head = [k for k in own if head and k.startswith(f"{head}.")]
    made = tuple(f"{name}." for name in getattr(model, "made_for_the_data", ()))  # a small-input stem
    reshaped = [k for k in own if state[k].shape != own[k].shape]
    others = [k for k in reshaped if k not in in_head and not k.startswith(made)]
    if others:
        name = others[0]
        raise ConfigError(f"model.weights: {name} is {tuple(state[name].shape)} there and {tuple(own[name].shape)} here "
                          f"(another width?); only the output layer may differ ({len(others)} tensors do)")
    resized = any(k in in_head for k in reshaped)
    renewed = {k for k in reshaped if k.startswith(made)}
    replaced = (set(in_head) if resized or classes_differ else set()) | renewed
    model.load_state_dict({k: v for k, v in state.items() if k not in replaced}, strict=False)
    if resized or classes_differ:
        why = "has another size here" if resized else classes_differ
        log.warning("model.weights: the output layer %s %s; it is replaced (initialized anew)", head, why)
    if renewed:
        log.warning("model.weights: %s, made for this data's small images, starts anew", ", ".join(sorted(renewed)))
    return set(own) - replaced


def new_head(model: nn.Module) -> set[str]:
    """The output layer initialized anew (the note: "replace the output layer"); its tensors' names."""
    head = head_name(model)
    if head is None:
        raise ConfigError("model.head_only and model.new_head need a Linear output layer; this model has none: "
                          "use model.freeze")
    model.get_submodule(head).reset_parameters()
    return {f"{head}.{name}" for name, _ in model.get_submodule(head).named_parameters()}


def head_name(model: nn.Module) -> str | None:
    """The output layer: the last Linear in the model (None for a model without one)."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


def _listed(names: list[str]) -> str:
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
