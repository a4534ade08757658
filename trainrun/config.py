"""The schema of every config group: one dataclass per group, registered in Hydra's ConfigStore.

YAML files under conf/<group>/ hold the values; OmegaConf checks every key and type against these
dataclasses while composing, so a typo or a wrong type fails before anything runs. `kind` names the
option (the YAML file) and selects the builder in that group's registry. Option-specific knobs
default to None here: the option's YAML sets the ones it takes, and setting one it does not take is
an error (see registry.create). This module must not import torch: `--help` and config errors stay fast.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig


class ConfigError(ValueError):
    """A bad or impossible configuration: reported to the user in one line, exit code 2."""


class DataError(RuntimeError):
    """A dataset that cannot be loaded (missing files offline, corrupt files): one line, exit code 2."""


@dataclass
class DataConfig:
    kind: str = MISSING
    root: str = "${oc.env:TRAINRUN_DATA,'~/.cache/trainrun/data'}"
    download: bool = True
    test_set_only: bool = False  # carve train/val/test from the official test files alone
    batch_size: Any = 64  # a number, or "full" for full-batch gradient descent
    eval_batch_size: int = 1024
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # for datasets without an official test split
    subset: Optional[int] = None
    sampler: str = "shuffle"  # shuffle | replacement | sequential
    normalize: str = "standardize"  # none | standardize | pca | whiten
    device_memory_gb: Optional[float] = None  # data kept on an accelerator up to this; null: half its memory
    # synthetic datasets
    n_samples: Optional[int] = None
    n_features: Optional[int] = None
    noise: Optional[float] = None
    turns: Optional[float] = None
    image_shape: Optional[list[int]] = None  # [channels, height, width]
    num_classes: Optional[int] = None


@dataclass
class ModelConfig:
    kind: str = MISSING
    hidden: Optional[list[int]] = None
    channels: Optional[list[int]] = None
    kernel_size: Optional[int] = None
    pool: Optional[str] = None
    depth: Optional[int] = None
    width: Optional[int] = None
    degree: Optional[int] = None
    name: Optional[str] = None  # torchvision architecture
    weights: Optional[str] = None  # torchvision weights: a local file only
    # transfer learning, any model
    checkpoint: Optional[str] = None
    freeze: Any = None  # a list of layer names, or the first N layers
    head_only: bool = False


@dataclass
class ActivationConfig:
    kind: str = MISSING
    negative_slope: Optional[float] = None
    alpha: Optional[float] = None
    beta: Optional[float] = None
    threshold: Optional[float] = None
    approximate: Optional[str] = None
    lower: Optional[float] = None
    upper: Optional[float] = None
    min_val: Optional[float] = None
    max_val: Optional[float] = None
    num_parameters: Optional[int] = None
    init: Optional[float] = None


@dataclass
class InitConfig:
    kind: str = MISSING
    bias: str = "default"  # default | zeros
    mode: Optional[str] = None
    gain: Optional[float] = None
    mean: Optional[float] = None
    std: Optional[float] = None
    a: Optional[float] = None
    b: Optional[float] = None


@dataclass
class NormConfig:
    kind: str = MISSING
    position: str = "before"  # before | after the activation
    num_groups: Optional[int] = None
    eps: Optional[float] = None
    momentum: Optional[float] = None
    affine: Optional[bool] = None


@dataclass
class OptimizerConfig:
    kind: str = MISSING
    lr: float = 1e-3
    weight_decay: Optional[float] = None  # every optimizer but L-BFGS takes it
    backbone_lr_scale: float = 1.0  # lr factor for layers reused from a checkpoint
    momentum: Optional[float] = None
    dampening: Optional[float] = None
    nesterov: Optional[bool] = None
    betas: Optional[list[float]] = None
    eps: Optional[float] = None
    alpha: Optional[float] = None
    rho: Optional[float] = None
    lr_decay: Optional[float] = None
    initial_accumulator_value: Optional[float] = None
    amsgrad: Optional[bool] = None
    centered: Optional[bool] = None
    momentum_decay: Optional[float] = None
    decoupled_weight_decay: Optional[bool] = None
    max_iter: Optional[int] = None
    history_size: Optional[int] = None
    line_search_fn: Optional[str] = None


@dataclass
class SchedulerConfig:
    kind: str = MISSING
    interval: str = "epoch"  # epoch | step
    step_size: Optional[int] = None
    gamma: Optional[float] = None
    milestones: Optional[list[int]] = None
    k: Optional[float] = None
    eta_min: Optional[float] = None
    warmup_epochs: Optional[int] = None
    max_lr: Optional[float] = None
    pct_start: Optional[float] = None
    base_lr: Optional[float] = None
    step_size_up: Optional[int] = None
    mode: Optional[str] = None
    factor: Optional[float] = None
    patience: Optional[int] = None


@dataclass
class RegularizationConfig:
    weight_decay: float = 0.0  # L2 penalty added to the loss (weights only, not biases or norms)
    l1: float = 0.0
    dropout: float = 0.0  # alpha dropout when the activation is SELU
    label_smoothing: float = 0.0
    grad_clip_norm: Optional[float] = None
    grad_clip_value: Optional[float] = None
    max_norm: Optional[float] = None  # per-neuron bound on incoming weight norm
    mc_dropout_samples: int = 0


@dataclass
class AugmentConfig:
    """One augmentation; the group is a dict of these, keyed by option, applied in list order."""

    p: Optional[float] = None
    padding: Optional[int] = None
    degrees: Optional[float] = None
    translate: Optional[float] = None
    scale: Optional[list[float]] = None
    std: Optional[float] = None
    kernel_size: Optional[int] = None
    sigma: Optional[list[float]] = None
    brightness: Optional[float] = None
    contrast: Optional[float] = None
    saturation: Optional[float] = None
    hue: Optional[float] = None
    num_ops: Optional[int] = None
    magnitude: Optional[int] = None
    policy: Optional[str] = None
    alpha: Optional[float] = None
    groups: Optional[int] = None  # policies draw one op sequence per group of samples


@dataclass
class LossConfig:
    kind: str = MISSING
    delta: Optional[float] = None  # huber


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val/loss"
    mode: str = "auto"  # min | max | auto (max for accuracy-like metrics)
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True
    stop_on_nonfinite: bool = True


@dataclass
class CheckpointConfig:
    save_last: bool = True
    save_best: bool = True
    # last.pt is written at the end, on Ctrl-C/SIGTERM, and periodically when any of these is due, so a
    # crash (SIGKILL, power loss) redoes at most that much. Time by default: a write costs the same whether
    # an epoch takes 0.1 s or an hour, so per-epoch writes would dominate short epochs.
    every_n_seconds: Optional[float] = 60.0
    every_n_epochs: Optional[int] = None
    every_n_steps: Optional[int] = None  # also mid-epoch


@dataclass
class PruningConfig:
    """Filled in by the Optuna sweeper (hparams_search): the trial this run reports its metric to."""

    trial: Optional[int] = None  # null: not part of a search
    storage: Optional[str] = None
    study: str = "trainrun"
    kind: str = "median"
    n_startup_trials: int = 2
    n_warmup_steps: int = 1
    min_resource: int = 1


@dataclass
class TrainerConfig:
    epochs: int = 20
    max_steps: Optional[int] = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    devices: int = 1  # > 1: DistributedDataParallel over this many local processes (torchrun)
    threads: Optional[int] = None  # torch's CPU threads; null: all cores, or a parallel launcher's share
    precision: str = "32"  # 32 | bf16 | 16-mixed
    seed: int = 0
    deterministic: bool = False
    grad_accum_steps: int = 1
    compile: bool = False
    channels_last: bool = False  # conv nets: NHWC weights and batches (faster convolutions on GPUs)
    log_every_n_steps: int = 10
    eval_every: int = 1
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: Optional[str] = None
    pruning: PruningConfig = field(default_factory=PruningConfig)


@dataclass
class LoggerConfig:
    enabled: bool = True
    histogram_every_n_epochs: int = 1  # 0 turns weight/gradient/activation histograms off
    log_images: bool = True
    log_graph: bool = True
    per_layer_grad_norm: bool = True


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    activation: ActivationConfig = MISSING
    init: InitConfig = MISSING
    norm: NormConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    regularization: RegularizationConfig = MISSING
    augmentation: dict[str, AugmentConfig] = field(default_factory=dict)
    loss: Optional[LossConfig] = None  # None: follows the data's task
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register() -> None:
    ConfigStore.instance().store(name="trainrun_schema", node=Config)


# ---------------------------------------------------------------------------------------------
# Range and combination checks that the types alone cannot express; run before torch is imported.

def _positive(v):
    return v is not None and v > 0


def _fraction(v):
    return 0 <= v < 1


def _batch_size(v):
    return v == "full" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


def _optional(check):
    return lambda v: v is None or check(v)


CHECKS: list[tuple[str, Any, str]] = [
    ("data.batch_size", _batch_size, "a positive integer or 'full'"),
    ("data.eval_batch_size", _positive, "a positive integer"),
    ("data.val_fraction", _fraction, "in [0, 1)"),
    ("data.test_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("data.subset", _optional(_positive), "a positive integer"),
    ("data.sampler", lambda v: v in ("shuffle", "replacement", "sequential"), "one of shuffle, replacement, sequential"),
    ("data.normalize", lambda v: v in ("none", "standardize", "pca", "whiten"), "one of none, standardize, pca, whiten"),
    ("data.n_samples", _optional(_positive), "a positive integer"),
    ("data.device_memory_gb", _optional(lambda v: v >= 0), ">= 0"),
    ("data.n_features", _optional(_positive), "a positive integer"),
    ("data.image_shape", _optional(lambda v: len(v) == 3 and all(isinstance(d, int) and d > 0 for d in v)),
     "[channels, height, width] of positive integers"),
    ("data.num_classes", _optional(lambda v: v >= 2), "at least 2"),
    ("data.noise", _optional(lambda v: v >= 0), ">= 0"),
    ("norm.position", lambda v: v in ("before", "after"), "before or after"),
    ("norm.num_groups", _optional(_positive), "a positive integer"),
    ("init.bias", lambda v: v in ("default", "zeros"), "default or zeros"),
    ("init.std", _optional(_positive), "> 0"),
    ("optimizer.lr", _positive, "> 0"),
    ("optimizer.weight_decay", _optional(lambda v: v >= 0), ">= 0"),
    ("optimizer.backbone_lr_scale", lambda v: v >= 0, ">= 0"),
    ("optimizer.momentum", _optional(lambda v: 0 <= v < 1), "in [0, 1)"),
    ("optimizer.betas", _optional(lambda v: len(v) == 2 and all(0 <= b < 1 for b in v)), "two numbers in [0, 1)"),
    ("optimizer.eps", _optional(_positive), "> 0"),
    ("scheduler.interval", lambda v: v in ("epoch", "step"), "epoch or step"),
    ("scheduler.gamma", _optional(_positive), "> 0"),
    ("scheduler.step_size", _optional(_positive), "a positive integer"),
    ("scheduler.warmup_epochs", _optional(lambda v: v >= 0), ">= 0"),
    ("regularization.weight_decay", lambda v: v >= 0, ">= 0"),
    ("regularization.l1", lambda v: v >= 0, ">= 0"),
    ("regularization.dropout", _fraction, "in [0, 1)"),
    ("regularization.label_smoothing", _fraction, "in [0, 1)"),
    ("regularization.grad_clip_norm", _optional(_positive), "> 0"),
    ("regularization.grad_clip_value", _optional(_positive), "> 0"),
    ("regularization.max_norm", _optional(_positive), "> 0"),
    ("regularization.mc_dropout_samples", lambda v: v >= 0, ">= 0"),
    ("trainer.epochs", _positive, "a positive integer"),
    ("trainer.max_steps", _optional(_positive), "a positive integer"),
    ("trainer.precision", lambda v: v in ("32", "bf16", "16-mixed"), "one of 32, bf16, 16-mixed"),
    ("trainer.device", lambda v: v in ("auto", "cpu", "cuda", "mps") or str(v).startswith("cuda:"), "auto, cpu, cuda, cuda:N or mps"),
    ("trainer.grad_accum_steps", _positive, "a positive integer"),
    ("trainer.devices", _positive, "a positive integer"),
    ("trainer.threads", _optional(_positive), "a positive integer"),
    ("trainer.log_every_n_steps", _positive, "a positive integer"),
    ("trainer.eval_every", _positive, "a positive integer"),
    ("trainer.early_stopping.mode", lambda v: v in ("min", "max", "auto"), "min, max or auto"),
    ("trainer.early_stopping.patience", lambda v: v >= 0, ">= 0"),
    ("trainer.early_stopping.min_delta", lambda v: v >= 0, ">= 0"),
    ("trainer.early_stopping.monitor", lambda v: v.split("/")[0] in ("val", "train"), "a metric such as val/loss or val/acc"),
    ("trainer.checkpoint.every_n_epochs", _optional(_positive), "a positive integer"),
    ("trainer.checkpoint.every_n_seconds", _optional(_positive), "a positive number of seconds"),
    ("trainer.checkpoint.every_n_steps", _optional(_positive), "a positive integer"),
    ("logger.histogram_every_n_epochs", lambda v: v >= 0, ">= 0"),
]

AUGMENT_CHECKS: list[tuple[str, Any, str]] = [
    ("p", _optional(lambda v: 0 <= v <= 1), "in [0, 1]"),
    ("padding", _optional(lambda v: v >= 0), ">= 0"),
    ("std", _optional(lambda v: v >= 0), ">= 0"),
    ("alpha", _optional(_positive), "> 0"),
    ("groups", _optional(_positive), "a positive integer"),
]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad value; types were already checked by the schema."""
    from omegaconf import OmegaConf

    unknown = _unknown_key(OmegaConf.to_container(cfg))
    if unknown:  # added with Hydra's +key=value: outside the schema, nothing would read it
        raise ConfigError(f"unknown key '{unknown}': not part of trainrun's config (see trainrun --cfg job)")

    def check(key, value, ok, expected):
        if not ok(value):
            raise ConfigError(f"{key}={_show(value)} is invalid: expected {expected}")

    for key, ok, expected in CHECKS:
        check(key, OmegaConf.select(cfg, key), ok, expected)
    for name, aug in cfg.augmentation.items():
        for knob, ok, expected in AUGMENT_CHECKS:
            check(f"augmentation.{name}.{knob}", aug[knob], ok, expected)
    if cfg.norm.kind == "batch" and cfg.data.batch_size == 1:
        raise ConfigError("norm=batch cannot work with data.batch_size=1 (batch statistics of one sample); "
                          "use norm=layer or norm=group, or a larger batch")
    if cfg.regularization.max_norm is not None and cfg.norm.kind == "weight":
        raise ConfigError("regularization.max_norm cannot bound weights that norm=weight reparametrizes; use one of them")
    if cfg.optimizer.kind == "lbfgs" and cfg.trainer.precision == "16-mixed":
        raise ConfigError("optimizer=lbfgs cannot run with trainer.precision=16-mixed (GradScaler has no closures)")
    if cfg.scheduler.kind == "plateau" and cfg.scheduler.interval == "step":
        raise ConfigError("scheduler=plateau steps on the validation metric, once per evaluation: "
                          "set scheduler.interval=epoch")


def schema_at(path: list[str]):
    """The dataclass that describes the config node at `path` (e.g. ["trainer", "early_stopping"]), or None."""
    node, parts = Config, iter(path)
    for part in parts:
        field_type = typing.get_type_hints(node).get(part) if dataclasses.is_dataclass(node) else None
        if typing.get_origin(field_type) is dict:
            next(parts, None)  # augmentation.<name>: the next part is a dict key
        node = next((t for t in (field_type, *typing.get_args(field_type)) if dataclasses.is_dataclass(t)), None)
    return node


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


def _show(value):
    return list(value) if isinstance(value, ListConfig) else value
