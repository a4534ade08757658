"""The schema of every config group: one dataclass per group, registered in Hydra's ConfigStore.

YAML files under conf/<group>/ hold the values; OmegaConf checks every key and type against these
dataclasses while composing, so a typo or a wrong type fails before anything runs. Each numeric or
choice field declares its range here, once, with `setting` (a key every option of the group has) or
`knob` (a key only some options take: it defaults to None, the option's YAML sets it, and the group's
registry in registry.py lists which options take it). check.py enforces every declaration with one
generic check. This module must not import torch: `--help` and config errors stay fast.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


@dataclass(frozen=True)
class Range:
    """The values a field accepts. Lists are checked element by element (and by `length`).

    `choices` is a tuple of values, or the name of a registry (registry.REGISTRIES) whose options are
    the choices; with bounds as well, a value passes when it is either (data.batch_size: 'full' or >= 1).
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | str | None = None
    pattern: str | None = None
    length: int | None = None
    modulo: tuple[int, int] | None = None  # (m, r): the value leaves remainder r divided by m (a ResNet's 6n+2)
    expected: str | None = None  # wording where the generated one would be clumsy

    def allowed(self, options: Mapping[str, Any] | None = None) -> tuple:
        """The listed choices; a registry's name is resolved through `options` (registry.REGISTRIES), which
        the schema does not import: the registry reads the schema, never the other way."""
        if isinstance(self.choices, str):
            return tuple(options[self.choices]) if options else ()
        return self.choices or ()

    def accepts(self, value, options: Mapping[str, Any] | None = None) -> bool:
        if isinstance(value, (list, tuple, ListConfig)):
            return (self.length is None or len(value) == self.length) and all(
                self._accepts_one(v, options) for v in value)
        return self._accepts_one(value, options)

    def _accepts_one(self, value, options) -> bool:
        allowed = self.allowed(options)
        if value in allowed:
            return True
        if self.pattern is not None:
            return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None
        bounded = any(b is not None for b in (self.ge, self.gt, self.le, self.lt))
        if not bounded:
            return not allowed
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)
                and (self.modulo is None or value % self.modulo[0] == self.modulo[1]))

    def describe(self, integer: bool, options: Mapping[str, Any] | None = None) -> str:
        if self.expected:
            return self.expected
        parts = []
        if self.ge is not None or self.gt is not None or self.le is not None or self.lt is not None:
            parts.append(_bounds(self, integer))
        choices = ", ".join(map(str, self.allowed(options)))
        text = " or ".join(filter(None, [*parts, choices and f"one of {choices}"]))
        if self.length is not None:
            return f"{self.length} values, each {text}"
        return text


def _bounds(r: Range, integer: bool) -> str:
    low = (r.ge, "[") if r.ge is not None else (r.gt, "(") if r.gt is not None else None
    high = (r.le, "]") if r.le is not None else (r.lt, ")") if r.lt is not None else None
    if integer and high is None and low is not None:
        first = low[0] if low[1] == "[" else math.floor(low[0]) + 1
        return "a positive integer" if first == 1 else f"an integer >= {first:g}"
    if low and high:
        return f"in {low[1]}{low[0]:g}, {high[0]:g}{high[1]}"
    if low:
        return f"{'>=' if low[1] == '[' else '>'} {low[0]:g}"
    return f"{'<=' if high[1] == ']' else '<'} {high[0]:g}"


def setting(default: Any = None, stacks: bool = False, perturbable: bool = False, **bounds) -> Any:
    """A key every option of its group has, with its range. `stacks`: runs that differ in it may still train
    together as one stacked model (trainrun/stack); a key that is not is the same in every run of a stack.
    `perturbable`: as for `knob`."""
    return _declared(default, per_option=False, stacks=stacks or perturbable, perturbable=perturbable, **bounds)


def knob(default: Any = None, stacks: bool = False, perturbable: bool = False, **bounds) -> Any:
    """A key only some options take: None (or empty) unless the option's YAML or the user sets it.
    `perturbable`: a number the optimizer reads from its param groups at every step, so population-based training
    (hparams_search=pbt) may change it during a run (it then also stacks)."""
    return _declared(default, per_option=True, stacks=stacks or perturbable, perturbable=perturbable, **bounds)


def stacking(default: Any = MISSING, factory: Any = None) -> Any:
    """A whole group or section whose every key may differ between the runs of a stack."""
    if factory is not None:
        return field(default_factory=factory, metadata={"stacks": True})
    return field(default=default, metadata={"stacks": True})


def _declared(default, per_option: bool, stacks: bool, perturbable: bool = False, **bounds):
    meta = {"range": Range(**bounds) if bounds else None, "per_option": per_option, "stacks": stacks,
            "perturbable": perturbable}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


POSITIVE = {"gt": 0}
POSITIVE_INT = {"ge": 1}
NON_NEGATIVE = {"ge": 0}
FRACTION = {"ge": 0, "lt": 1}
PROBABILITY = {"ge": 0, "le": 1}


DATA_HOME = "~/.cache/trainrun/data"  # where trainrun keeps data and caches; $TRAINRUN_DATA moves it


def data_home() -> Path:
    """$TRAINRUN_DATA, or DATA_HOME: the shipped datasets, the folder cache, streamed spills."""
    return Path(os.environ.get("TRAINRUN_DATA", DATA_HOME)).expanduser()


@dataclass
class DataConfig:
    kind: str = setting(MISSING, choices="data")
    root: str = f"${{oc.env:TRAINRUN_DATA,'{DATA_HOME}'}}"
    download: bool = True
    test_set_only: bool = False  # carve train/val/test from the official test files alone
    batch_size: Any = setting(64, ge=1, choices=("full",), expected="a positive integer or 'full'")  # "full": full-batch GD
    eval_batch_size: int = setting(1024, **POSITIVE_INT)
    val_fraction: float = setting(0.1, **FRACTION)
    test_fraction: float = setting(0.2, gt=0, lt=1)  # for datasets without an official test split
    subset: Optional[int] = setting(None, **POSITIVE_INT)
    # the seed of the split (and of subset, per_class, folds); null: trainer.seed. Runs that exchange weights
    # (hparams_search=pbt) share one: a run's val and test rows are never another's training rows
    split_seed: Optional[int] = setting(None, ge=0, le=2**32 - 1, expected="an integer in [0, 2^32)")
    classes: Optional[list[int]] = setting(None, ge=0)  # keep these classes only, relabelled 0..k-1 in this order
    per_class: Optional[int] = setting(None, **POSITIVE_INT)  # a stratified few-shot train split: N per class
    # k-fold cross-validation: `trainrun data.folds=K` runs K runs, fold k validating (stratified for classes)
    folds: Optional[int] = setting(None, ge=2, le=1000)
    fold: Optional[int] = setting(None, ge=0)
    sampler: str = setting("shuffle", choices="sampler")
    normalize: str = setting("standardize", choices="normalize")
    device_memory_gb: Optional[float] = setting(None, **NON_NEGATIVE)  # data kept on an accelerator up to this; null: half
    host_memory_gb: Optional[float] = setting(None, **NON_NEGATIVE)  # more than this: memory-mapped from disk; null: half the RAM
    # generated datasets
    n_samples: Optional[int] = knob(ge=2)
    n_features: Optional[int] = knob(**POSITIVE_INT)
    noise: Optional[float] = knob(**NON_NEGATIVE)
    turns: Optional[float] = knob(**POSITIVE)
    image_shape: Optional[list[int]] = knob(ge=1, length=3, expected="[channels, height, width] of positive integers")
    num_classes: Optional[int] = knob(ge=2, expected="at least 2")
    # your own files: folder (images), table (CSV, Parquet), arrays (.npz, .npy, .pt)
    image_size: Optional[list[int]] = knob(ge=1, length=2, expected="[height, width] of positive integers")
    channels: Optional[int] = knob(choices=(1, 3))  # folder: null: the majority's
    cache_dir: Optional[str] = knob()  # folder: where the decoded images are kept (null: beside data.root's default)
    on_bad_file: Optional[str] = knob(choices=("error", "skip"))
    path: Optional[str] = knob()
    targets: Optional[str] = knob()  # arrays: the targets' .npy when data.path is the inputs' .npy
    target: Optional[str] = knob()  # table: the target column
    features: Optional[list[str]] = knob()  # table: the feature columns (null: every other column)
    task: Optional[str] = knob(choices=("auto", "classification", "regression"))
    max_classes: Optional[int] = knob(ge=2)  # table, task=auto: an integer target with at most this many values is classes
    missing: Optional[str] = knob(choices=("error", "drop", "mean"))
    # custom: a user's own class or function (custom.py)
    _target_: Optional[str] = knob()
    params: dict[str, Any] = knob({})
    num_workers: Optional[int] = knob(ge=0)  # custom, a torch Dataset: the DataLoader's worker processes


@dataclass
class ModelConfig:
    kind: str = setting(MISSING, choices="model")
    hidden: Optional[list[int]] = knob(**POSITIVE_INT)
    channels: Optional[list[int]] = knob(**POSITIVE_INT)
    kernel_size: Optional[int] = knob(**POSITIVE_INT)
    pool: Optional[str] = knob(choices=("max", "avg", "none"))
    depth: Optional[int] = knob(ge=1)  # mlp: hidden layers (of model.width units); resnet: 6n+2 layers
    width: Optional[int] = knob(**POSITIVE_INT)
    degree: Optional[int] = knob(**POSITIVE_INT)
    name: Optional[str] = knob()  # torchvision or timm architecture
    small_input: Any = knob(choices=("auto", True, False))  # torchvision: a 3x3 stride-1 stem for small images
    # transfer learning, any model. weights: a run (its directory or best.pt), a state dict or a .safetensors
    # file; model=torchvision and timm also take their library's names for its weights (IMAGENET1K_V1, pretrained)
    weights: Optional[str] = None
    freeze: Any = None  # a list of layer names, or the first N layers
    head_only: bool = False  # freeze every layer but a new output layer
    new_head: bool = False  # the pretrained output layer starts anew: it learned another task (head_only implies it)
    # custom: a user's own class or function (custom.py)
    _target_: Optional[str] = knob()
    params: dict[str, Any] = knob({})



@dataclass
class ActivationConfig:
    kind: str = setting(MISSING, choices="activation")
    negative_slope: Optional[float] = knob(**NON_NEGATIVE)
    alpha: Optional[float] = knob(**POSITIVE)
    beta: Optional[float] = knob(**POSITIVE)
    threshold: Optional[float] = knob(**POSITIVE)
    approximate: Optional[str] = knob(choices=("none", "tanh"))
    lower: Optional[float] = knob(ge=0, le=1)
    upper: Optional[float] = knob(ge=0, le=1)
    min_val: Optional[float] = knob()
    max_val: Optional[float] = knob()
    num_parameters: Optional[int] = knob(**POSITIVE_INT)
    init: Optional[float] = knob(**NON_NEGATIVE)
    # custom: a user's own class or function (custom.py)
    _target_: Optional[str] = knob()
    params: dict[str, Any] = knob({})



@dataclass
class InitConfig:
    kind: str = setting(MISSING, choices="init")
    bias: str = setting("default", choices=("default", "zeros"))
    mode: Optional[str] = knob(choices=("fan_in", "fan_out"))
    gain: Optional[float] = knob(**POSITIVE)
    mean: Optional[float] = knob(ge=-1e6, le=1e6)
    std: Optional[float] = knob(**POSITIVE)
    a: Optional[float] = knob(ge=-1e6, le=1e6)
    b: Optional[float] = knob(ge=-1e6, le=1e6)


@dataclass
class NormConfig:
    kind: str = setting(MISSING, choices="norm")
    position: str = setting("before", choices=("before", "after"))
    num_groups: Optional[int] = knob(**POSITIVE_INT)
    eps: Optional[float] = knob(gt=0, lt=1)
    momentum: Optional[float] = knob(ge=0, le=1)
    affine: Optional[bool] = knob()


@dataclass
class OptimizerConfig:
    kind: str = setting(MISSING, choices="optimizer")
    lr: float = setting(MISSING, perturbable=True, **POSITIVE)  # each optimizer's YAML gives its usual value
    backbone_lr_scale: float = setting(1.0, stacks=True, **NON_NEGATIVE)  # lr factor for the layers model.weights loaded
    weight_decay: Optional[float] = knob(perturbable=True, **NON_NEGATIVE)  # every optimizer but L-BFGS takes it
    momentum: Optional[float] = knob(perturbable=True, **FRACTION)
    dampening: Optional[float] = knob(perturbable=True, **FRACTION)
    betas: Optional[list[float]] = knob(stacks=True, **FRACTION, length=2, expected="two numbers in [0, 1)")
    eps: Optional[float] = knob(perturbable=True, **POSITIVE)
    alpha: Optional[float] = knob(perturbable=True, **FRACTION)
    rho: Optional[float] = knob(perturbable=True, **FRACTION)
    lr_decay: Optional[float] = knob(perturbable=True, **NON_NEGATIVE)
    initial_accumulator_value: Optional[float] = knob(stacks=True, **NON_NEGATIVE)  # read once, at the first step
    amsgrad: Optional[bool] = knob()
    centered: Optional[bool] = knob()
    momentum_decay: Optional[float] = knob(perturbable=True, **NON_NEGATIVE)
    decoupled_weight_decay: Optional[bool] = knob()
    max_iter: Optional[int] = knob(**POSITIVE_INT)
    history_size: Optional[int] = knob(**POSITIVE_INT)
    line_search_fn: Optional[str] = knob(choices=("strong_wolfe",))
    # custom: a user's own class or function (custom.py)
    _target_: Optional[str] = knob()
    params: dict[str, Any] = knob({})
    closure: Optional[bool] = knob()  # custom: its step takes a closure (like L-BFGS)



@dataclass
class SchedulerConfig:
    kind: str = setting(MISSING, choices="scheduler")
    interval: str = setting("epoch", choices=("epoch", "step"))
    step_size: Optional[int] = knob(**POSITIVE_INT)
    gamma: Optional[float] = knob(**POSITIVE)
    milestones: Optional[list[int]] = knob(**POSITIVE_INT)
    k: Optional[float] = knob(**NON_NEGATIVE)
    eta_min: Optional[float] = knob(**NON_NEGATIVE)
    warmup_epochs: Optional[int] = knob(**NON_NEGATIVE)
    max_lr: Optional[float] = knob(**POSITIVE)
    pct_start: Optional[float] = knob(gt=0, lt=1)
    base_lr: Optional[float] = knob(**POSITIVE)
    step_size_up: Optional[int] = knob(**POSITIVE_INT)
    mode: Optional[str] = knob(choices=("triangular", "triangular2", "exp_range"))
    factor: Optional[float] = knob(gt=0, lt=1)
    patience: Optional[int] = knob(**NON_NEGATIVE)
    # custom: a user's own class or function (custom.py)
    _target_: Optional[str] = knob()
    params: dict[str, Any] = knob({})
    on_metric: Optional[bool] = knob()  # custom: stepped with the monitored metric (like plateau)



@dataclass
class RegularizationConfig:
    weight_decay: float = setting(0.0, **NON_NEGATIVE)  # L2 penalty added to the loss (weights only)
    l1: float = setting(0.0, **NON_NEGATIVE)
    dropout: float = setting(0.0, **FRACTION)  # alpha dropout when the activation is self-normalizing
    label_smoothing: float = setting(0.0, **FRACTION)
    grad_clip_norm: Optional[float] = setting(None, **POSITIVE)
    grad_clip_value: Optional[float] = setting(None, **POSITIVE)
    max_norm: Optional[float] = setting(None, **POSITIVE)  # per-neuron bound on incoming weight norm
    mc_dropout_samples: int = setting(0, **NON_NEGATIVE)


@dataclass
class AugmentConfig:
    """One augmentation; the group is a dict of these, keyed by option, applied in list order."""

    p: Optional[float] = knob(**PROBABILITY)
    padding: Optional[int] = knob(**NON_NEGATIVE)
    degrees: Optional[float] = knob(ge=0, le=180)
    translate: Optional[float] = knob(ge=0, le=1)
    scale: Optional[list[float]] = knob(gt=0, le=10, length=2)
    std: Optional[float] = knob(**NON_NEGATIVE)
    kernel_size: Optional[int] = knob(**POSITIVE_INT)
    sigma: Optional[list[float]] = knob(gt=0, le=100, length=2)
    brightness: Optional[float] = knob(**FRACTION)
    contrast: Optional[float] = knob(**FRACTION)
    saturation: Optional[float] = knob(**FRACTION)
    hue: Optional[float] = knob(ge=0, le=0.5)
    num_ops: Optional[int] = knob(**NON_NEGATIVE)
    magnitude: Optional[int] = knob(ge=0, le=30)
    policy: Optional[str] = knob(choices=("imagenet", "cifar10", "svhn"))
    alpha: Optional[float] = knob(**POSITIVE)
    groups: Optional[int] = knob(**POSITIVE_INT)  # policies draw one op sequence per group of samples


@dataclass
class LossConfig:
    kind: str = setting(MISSING, choices="loss")
    delta: Optional[float] = knob(stacks=True, **POSITIVE)  # huber
    # custom: a user's own class or function (custom.py)
    _target_: Optional[str] = knob()
    params: dict[str, Any] = knob({})



@dataclass
class AveragingConfig:
    """averaging=ema|swa: a weight average evaluated beside the raw weights (options/averaging.py)."""
    kind: str = setting("none", choices="averaging")
    decay: Optional[float] = knob(gt=0, lt=1)  # ema
    warmup: Optional[bool] = knob()
    warmup_power: Optional[float] = knob(gt=0, le=10)
    warmup_gamma: Optional[float] = knob(**POSITIVE)
    start_epoch: Optional[int] = knob(ge=1, le=10**6)  # swa
    lr: Optional[float] = knob(**POSITIVE)  # null: the optimizer's lr
    anneal_epochs: Optional[int] = knob(**NON_NEGATIVE)
    anneal_strategy: Optional[str] = knob(choices=("cos", "linear"))


def direction(monitor: str, mode: str) -> str:
    """min or max: trainer.early_stopping.mode, where `auto` means max for an accuracy and min for the rest."""
    return mode if mode != "auto" else ("max" if monitor.endswith("acc") else "min")


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = setting("val/loss", pattern=r"(train|val)/\w+", expected="a metric such as val/loss or val/acc")
    mode: str = setting("auto", choices=("min", "max", "auto"))  # auto: max for accuracy-like metrics
    patience: int = setting(5, **NON_NEGATIVE)
    min_delta: float = setting(0.0, **NON_NEGATIVE)
    restore_best: bool = True
    stop_on_nonfinite: bool = True


@dataclass
class CheckpointConfig:
    save_last: bool = True
    save_best: bool = True
    # last.pt is written at the end of the first epoch, at the end, on Ctrl-C/SIGTERM, and periodically when
    # any of these is due, so a crash (SIGKILL, power loss) redoes at most that much. Time by default: a write
    # costs the same whether an epoch takes 0.1 s or an hour, so per-epoch writes would dominate short epochs.
    every_n_seconds: Optional[float] = setting(60.0, **POSITIVE)
    every_n_epochs: Optional[int] = setting(None, **POSITIVE_INT)
    every_n_steps: Optional[int] = setting(None, **POSITIVE_INT)  # also mid-epoch


@dataclass
class PrunerConfig:
    """The search's pruner (hydra.sweeper.pruner): which, and its knobs (registry.PRUNERS lists who takes which)."""

    kind: str = setting("median", choices="pruner")
    n_startup_trials: int = setting(3, **NON_NEGATIVE)  # median: trials that finish before any is pruned
    n_warmup_steps: int = setting(2, **NON_NEGATIVE)  # median: epochs a trial runs before it can be pruned
    min_resource: int = setting(1, **POSITIVE_INT)  # successive_halving, hyperband


@dataclass
class PruningConfig(PrunerConfig):
    """Filled in by the Optuna sweeper (hparams_search): the trial this run reports its metric to."""

    trial: Optional[int] = None  # null: not part of a search
    storage: Optional[str] = None
    study: str = "trainrun"


@dataclass
class TrainerConfig:
    epochs: int = setting(20, stacks=True, ge=1, le=10**6)
    max_steps: Optional[int] = setting(None, stacks=True, **POSITIVE_INT)
    device: str = setting("auto", pattern=r"auto|cpu|cuda(:\d+)?|mps", expected="auto, cpu, cuda, cuda:N or mps")
    devices: int = setting(1, ge=1, le=1024)  # > 1: DistributedDataParallel over this many local processes
    threads: Optional[int] = setting(None, ge=1, le=4096)  # null: all cores, or a parallel launcher's share
    precision: str = setting("32", choices="precision")
    seed: int = setting(0, stacks=True, ge=0, le=2**32 - 1, expected="an integer in [0, 2^32)")
    deterministic: bool = False
    grad_accum_steps: int = setting(1, **POSITIVE_INT)
    compile: bool = False
    channels_last: bool = False  # conv nets: NHWC weights and batches (faster convolutions on GPUs)
    log_every_n_steps: int = setting(10, stacks=True, **POSITIVE_INT)
    eval_every: int = setting(1, stacks=True, **POSITIVE_INT)
    early_stopping: EarlyStoppingConfig = stacking(factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = stacking(factory=CheckpointConfig)
    resume: Optional[str] = stacking(None)
    pruning: PruningConfig = stacking(factory=PruningConfig)
    # debugging a run: train on the same N batches every epoch (no augmentation, no early stopping) and say at the
    # end whether the training loss came near zero; profile N training steps after 2 of warm-up
    overfit_batches: int = setting(0, **NON_NEGATIVE)
    profile: int = setting(0, **NON_NEGATIVE)
    fast_dev_run: bool = False  # every stage once (a step, a batch of val and test, a checkpoint, predict); no run kept


@dataclass
class LoggerConfig:
    enabled: bool = True
    layers: bool = False  # per-layer diagnostics: weight, gradient and activation histograms, gradient norms
    histogram_every_n_epochs: int = setting(1, **NON_NEGATIVE)  # with layers: 0 turns histograms off
    log_images: bool = True
    log_graph: bool = True
    # auto: a run alone shows its header, epochs and result; a run of a sweep one line when it ends
    console: str = setting("auto", choices=("auto", "full", "line"))


@dataclass
class TuneConfig:
    """trainrun tune=lr_find: a learning-rate range test (tune.py) instead of training."""
    kind: str = setting(MISSING, choices=("lr_find",))
    min_lr: float = setting(1e-7, gt=0)
    max_lr: float = setting(10.0, gt=0)
    steps: int = setting(100, ge=10)  # one optimizer step per learning rate, spaced evenly in log
    stop_factor: float = setting(4.0, gt=1)  # stop once the smoothed loss exceeds this times its minimum
    smoothing: float = setting(0.05, gt=0, lt=1)  # weight of each new loss in the running average


@dataclass
class StudyConfig:
    """trainrun -m study=<name>: a lecture's claim as a sweep and a report (study.py)."""
    name: Optional[str] = None
    size: str = setting("small", choices=("small", "full"))  # small: minutes on 2 CPU cores
    epochs: dict[str, int] = field(default_factory=dict)  # per size; trainer.epochs reads it
    stages: list[Any] = field(default_factory=list)  # [{name, params[, samples, seed]}]: sweeps run in order (the grid sweeper)


# The groups every run chooses one option of, by `kind` from their registry; `loss` is one too, but may be null
# (it then follows the data's task)
OPTION_GROUPS = ("data", "model", "activation", "init", "norm", "optimizer", "scheduler", "averaging")


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    activation: ActivationConfig = MISSING
    init: InitConfig = stacking()  # each run's model is initialized alone, then stacked
    norm: NormConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = stacking()  # each run's own schedule moves its own lr
    regularization: RegularizationConfig = stacking()
    augmentation: dict[str, AugmentConfig] = stacking(factory=dict)  # drawn from each run's generator
    loss: Optional[LossConfig] = None  # None: follows the data's task
    averaging: AveragingConfig = stacking(factory=AveragingConfig)  # none in runs saved before it existed
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = stacking(factory=LoggerConfig)
    study: StudyConfig = stacking(factory=StudyConfig)
    tune: Optional[TuneConfig] = None  # None: train


def register() -> None:
    ConfigStore.instance().store(name="trainrun_schema", node=Config)


RENAMED = {"model.checkpoint": "model.weights"}  # keys an earlier trainrun saved in its runs' configs


def upgraded(saved: dict) -> dict:
    """A run's saved config (a plain dict) with each renamed key under its name of today."""
    for old, new in RENAMED.items():
        (group, old_key), (_, new_key) = old.split("."), new.split(".")
        if old_key in saved.get(group, {}):
            saved[group][new_key] = saved[group].pop(old_key)
    return saved


def typed(cfg: DictConfig) -> Config:
    """The validated config as the schema's dataclasses, once: plain attributes from then on (a read of an
    OmegaConf node costs microseconds; the loop reads some every step). A resumed run's saved config, an
    untyped dict, is merged onto the schema first."""
    if OmegaConf.get_type(cfg) is not Config:  # composed by Hydra, it is already the schema's (10x faster)
        cfg = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    return OmegaConf.to_object(cfg)


def values_of(node) -> dict:
    """A group's values as a plain dict, from a dataclass, an OmegaConf node or a mapping."""
    if dataclasses.is_dataclass(node):
        return {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


# ---------------------------------------------------------------------------------------------
# Reading the schema (check.py enforces it).

@functools.cache
def hints(schema) -> dict:
    """A dataclass's type hints, resolved once (resolving them is most of what a config check costs)."""
    return typing.get_type_hints(schema)


def declared_fields(schema=Config, path: tuple[str, ...] = ()):
    """(key path, field, type hint) for every field of the schema, nested dataclasses included."""
    for f in dataclasses.fields(schema):
        hint = hints(schema)[f.name]
        inner = [t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)]
        if inner and typing.get_origin(hint) is not dict:
            yield from declared_fields(inner[0], (*path, f.name))
        else:
            yield (*path, f.name), f, hint


def declared(key: str):
    """The schema's field for a dotted key (`optimizer.lr`), or None."""
    return next((f for path, f, _ in declared_fields() if ".".join(path) == key), None)


def leaf_types(hint) -> set:
    """The plain types a hint allows: Optional[list[int]] -> {int, NoneType}."""
    args = typing.get_args(hint)
    return set().union(*map(leaf_types, args)) if args else {hint}


def schema_at(path: list[str]):
    """The dataclass that describes the config node at `path` (e.g. ["trainer", "early_stopping"]), or None."""
    node, parts = Config, iter(path)
    for part in parts:
        field_type = hints(node).get(part) if dataclasses.is_dataclass(node) else None
        if typing.get_origin(field_type) is dict:
            next(parts, None)  # augmentation.<name>: the next part is a dict key
        node = next((t for t in (field_type, *typing.get_args(field_type)) if dataclasses.is_dataclass(t)), None)
    return node
