"""Every option of every group, one frozen record each: its builder, the knobs it takes, its traits.

This is the catalog. Adding an option is one YAML file under conf/<group>/ and one record here (and a
builder, where torch has none). Builders are named by import path and imported on first use, so
`--help` and config errors never import torch. Code elsewhere asks a record for a trait
(`OPTIMIZERS.trait(cfg.optimizer, "needs_closure")`), never compares option names. Each group's traits are
a frozen dataclass below (`OptimizerTraits`, ...): a record naming a trait its group does not have fails at
import, and so does reading one.

`Registry.create` is the one way an option is built: it passes the option's knobs (as set in the
config) to its builder, and turns any exception raised while building into one line that names the
group, the option and its knobs.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

from omegaconf import DictConfig

from .config import Range, values_of
from .errors import ConfigError, DataError


GroupConfig = Any  # one group's config: the schema's dataclass (config.py), or its DictConfig before typed()


def lazy(path: str) -> Any:
    """What a "module:attribute" path names, imported when first used (class paths stay strings until then)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Option:
    build: str | None  # "module:attribute"; None for an option that is only its traits (precision)
    knobs: tuple[str, ...] = ()  # the schema keys it takes; its YAML sets each
    preset: Mapping[str, Any] = field(default_factory=dict)  # arguments always passed (nesterov=True)
    traits: Any = field(default_factory=dict)  # the keywords given to option(); the group's Traits once registered
    ranges: Mapping[str, Range] = field(default_factory=dict)  # a knob's range where narrower than the schema's
    ordered: tuple[str, ...] = ()  # knobs that are [low, high]

    def builder(self) -> Callable:
        return lazy(self.build)


@dataclass(frozen=True)
class FromKnob:
    """A trait a custom option declares through one of its knobs (optimizer.closure=true)."""

    knob: str


def option(build: str | None, knobs: str = "", preset: Mapping | None = None, ranges: Mapping | None = None,
           ordered: str = "", **traits) -> Option:
    return Option(build, tuple(knobs.split()), MappingProxyType(dict(preset or {})), dict(traits),
                  MappingProxyType(dict(ranges or {})), tuple(ordered.split()))


# ----------------------------------------------------------------------------------------------------
# Traits, one frozen record per group: what code elsewhere may ask of an option instead of its name.

@dataclass(frozen=True)
class Traits:
    """What any option may declare."""

    requires: Mapping[str, str] = field(default_factory=dict)  # {knob: the knob it needs set beside it}
    warning: str | None = None  # logged when a run chooses it (init=zeros: units stay identical)


@dataclass(frozen=True)
class OptimizerTraits(Traits):
    needs_closure: bool | FromKnob = False  # step() takes a closure that re-evaluates the loss (L-BFGS)
    one_param_group: bool = False  # takes every parameter in one group (no weight decay split by layer)
    # "module:attribute" of its update over a stack of runs (trainrun.stack.optimizers), each with its own
    # hyperparameters; None: its runs train one at a time
    stacked_step: str | None = None


@dataclass(frozen=True)
class SchedulerTraits(Traits):
    steps_on_metric: bool | FromKnob = False  # stepped with the monitored metric (plateau), once an epoch
    spans_run: bool = False  # shaped by the run's length (cosine, onecycle): a resume must not change it


@dataclass(frozen=True)
class ActivationTraits(Traits):
    gain: str = "linear"  # torch.nn.init.calculate_gain's name for it (Xavier's and Kaiming's scale)
    slope: str | tuple[str, str] | None = None  # the knob(s) giving a leaky slope to the gain
    self_normalizing: bool = False  # SELU: dropout becomes alpha dropout


@dataclass(frozen=True)
class NormTraits(Traits):
    batch_statistics: bool = False  # normalizes by the batch's statistics: a batch of one is refused
    reparametrizes: bool = False  # weight norm: a reparametrization of the weights, not a layer
    needs_positions: bool = False  # instance norm: needs positions (images, sequences), not features
    divides: str | None = None  # the knob that must divide each normalized layer's width (group: num_groups)


@dataclass(frozen=True)
class LossTraits(Traits):
    classification_only: bool = False  # reads class labels: refused on a regression target
    # torch.func.vmap runs it for a whole stack in one call (batching rules for all its ops; kl_div has none)
    vmaps: bool = True


@dataclass(frozen=True)
class ModelTraits(Traits):
    own_layers: bool = False  # a library architecture: ignores activation and norm
    needs: str | None = None  # the inputs it takes (images, sequences)
    input_shape: tuple | None = None  # the one input shape it takes (polynomial: a scalar)
    weights_statistics: str | None = None  # "module:function": the mean and std its pretrained weights expect
    weight_names: str | None = None  # "module:function": the names of the library's pretrained weights
    library_weights: str | None = None  # "module:function": the state dict of those weights, by name
    # "module:function" (torch-free): [(dims, width)] of the layers it normalizes, from its config alone, so a
    # norm that cannot fit them is refused before a sweep starts; None where only building tells (custom)
    normalized: str | None = None


@dataclass(frozen=True)
class AugmentationTraits(Traits):
    mixes_labels: bool = False  # mixup, cutmix: the targets become mixtures (a classification loss on soft labels)
    needs: str | None = None  # the inputs it takes (images)
    channels: int | None = None  # the image channels it takes (color: 3, RGB)


@dataclass(frozen=True)
class DataTraits(Traits):
    gives: str | None = None  # images | sequences | features; None for arrays and custom until loaded
    paths: Mapping[str, str] = field(default_factory=dict)  # {knob: file | folder}: checked before a sweep starts
    files: str | None = None  # "module:function" finding a shipped dataset's files under data.root, before a sweep
    scaling: str | None = None  # how a shipped dataset's float inputs were scaled: what a user must give to predict


@dataclass(frozen=True)
class PrecisionTraits(Traits):
    autocast: str | None = None  # the autocast dtype's name
    grad_scaler: bool = False  # float16: the loss is scaled against underflow


class Registry(Mapping[str, Option]):
    def __init__(self, group: str, options: dict[str, Option], traits: type[Traits] = Traits):
        self.group, self.traits_type = group, traits
        self.options = {kind: replace(record, traits=_typed(group, kind, traits, record.traits))
                        for kind, record in options.items()}

    def __getitem__(self, kind: str) -> Option:
        if kind not in self.options:
            close = difflib.get_close_matches(str(kind), self.options, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown {self.group} '{kind}'{hint}; choose one of: {', '.join(sorted(self.options))}")
        return self.options[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self.options)

    def __len__(self) -> int:
        return len(self.options)

    def trait(self, chosen: str | GroupConfig, name: str) -> Any:
        """A trait of the option `chosen` (its name, or its config node when the trait may come from a knob);
        a name its group's Traits lacks is an AttributeError, never a silent default."""
        kind = chosen if isinstance(chosen, str) else chosen.kind
        value = getattr(self[kind].traits, name)
        if isinstance(value, FromKnob):
            knob = None if isinstance(chosen, str) else getattr(chosen, value.knob)
            return bool(knob)
        return value

    def knobs(self, cfg: GroupConfig, kind: str) -> dict[str, Any]:
        """The knobs option `kind` takes that `cfg` sets, as plain Python values."""
        values = values_of(cfg)
        return {k: values[k] for k in self[kind].knobs if values.get(k) is not None}

    def create(self, cfg: GroupConfig | None, *args: Any, kind: str | None = None, **context: Any) -> Any:
        """The option's builder called with (*args, **context, **preset, **knobs)."""
        kind = kind or cfg.kind
        record = self[kind]
        given = self.knobs(cfg, kind) if cfg is not None else {}
        builder = record.builder()
        needed = [k for k in record.knobs if k not in given and _required(builder, k)]
        if needed:  # a knob its YAML leaves null for the user to give (data=table's path)
            where = f"augmentation.{kind}" if self.group == "augmentation" else self.group
            raise ConfigError(f"{self.group}={kind} needs {' and '.join(f'{where}.{k}=...' for k in needed)}")
        with building(self.group, kind, given):
            return builder(*args, **context, **record.preset, **given)


def _typed(group: str, kind: str, traits: type[Traits], given: Mapping[str, Any]) -> Traits:
    unknown = sorted(set(given) - {f.name for f in fields(traits)})
    if unknown:
        raise TypeError(f"{group}={kind}: {traits.__name__} has no trait {', '.join(unknown)}")
    return traits(**given)


def _required(builder: Callable, name: str) -> bool:
    try:
        parameter = inspect.signature(builder).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is parameter.empty


def unset(value) -> bool:
    return value is None or (isinstance(value, (dict, DictConfig)) and len(value) == 0)


@contextlib.contextmanager
def building(group: str, kind: str, given: Mapping[str, Any] | None = None):
    """Any exception raised while building an option becomes one ConfigError naming it and its knobs.

    Our own ConfigError and DataError pass through: they already say what is wrong."""
    try:
        yield
    except (ConfigError, DataError):
        raise
    except Exception as error:
        knobs = ", ".join(f"{group}.{k}={v}" for k, v in (given or {}).items())
        message = " ".join(str(error).split())[:200] or type(error).__name__
        raise ConfigError(f"{group}={kind}: {message}" + (f" ({knobs})" if knobs else "")) from error


# ----------------------------------------------------------------------------------------------------
# The catalog. Any option may also narrow a knob's range (ranges) and name knobs that are [low, high] (ordered).

_SGD_KNOBS = "lr momentum dampening weight_decay"
OPTIMIZERS = Registry("optimizer", {
    "sgd": option("torch.optim:SGD", "lr weight_decay", stacked_step="trainrun.stack.optimizers:SGD"),
    "momentum": option("torch.optim:SGD", _SGD_KNOBS, stacked_step="trainrun.stack.optimizers:SGD"),
    "nesterov": option("torch.optim:SGD", "lr momentum weight_decay", preset={"nesterov": True},
                       stacked_step="trainrun.stack.optimizers:SGD"),
    "adagrad": option("torch.optim:Adagrad", "lr lr_decay initial_accumulator_value eps weight_decay",
                      stacked_step="trainrun.stack.optimizers:ADAGRAD"),
    "adadelta": option("torch.optim:Adadelta", "lr rho eps weight_decay"),
    "rmsprop": option("torch.optim:RMSprop", "lr alpha eps momentum centered weight_decay",
                      stacked_step="trainrun.stack.optimizers:RMSPROP"),
    "adam": option("torch.optim:Adam", "lr betas eps amsgrad weight_decay", stacked_step="trainrun.stack.optimizers:ADAM"),
    "adamw": option("torch.optim:AdamW", "lr betas eps amsgrad weight_decay", stacked_step="trainrun.stack.optimizers:ADAMW"),
    "adamax": option("torch.optim:Adamax", "lr betas eps weight_decay"),
    "nadam": option("torch.optim:NAdam", "lr betas eps momentum_decay decoupled_weight_decay weight_decay"),
    "radam": option("torch.optim:RAdam", "lr betas eps decoupled_weight_decay weight_decay"),
    "lbfgs": option("torch.optim:LBFGS", "lr max_iter history_size line_search_fn",
                    needs_closure=True, one_param_group=True),
    "custom": option("trainrun.options.custom:optimizer", "_target_ params lr weight_decay closure",
                     needs_closure=FromKnob("closure")),
}, OptimizerTraits)

SCHEDULERS = Registry("scheduler", {
    "none": option("trainrun.options.scheduler:constant"),
    "step": option("trainrun.options.scheduler:step", "step_size gamma"),
    "multistep": option("trainrun.options.scheduler:multistep", "milestones gamma"),
    "exponential": option("trainrun.options.scheduler:exponential", "gamma"),
    "inverse_time": option("trainrun.options.scheduler:inverse_time", "k"),
    "cosine": option("trainrun.options.scheduler:cosine", "eta_min", spans_run=True),
    "warmup_cosine": option("trainrun.options.scheduler:warmup_cosine", "warmup_epochs eta_min", spans_run=True),
    "onecycle": option("trainrun.options.scheduler:onecycle", "max_lr pct_start", spans_run=True),
    "cyclic": option("trainrun.options.scheduler:cyclic", "base_lr max_lr step_size_up mode"),
    "plateau": option("trainrun.options.scheduler:plateau", "factor patience", steps_on_metric=True),
    "custom": option("trainrun.options.custom:scheduler", "_target_ params on_metric", steps_on_metric=FromKnob("on_metric")),
}, SchedulerTraits)

AVERAGINGS = Registry("averaging", {
    "none": option("trainrun.options.averaging:none"),
    "ema": option("trainrun.options.averaging:ema", "decay warmup warmup_power warmup_gamma"),
    "swa": option("trainrun.options.averaging:swa", "start_epoch lr anneal_epochs anneal_strategy"),
})

ACTIVATIONS = Registry("activation", {
    "relu": option("torch.nn:ReLU", gain="relu"),
    "leaky_relu": option("torch.nn:LeakyReLU", "negative_slope", gain="leaky_relu", slope="negative_slope"),
    "prelu": option("torch.nn:PReLU", "num_parameters init", gain="leaky_relu", slope="init"),
    "rrelu": option("torch.nn:RReLU", "lower upper", gain="leaky_relu", slope=("lower", "upper")),
    "elu": option("torch.nn:ELU", "alpha", gain="relu"),
    "selu": option("torch.nn:SELU", gain="selu", self_normalizing=True),
    "celu": option("torch.nn:CELU", "alpha", gain="relu"),
    "gelu": option("torch.nn:GELU", "approximate", gain="relu"),
    "silu": option("torch.nn:SiLU", gain="relu"),
    "mish": option("torch.nn:Mish", gain="relu"),
    "hardswish": option("torch.nn:Hardswish", gain="relu"),
    "softplus": option("torch.nn:Softplus", "beta threshold", gain="relu"),
    "tanh": option("torch.nn:Tanh", gain="tanh"),
    "sigmoid": option("torch.nn:Sigmoid", gain="sigmoid"),
    "hardtanh": option("trainrun.options.activation:hardtanh", "min_val max_val", gain="tanh"),
    "abs": option("trainrun.options.activation:Abs", gain="linear"),
    "identity": option("torch.nn:Identity", gain="linear"),
    "sign": option("trainrun.options.activation:Sign", gain="linear",
                   warning="activation=sign has zero gradient almost everywhere: the layers below it will not learn"),
    "custom": option("trainrun.options.custom:activation", "_target_ params", gain="linear"),  # init gain 1: unknown shape
}, ActivationTraits)

INITS = Registry("init", {
    "default": option("trainrun.options.init:default"),
    "xavier_uniform": option("trainrun.options.init:xavier_uniform", "gain"),
    "xavier_normal": option("trainrun.options.init:xavier_normal", "gain"),
    "kaiming_uniform": option("trainrun.options.init:kaiming_uniform", "mode"),
    "kaiming_normal": option("trainrun.options.init:kaiming_normal", "mode"),
    "lecun_uniform": option("trainrun.options.init:lecun_uniform"),
    "lecun_normal": option("trainrun.options.init:lecun_normal"),
    "orthogonal": option("trainrun.options.init:orthogonal", "gain"),
    "normal": option("trainrun.options.init:normal", "mean std"),
    # N(0, 1) whatever the layer's width: the naive initialization the lectures warn about
    "standard_normal": option("trainrun.options.init:normal", preset={"mean": 0.0, "std": 1.0}),
    "uniform": option("trainrun.options.init:uniform", "a b"),
    "zeros": option("trainrun.options.init:zeros",
                    warning="init=zeros: every hidden unit gets the same gradient, so they stay identical (symmetry)"),
})

NORMS = Registry("norm", {
    "none": option("trainrun.options.norm:no_layer"),
    "batch": option("trainrun.options.norm:batch", "eps momentum", batch_statistics=True),
    "layer": option("trainrun.options.norm:layer", "eps"),
    "group": option("trainrun.options.norm:group", "num_groups eps", divides="num_groups"),
    "instance": option("trainrun.options.norm:instance", "eps affine", needs_positions=True),
    "weight": option("trainrun.options.norm:no_layer", reparametrizes=True),
}, NormTraits)

LOSSES = Registry("loss", {
    "cross_entropy": option("trainrun.options.loss:cross_entropy", classification_only=True),
    "nll": option("trainrun.options.loss:nll", classification_only=True),
    "bce": option("trainrun.options.loss:bce", classification_only=True),
    "kl_div": option("trainrun.options.loss:kl_div", classification_only=True, vmaps=False),
    "mse": option("trainrun.options.loss:mse"),
    "l1": option("trainrun.options.loss:l1"),
    "huber": option("trainrun.options.loss:huber", "delta"),
    "custom": option("trainrun.options.custom:loss", "_target_ params", vmaps=False),
}, LossTraits)

MODELS = Registry("model", {
    "mlp": option("trainrun.options.model:mlp", "hidden depth width", requires={"depth": "width"},
                  normalized="trainrun.options.widths:mlp"),
    "linear": option("trainrun.options.model:linear", normalized="trainrun.options.widths:linear"),
    "cnn": option("trainrun.options.model:convnet", "channels kernel_size pool hidden", preset={"dims": 2}, needs="images",
                 normalized="trainrun.options.widths:cnn"),
    "cnn1d": option("trainrun.options.model:convnet", "channels kernel_size pool hidden", preset={"dims": 1},
                    needs="sequences", normalized="trainrun.options.widths:cnn1d"),
    "resnet": option("trainrun.options.model:resnet", "depth width", needs="images", normalized="trainrun.options.widths:resnet",
                     ranges={"depth": Range(ge=8, modulo=(6, 2), expected="6n+2, a CIFAR ResNet's depth (8, 14, 20, 32, 44, 56, ...)")}),
    "polynomial": option("trainrun.options.model:polynomial", "degree", normalized="trainrun.options.widths:linear",
                         input_shape=(1,)),
    "torchvision": option("trainrun.options.model:torchvision_model", "name small_input", own_layers=True, needs="images",
                          weights_statistics="trainrun.options.model:torchvision_statistics",
                          weight_names="trainrun.options.model:torchvision_weight_names",
                          library_weights="trainrun.options.model:torchvision_weights"),
    "timm": option("trainrun.options.model:timm_model", "name", own_layers=True, needs="images",
                   weights_statistics="trainrun.options.model:timm_statistics", weight_names="trainrun.options.model:timm_weight_names",
                   library_weights="trainrun.options.model:timm_weights"),
    "custom": option("trainrun.options.custom:model", "_target_ params"),
}, ModelTraits)

AUGMENTATIONS = Registry("augmentation", {
    "flip": option("trainrun.options.augmentation:flip", "p", needs="images"),
    "crop": option("trainrun.options.augmentation:crop", "p padding", needs="images"),
    "rotate": option("trainrun.options.augmentation:rotate", "p degrees", needs="images"),
    "affine": option("trainrun.options.augmentation:affine", "p degrees translate scale", ordered="scale", needs="images"),
    "noise": option("trainrun.options.augmentation:noise", "p std"),
    # erase's scale is the erased fraction of the image's area (affine's is a zoom factor)
    "erase": option("trainrun.options.augmentation:erase", "p scale", ranges={"scale": Range(gt=0, le=1, length=2)},
                    ordered="scale", needs="images"),
    "blur": option("trainrun.options.augmentation:blur", "p kernel_size sigma", ordered="sigma", needs="images"),
    "color": option("trainrun.options.augmentation:color", "p brightness contrast saturation hue groups", needs="images",
                    channels=3),
    "randaugment": option("trainrun.options.augmentation:randaugment", "num_ops magnitude groups", needs="images"),
    "autoaugment": option("trainrun.options.augmentation:autoaugment", "policy groups", needs="images"),
    "trivialaugment": option("trainrun.options.augmentation:trivialaugment", "groups", needs="images"),
    "mixup": option("trainrun.options.augmentation:mixup", "alpha", mixes_labels=True),
    "cutmix": option("trainrun.options.augmentation:cutmix", "alpha", mixes_labels=True, needs="images"),
}, AugmentationTraits)

DATASETS = Registry("data", {
    "digits": option("trainrun.data.shipped:digits", gives="images",
                     scaling="8x8 pixel values 0-16 divided by 16: float32 in [0, 1], 0 the background"),
    "mnist": option("trainrun.data.shipped:mnist", gives="images", files="trainrun.data.shipped:mnist_files"),
    "fashion_mnist": option("trainrun.data.shipped:fashion_mnist", gives="images", files="trainrun.data.shipped:fashion_mnist_files"),
    "cifar10": option("trainrun.data.shipped:cifar10", gives="images", files="trainrun.data.shipped:cifar10_files"),
    "mnist1d": option("trainrun.data.shipped:mnist1d", gives="sequences"),
    "polynomial": option("trainrun.data.shipped:polynomial", "n_samples noise", gives="features"),
    "least_squares": option("trainrun.data.shipped:least_squares", "n_samples n_features noise", gives="features"),
    "spirals": option("trainrun.data.shipped:spirals", "n_samples noise turns", gives="features"),
    "synthetic_images": option("trainrun.data.shipped:synthetic_images", "n_samples image_shape num_classes", gives="images"),
    "folder": option("trainrun.data.folder:folder", "on_bad_file image_size channels cache_dir", gives="images",
                     paths={"root": "folder"}),
    "table": option("trainrun.data.table:table", "path target features task max_classes missing", gives="features",
                    paths={"path": "file"}),
    "arrays": option("trainrun.data.arrays:arrays", "path targets", paths={"path": "file", "targets": "file"}),
    "custom": option("trainrun.data.custom:custom", "_target_ params num_workers num_classes"),
}, DataTraits)

NORMALIZERS = Registry("normalize", {
    "none": option("trainrun.data.normalize:Identity"),
    "standardize": option("trainrun.data.normalize:Standardize"),
    "pca": option("trainrun.data.normalize:PCA", preset={"whiten": False}),
    "whiten": option("trainrun.data.normalize:PCA", preset={"whiten": True}),
})

SAMPLERS = Registry("sampler", {
    "shuffle": option("trainrun.data.batches:shuffled"),  # a new permutation every epoch (practical SGD)
    "replacement": option("trainrun.data.batches:with_replacement"),  # every batch drawn at random (canonical SGD)
    "sequential": option("trainrun.data.batches:sequential"),
})

PRECISIONS = Registry("precision", {
    "32": option(None),
    "bf16": option(None, autocast="bfloat16"),
    "16-mixed": option(None, autocast="float16", grad_scaler=True),
}, PrecisionTraits)

PRUNERS = Registry("pruner", {
    "median": option("optuna.pruners:MedianPruner", "n_startup_trials n_warmup_steps"),
    "successive_halving": option("optuna.pruners:SuccessiveHalvingPruner", "min_resource"),
    "hyperband": option("optuna.pruners:HyperbandPruner", "min_resource"),
    "none": option("optuna.pruners:NopPruner"),
})

SEARCH_SAMPLERS = Registry("hydra.sweeper.sampler", {
    "tpe": option("optuna.samplers:TPESampler"),
    "random": option("optuna.samplers:RandomSampler"),  # Bergstra and Bengio 2012
})

REGISTRIES = {r.group: r for r in (OPTIMIZERS, SCHEDULERS, AVERAGINGS, ACTIVATIONS, INITS, NORMS, LOSSES, MODELS, AUGMENTATIONS,
                                   DATASETS, NORMALIZERS, SAMPLERS, PRECISIONS, PRUNERS, SEARCH_SAMPLERS)}
