"""Every refusal that the config, or the config and the loaded data, can make: a new rule goes here.

`check(cfg)` runs every rule that needs only the config (and the file system): the run calls it, and both
sweepers call it on every value a sweep lists before the sweep's directory exists, so a sweep with one bad value
is refused at once. `check_data(cfg, data)` runs the rules that need the loaded data (shapes, classes, the task,
sizes), once, right after loading; `check_inputs` what the inputs hold (finite), before any statistic is fitted
on them; `check_model` what needs the built model (batch norm's last batch). `check_resume` is what a resume may
not change.

What only building can tell stays with the builder that builds it, and tests/test_check.py lists each one
(BUILD_TIME): a library's registry of models (torchvision, timm), the built model's layers (model.freeze, the
head), a weights file's contents, what the user's own code returns, the machine (CUDA), and the schedule
stepped over the run's length. A rule that moves here from a builder leaves that list.

Rules read traits from the option records (registry.py), never option names. No torch here: config
errors answer at once.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from .config import OPTION_GROUPS, Range, declared_fields, leaf_types, schema_at
from .errors import ConfigError, DataError
from .registry import (AUGMENTATIONS, DATASETS, LOSSES, MODELS, NORMS, OPTIMIZERS, PRECISIONS, REGISTRIES, SCHEDULERS, lazy,
                       unset)


def check(cfg, files: bool = True) -> None:
    """Raise ConfigError naming the first bad value of `cfg` (a composed DictConfig or the typed schema).
    `files=False`: not the user's files it names (a trained run, used without its training data)."""
    if isinstance(cfg, DictConfig):
        _known_keys(cfg)
        _declared_ranges(cfg)
    for group in (*OPTION_GROUPS, "loss"):
        node = getattr(cfg, group)
        if node is not None:
            _knobs(REGISTRIES[group], node, node.kind)
    for name, aug in cfg.augmentation.items():
        _knobs(AUGMENTATIONS, aug, name)
    _combinations(cfg)
    _norm_fits(cfg.model, cfg.norm)
    _transfer(cfg.model)
    _pruning(cfg.trainer.pruning)
    _study(cfg.study)
    if cfg.tune is not None:
        _tune(cfg)
    start = cfg.averaging.start_epoch
    if cfg.averaging.kind != "none" and start is not None and start > cfg.trainer.epochs:
        raise ConfigError(f"averaging.start_epoch={start} is after the run's last epoch (trainer.epochs="
                          f"{cfg.trainer.epochs}): nothing would be averaged")
    folds, fold = cfg.data.folds, cfg.data.fold
    if folds is not None and fold is None:
        raise ConfigError(f"data.folds={folds} runs every fold from the command line (trainrun data.folds={folds}); "
                          "in a search or a config file, give data.fold=k beside it")
    if fold is not None and (folds is None or fold >= folds):
        raise ConfigError(f"data.fold={fold}: " + ("give data.folds=K beside it (then 0 <= data.fold < K)"
                                                   if folds is None else f"folds are 0 to {folds - 1} (data.folds={folds})"))
    if cfg.trainer.fast_dev_run and (cfg.trainer.resume or cfg.tune is not None):
        raise ConfigError("trainer.fast_dev_run runs every stage once and keeps no run: not with "
                          + ("trainer.resume" if cfg.trainer.resume else f"tune={cfg.tune.kind}"))
    if files:
        check_files(cfg)


# ---------------------------------------------------------------------------------------------
# The schema: known keys, declared ranges, and each option's knobs

def check_job(hydra_context, sweep_config: DictConfig, overrides: list, files_only: bool = False,
              composer=None) -> None:
    """One job of a sweep composed as its run will be, and checked as the run checks it (`files_only`: only
    that the user's files it names exist): a sweeper calls this before the sweep's directory exists.
    `composer` (sweeps.compose.JobComposer): jobs of one shape composed once by Hydra."""
    from omegaconf import open_dict

    config = composer.compose(overrides, 0) if composer is not None else \
        hydra_context.config_loader.load_sweep_config(sweep_config, list(overrides))
    with open_dict(config):
        del config["hydra"]  # what the run is given
    (check_files if files_only else check)(config)


def _known_keys(cfg: DictConfig) -> None:
    unknown = _unknown_key(OmegaConf.to_container(cfg))
    if unknown:  # added with Hydra's +key=value: outside the schema, nothing would read it
        raise ConfigError(f"unknown key '{unknown}': not part of trainrun's config (see trainrun --cfg job)")


def _unknown_key(values: dict, path: tuple[str, ...] = ()) -> str | None:
    schema = schema_at(list(path))
    names = {f.name for f in dataclasses.fields(schema)} if schema else set()
    for key, value in values.items():
        if schema and not (key in names or (path == ("augmentation",))):
            return ".".join((*path, key))
        if isinstance(value, dict) and schema_at([*path, key]) is not None:
            found = _unknown_key(value, (*path, key))
            if found:
                return found
    return None


def _declared_ranges(cfg: DictConfig) -> None:
    try:  # every value at once: a select per key costs more than all the checks together
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException:
        values = None  # a value missing or not resolving: found and named key by key below
    # study.* first: a study's trainer.epochs reads ${study.epochs.${study.size}}, so a bad size is named as such
    for path, f, hint in sorted(declared_fields(), key=lambda field: field[0][0] != "study"):
        key = ".".join(path)
        value = _select(cfg, key) if values is None else _dig(values, path)
        _in_range(key, value, f.metadata.get("range"), int in leaf_types(hint))


def _select(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is required here: set {key}=...") from None
    except OmegaConfBaseException as error:  # an interpolation that does not resolve
        raise ConfigError(f"{key}: {str(error).splitlines()[0]}") from None


def _dig(values: dict, path: tuple):
    for part in path:
        if not isinstance(values, dict):
            return None
        values = values.get(part)
    return values


def _in_range(key: str, value: Any, rng: Range | None, integer: bool) -> None:
    if rng is not None and value is not None and value != MISSING and not rng.accepts(value, REGISTRIES):
        shown = list(value) if isinstance(value, ListConfig) else value
        raise ConfigError(f"{key}={shown} is invalid: expected {rng.describe(integer, REGISTRIES)}")


def check_node(node, schema, where: str) -> None:
    """Every declared range of `schema`'s fields on `node` (one group's config, e.g. the sweeper's pruner)."""
    for (name,), f, hint in declared_fields(schema):
        value = node[name] if name in node else None
        _in_range(f"{where}.{name}", value, f.metadata.get("range"), int in leaf_types(hint))


def _knobs(registry, node, kind: str) -> None:
    """A knob set that option `kind` does not take is an error naming the ones it does; a knob the option
    takes in a narrower range than the schema's (erase's `scale` is a fraction of the image) is checked in it."""
    record = registry[kind]
    where = f"augmentation.{kind}" if registry.group == "augmentation" else registry.group
    schema = schema_at([registry.group, kind] if registry.group == "augmentation" else [registry.group])
    for f, hint in ((f, h) for (_, f, h) in declared_fields(schema) if f.metadata.get("per_option")):
        value = node[f.name] if isinstance(node, DictConfig) else getattr(node, f.name)
        if unset(value):
            continue
        if f.name not in record.knobs:
            prefix = where if registry.group == "augmentation" else f"{registry.group}={kind}: {where}"
            raise ConfigError(f"{prefix}.{f.name} does not apply here; it takes: {', '.join(record.knobs) or 'no knobs'}")
        if f.name in record.ranges or registry.group == "augmentation":  # the rest: _declared_ranges did it
            _in_range(f"{where}.{f.name}", value, record.ranges.get(f.name, f.metadata.get("range")),
                      int in leaf_types(hint))
        if f.name in record.ordered and value[0] > value[1]:
            raise ConfigError(f"{where}.{f.name}={list(value)} is invalid: [low, high] with low <= high")
        other = record.traits.requires.get(f.name)
        if other and unset(node[other] if isinstance(node, DictConfig) else getattr(node, other)):
            raise ConfigError(f"{where}.{f.name}={value} needs {where}.{other} beside it")


# ---------------------------------------------------------------------------------------------
# What groups rule out together, from their options' traits

def _combinations(cfg) -> None:
    norm = NORMS[cfg.norm.kind]
    if norm.traits.batch_statistics and cfg.data.batch_size == 1:
        raise ConfigError(f"norm={cfg.norm.kind} cannot work with data.batch_size=1 (batch statistics of one sample); "
                          "use norm=layer or norm=group, or a larger batch")
    if cfg.regularization.max_norm is not None and norm.traits.reparametrizes:
        raise ConfigError(f"regularization.max_norm cannot bound weights that norm={cfg.norm.kind} reparametrizes; "
                          "use one of them")
    if OPTIMIZERS.trait(cfg.optimizer, "needs_closure") and PRECISIONS.trait(cfg.trainer.precision, "grad_scaler"):
        raise ConfigError(f"optimizer={cfg.optimizer.kind} cannot run with trainer.precision={cfg.trainer.precision} "
                          "(GradScaler has no closures)")
    if SCHEDULERS.trait(cfg.scheduler, "steps_on_metric") and cfg.scheduler.interval == "step":
        raise ConfigError(f"scheduler={cfg.scheduler.kind} steps on the validation metric, once per evaluation: "
                          "set scheduler.interval=epoch")
    gives = DATASETS.trait(cfg.data.kind, "gives")  # checked before a long load, where the data say
    if gives:
        _needs(cfg, gives, f"data={cfg.data.kind} gives {gives}")
    act = cfg.activation
    _ordered(f"activation={act.kind}: activation.lower", act.lower, "activation.upper", act.upper, strict=False)
    _ordered(f"activation={act.kind}: activation.min_val", act.min_val, "activation.max_val", act.max_val)
    _ordered(f"init={cfg.init.kind}: init.a", cfg.init.a, "init.b", cfg.init.b)


def _norm_fits(model, norm) -> None:
    """The norm fits the layers the model normalizes (known from the config for built-in models; a custom
    model's are checked as it is built)."""
    widths = MODELS.trait(model.kind, "normalized")
    if widths is None:
        return
    layers = lazy(widths)(model)
    if NORMS.trait(norm.kind, "needs_positions") and any(d == 0 for d, _ in layers) and not any(d for d, _ in layers):
        raise ConfigError(f"norm={norm.kind} needs a conv model (per-channel statistics over positions); "
                          f"model={model.kind} has dense layers only: use model=cnn, cnn1d or resnet, or norm=layer")
    knob = NORMS.trait(norm.kind, "divides")
    if knob:
        groups = getattr(norm, knob)
        for _, width in layers:
            if width % groups:
                raise ConfigError(f"norm.{knob}={groups} must divide every normalized layer's width; "
                                  f"model={model.kind} has a layer of {width}")


def _ordered(low_key: str, low, high_key: str, high, strict: bool = True, spec: str = "") -> None:
    if low is not None and high is not None and (low >= high if strict else low > high):
        relation = "be below" if strict else "not exceed"
        raise ConfigError(f"{low_key}={low:{spec}} must {relation} {high_key}={high:{spec}}")


def _needs(cfg, gives: str, what_data_gives: str) -> None:
    """The model and each augmentation that needs images (or sequences) against what the data give."""
    wanted = [(f"model={cfg.model.kind}", MODELS.trait(cfg.model.kind, "needs"))]
    wanted += [(f"augmentation {name}", AUGMENTATIONS.trait(name, "needs")) for name in cfg.augmentation]
    for who, needs in wanted:
        if needs and needs != gives:
            raise ConfigError(f"{who} needs {needs}; {what_data_gives}")
    shape = MODELS.trait(cfg.model.kind, "input_shape")
    if shape and gives != "features":  # the exact shape: check_data, once loaded
        raise ConfigError(f"model={cfg.model.kind} takes inputs of shape {shape} (data=polynomial); {what_data_gives}")


def _transfer(model) -> None:
    freeze = model.freeze
    whole = isinstance(freeze, int) and not isinstance(freeze, bool)
    names = isinstance(freeze, (list, tuple, ListConfig)) and all(isinstance(n, str) for n in freeze)
    if freeze is not None and not ((whole and freeze >= 0) or names):
        shown = list(freeze) if isinstance(freeze, ListConfig) else freeze
        raise ConfigError(f"model.freeze={shown} is invalid: expected the number of first layers to freeze "
                          "(an integer >= 0) or a list of layer names, e.g. model.freeze=[conv1,conv2]")
    if model.head_only and freeze is not None:
        raise ConfigError("model.head_only=true already freezes every layer but the head; leave model.freeze out")


def _pruning(pruning) -> None:
    """trainer.pruning is filled in by the Optuna sweeper; by hand it needs the storage its trial lives in."""
    if pruning.trial is not None and not pruning.storage:
        raise ConfigError(f"trainer.pruning.trial={pruning.trial} needs trainer.pruning.storage (the search's "
                          "Optuna storage); the Optuna sweeper sets both: trainrun -m hparams_search=optuna")
    if pruning.storage and pruning.trial is None:
        raise ConfigError("trainer.pruning.storage is set without trainer.pruning.trial (the trial this run is); "
                          "the Optuna sweeper sets both: trainrun -m hparams_search=optuna")


def _study(study) -> None:
    """A study is its stages: without one it would run a single default run and report on nothing."""
    if study.name and not study.stages:
        raise ConfigError(f"study.stages is empty: study {study.name} needs at least one stage")


def _tune(cfg) -> None:
    """What a learning-rate range test cannot do."""
    t = cfg.tune
    if OPTIMIZERS.trait(cfg.optimizer, "needs_closure"):
        raise ConfigError(f"tune=lr_find: optimizer={cfg.optimizer.kind} evaluates the loss several times per step "
                          "(a closure); a range test takes one step per learning rate")
    if SCHEDULERS.trait(cfg.scheduler, "steps_on_metric"):
        raise ConfigError(f"tune=lr_find: scheduler={cfg.scheduler.kind} moves the lr on a metric; the range test "
                          "sets the lr itself (use scheduler=none)")
    _ordered("tune.min_lr", t.min_lr, "tune.max_lr", t.max_lr, spec="g")
    if cfg.averaging.kind != "none":
        raise ConfigError(f"tune=lr_find trains no model to keep: leave averaging={cfg.averaging.kind} out")


def check_files(cfg) -> None:
    """The user's own files that the config names exist, as files or folders as their option reads them
    (a sweep over them is refused before it starts, not one failed run at a time)."""
    data = cfg.data
    for key, want in DATASETS[data.kind].traits.paths.items():
        _exists(f"data.{key}", getattr(data, key), want)
    files = DATASETS.trait(data.kind, "files")
    if files:
        lazy(files)(data)
    weights = cfg.model.weights
    if weights is not None and not Path(weights).expanduser().exists():
        named = MODELS.trait(cfg.model.kind, "weight_names")
        names = lazy(named)(cfg.model.name) if named and cfg.model.name else []
        if weights not in names:
            raise ConfigError(f"model.weights={weights}: no such file" + (
                f", nor one of {cfg.model.kind}'s names for {cfg.model.name}'s weights ({', '.join(names)})" if names
                else "") + ": give the path of a state dict, a .safetensors file or a run's best.pt")


def _exists(key: str, value, want: str) -> None:
    if value is None:
        return
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}={value}: no such {want}")
    if want == "file" and not path.is_file():
        raise ConfigError(f"{key}={value} is a folder; it needs a file")
    if want == "folder" and not path.is_dir():
        raise ConfigError(f"{key}={value} is a file; it needs a folder")


# ---------------------------------------------------------------------------------------------
# After loading, and on resume

def check_data(cfg, data, batch_size: int) -> None:
    """What needs the loaded data: what they give against what the model and augmentations need, the sizes."""
    shape = f"this data has shape {data.input_shape}"
    _needs(cfg, data.gives, shape)
    wanted = MODELS.trait(cfg.model.kind, "input_shape")
    if wanted and tuple(data.input_shape) != wanted:
        raise ConfigError(f"model={cfg.model.kind} takes inputs of shape {wanted} (data=polynomial); {shape}")
    for name in cfg.augmentation:
        channels = AUGMENTATIONS.trait(name, "channels")
        if channels and data.input_shape[0] != channels:
            raise ConfigError(f"augmentation {name} needs {channels}-channel (RGB) images; {shape}")
    if data.task == "regression" and cfg.loss is not None and LOSSES.trait(cfg.loss.kind, "classification_only"):
        raise ConfigError(f"loss={cfg.loss.kind} needs class labels; this data is regression: use loss=mse, l1 or huber")
    if data.task == "regression" and cfg.regularization.label_smoothing:
        raise ConfigError("regularization.label_smoothing needs class labels; this data is regression")
    mixing = [name for name in cfg.augmentation if AUGMENTATIONS.trait(name, "mixes_labels")]
    if mixing and data.task != "classification":
        raise ConfigError(f"augmentation {mixing[0]} mixes class labels; this data is {data.task}")
    if len(data.train) < 2:
        raise ConfigError(f"data: {len(data.train)} training sample(s) left; a run needs at least 2 "
                          f"(data.subset={cfg.data.subset}, data.val_fraction={cfg.data.val_fraction})")
    monitor = cfg.trainer.early_stopping.monitor
    known = {f"{split}/{name}" for split in ("train", "val") for name in ("loss", data.metric)}
    if monitor not in known:
        raise ConfigError(f"trainer.early_stopping.monitor={monitor} is not a metric of this run; "
                          f"choose one of: {', '.join(sorted(known))}")
    if monitor.startswith("val/") and len(data.val) == 0:
        raise ConfigError(f"trainer.early_stopping.monitor={monitor} needs a validation split: "
                          "set data.val_fraction > 0, or monitor train/loss")


FINITE_CHUNK = 1 << 22  # elements scanned at a time: a memory-mapped input is read once, never whole


def check_finite(x, where: str, first_row: int = 0, names: list[str] | None = None) -> None:
    """Float inputs holding NaN or infinity give a NaN loss at the first step, which reads as a learning rate
    too high, and NaN predictions: refused, naming the first such row (of `x`, counted from `first_row`), and
    the feature by its name where `names` gives them (a table's columns)."""
    if not x.is_floating_point() or not len(x):
        return
    rows = max(1, FINITE_CHUNK // max(1, x[0].numel()))
    for start in range(0, len(x), rows):
        chunk = x[start:start + rows]
        bad = ~chunk.isfinite()
        if bad.any():
            row = int(bad.reshape(len(bad), -1).any(1).nonzero()[0])
            at = tuple(int(i) for i in bad[row].nonzero()[0]) if bad.dim() > 1 else ()
            value = "NaN" if chunk[row][at].isnan() else "infinity"
            place = f" in column {names[at[0]]}" if names and len(at) == 1 else \
                f" (at {at[0] if len(at) == 1 else at})" if at else ""
            raise DataError(f"{where}: row {first_row + start + row} holds {value}{place}; replace or drop such rows")


def check_inputs(kind: str, loaded, names: list[str] | None = None) -> None:
    """A loader's inputs (tables encoded: `names`, each feature's column) and targets (a regression's are
    floats), before any statistic is fitted."""
    for x, name in ((loaded.x, "x"), (loaded.x_val, "x_val"), (loaded.x_test, "x_test")):
        if x is not None:
            check_finite(x, f"data={kind}: the inputs ({name})", names=names)
    for y, name in ((loaded.y, "y"), (loaded.y_val, "y_val"), (loaded.y_test, "y_test")):
        if y is not None:
            check_finite(y, f"data={kind}: the targets ({name})")


def check_model(cfg, data, model, batch_size: int) -> None:
    """What needs the built model: batch norm (norm=batch, or a user's or a library's model's own) cannot
    take its statistics from a last batch of one sample."""
    from torch.nn.modules.batchnorm import _BatchNorm

    batch_norm = next((type(m).__name__ for m in model.modules() if isinstance(m, _BatchNorm)), None)
    if batch_norm and len(data.train) % batch_size == 1:
        whose = f"norm={cfg.norm.kind}" if NORMS.trait(cfg.norm.kind, "batch_statistics") else \
            f"model={cfg.model.kind} (its {batch_norm})"
        raise ConfigError(f"{whose}: the last training batch of each epoch would hold one sample "
                          f"({len(data.train)} train samples, data.batch_size={cfg.data.batch_size}); "
                          "choose another data.batch_size or data.subset")


def check_resume(cfg, saved_cfg: dict) -> None:
    """A schedule shaped by the run's length cannot be stretched when a resume changes that length."""
    saved = saved_cfg["trainer"]
    changed = [k for k in ("epochs", "max_steps") if saved.get(k) != getattr(cfg.trainer, k)]
    if changed and SCHEDULERS.trait(cfg.scheduler.kind, "spans_run"):
        key = changed[0]
        raise ConfigError(f"scheduler={cfg.scheduler.kind} is shaped by the run's length (trainer.{key}="
                          f"{saved.get(key)} when it started); a resume cannot change trainer.{key}: start a new run")
