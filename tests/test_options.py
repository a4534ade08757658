"""Each option does what its name says, checked on the built object: a test here fails if the option is
ignored or swapped for its neighbour (the optimizer's class and knobs, the activation's function, the
initializer's statistics, the norm's layers, the loss's value, the augmentation's change to a batch)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_config
from trainrun.registry import REGISTRIES


def shipped(group: str) -> list[str]:
    """The group's options but `custom` (the user's own code: tests/test_custom.py)."""
    return sorted(set(REGISTRIES[group]) - {"custom"})


# ---------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("kind", shipped("optimizer"))
def test_optimizer_is_its_class_with_every_knob_of_its_yaml(kind):
    from trainrun.options.optimizer import make_optimizer

    cfg = make_config([f"optimizer={kind}"])
    opt = make_optimizer(cfg.optimizer, nn.Linear(4, 2), set())
    record = REGISTRIES["optimizer"][kind]
    assert type(opt) is record.builder()
    group = opt.param_groups[0]
    for knob in record.knobs:
        value = cfg.optimizer[knob]
        assert (tuple(group[knob]) == tuple(value)) if knob == "betas" else group[knob] == value, knob
    for key, value in record.preset.items():
        assert group[key] == value
    if type(opt) is torch.optim.SGD:  # the three SGD flavours differ exactly here
        expected = {"sgd": (0, False), "momentum": (0.9, False), "nesterov": (0.9, True)}[kind]
        assert (group["momentum"], group["nesterov"]) == expected


# values that are neither a YAML's nor torch's default: a knob that is not passed on fails here
UNUSUAL = {"lr": 0.0123, "momentum": 0.37, "dampening": 0.21, "weight_decay": 0.0031, "betas": [0.81, 0.97],
           "eps": 3e-7, "alpha": 0.77, "rho": 0.66, "lr_decay": 0.013, "initial_accumulator_value": 0.05,
           "amsgrad": True, "centered": True, "momentum_decay": 0.007, "decoupled_weight_decay": True, "max_iter": 7,
           "history_size": 11, "line_search_fn": "strong_wolfe"}


@pytest.mark.parametrize("kind", shipped("optimizer"))
def test_optimizer_passes_on_every_knob_set_to_an_unusual_value(kind):
    from trainrun.options.optimizer import make_optimizer

    record = REGISTRIES["optimizer"][kind]
    values = {knob: UNUSUAL[knob] for knob in record.knobs}
    overrides = [f"optimizer.{k}={str(v).lower() if isinstance(v, bool) else v}".replace(" ", "") for k, v in values.items()]
    cfg = make_config([f"optimizer={kind}", *overrides])
    group = make_optimizer(cfg.optimizer, nn.Linear(4, 2), set()).param_groups[0]
    for knob, value in values.items():
        assert (list(group[knob]) == value) if knob == "betas" else group[knob] == value, knob


# ---------------------------------------------------------------------------- activations
# each activation with its knobs set away from torch's defaults, so a builder that drops a knob fails
KNOBS = {
    "leaky_relu": ["activation.negative_slope=0.2"], "prelu": ["activation.init=0.4"],
    "rrelu": ["activation.lower=0.05", "activation.upper=0.15"], "elu": ["activation.alpha=0.5"],
    "celu": ["activation.alpha=2.0"], "hardtanh": ["activation.min_val=-2.0", "activation.max_val=0.5"],
    "softplus": ["activation.beta=2.0", "activation.threshold=1.5"], "gelu": ["activation.approximate=tanh"],
}
REFERENCE = {
    "relu": F.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.2), "prelu": lambda x: F.leaky_relu(x, 0.4),
    "rrelu": lambda x: F.leaky_relu(x, (0.05 + 0.15) / 2),  # eval mode: the mean slope
    "elu": lambda x: F.elu(x, 0.5), "selu": F.selu, "celu": lambda x: F.celu(x, 2.0),
    "gelu": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "mish": F.mish, "hardswish": F.hardswish,
    "softplus": lambda x: F.softplus(x, beta=2.0, threshold=1.5), "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "hardtanh": lambda x: F.hardtanh(x, -2.0, 0.5), "abs": torch.abs, "identity": lambda x: x, "sign": torch.sign,
}


def test_every_activation_has_a_reference():
    assert set(REFERENCE) == set(shipped("activation"))


@pytest.mark.parametrize("kind", shipped("activation"))
def test_activation_computes_its_function_inside_the_model(kind):
    from trainrun.options.model import build_model
    from trainrun.data import load

    cfg = make_config([f"activation={kind}", *KNOBS.get(kind, []), "data.subset=64"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    model, _ = build_model(cfg, data)
    act = model.fc1.act.eval()
    x = torch.linspace(-3, 3, 61).view(1, -1)
    with torch.no_grad():
        assert torch.allclose(act(x), REFERENCE[kind](x), atol=1e-6)


# ---------------------------------------------------------------------------- initializers
FAN_IN, FAN_OUT = 128, 512
# (variance of the weights, bound |w| <= bound for uniform ones); ReLU is the run's activation
INIT_STATISTICS = {
    "default": (1 / (3 * FAN_IN), 1 / math.sqrt(FAN_IN)),  # PyTorch's kaiming_uniform(a=sqrt(5))
    "xavier_uniform": (2 / (FAN_IN + FAN_OUT), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "xavier_normal": (2 / (FAN_IN + FAN_OUT), None),
    "kaiming_uniform": (2 / FAN_IN, math.sqrt(6 / FAN_IN)),
    "kaiming_normal": (2 / FAN_IN, None),
    "lecun_uniform": (1 / FAN_IN, math.sqrt(3 / FAN_IN)),
    "lecun_normal": (1 / FAN_IN, None),
    "orthogonal": (1 / FAN_OUT, None),  # orthonormal columns of a 512 x 128 matrix
    "normal": (0.01 ** 2, None),
    "standard_normal": (1.0, None),  # N(0, 1) whatever the width
    "uniform": (0.1 ** 2 / 12, 0.05),
    "zeros": (0.0, 0.0),
}


@pytest.mark.parametrize("kind", shipped("init"))
def test_initializer_gives_its_variance_and_bound(kind):
    from trainrun.options.activation import nonlinearity
    from trainrun.options.init import initialize

    torch.manual_seed(0)
    cfg = make_config([f"init={kind}"])
    layer = nn.Sequential(nn.Linear(FAN_IN, FAN_OUT))
    initialize(layer, cfg.init, nonlinearity(cfg.activation))
    w = layer[0].weight.detach()
    variance, bound = INIT_STATISTICS[kind]
    assert float(w.var(unbiased=False)) == pytest.approx(variance, rel=0.05, abs=1e-9)
    if bound is not None:
        assert float(w.abs().max()) <= bound + 1e-7 and float(w.abs().max()) >= 0.95 * bound
    else:  # normal: the tails reach past the bound a uniform of that variance would have
        assert float(w.abs().max()) > math.sqrt(3 * variance) * 1.2
    if kind == "orthogonal":
        assert torch.allclose(w.T @ w, torch.eye(FAN_IN), atol=1e-4)


# ---------------------------------------------------------------------------- norms
NORM_LAYERS = {"none": (), "batch": (nn.BatchNorm1d,), "layer": (nn.LayerNorm,), "group": (nn.GroupNorm,),
               "instance": (nn.InstanceNorm2d,), "weight": ()}


@pytest.mark.parametrize("kind", shipped("norm"))
def test_norm_puts_its_layers_in_the_model(kind):
    from trainrun.data import load
    from trainrun.options.model import build_model

    model_args = ["model=cnn"] if kind == "instance" else []
    cfg = make_config([f"norm={kind}", "data.subset=64", *model_args])
    model, _ = build_model(cfg, load(cfg.data, 0, torch.device("cpu"), prenormalize=True))
    norms = {type(m) for m in model.modules() if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm,
                                                                 nn.GroupNorm))}
    assert norms == set(NORM_LAYERS[kind])
    reparametrized = any(nn.utils.parametrize.is_parametrized(m) for m in model.modules())
    assert reparametrized == (kind == "weight")


# ---------------------------------------------------------------------------- losses
@pytest.mark.parametrize("kind", shipped("loss"))
def test_loss_value_matches_its_formula(kind):
    from trainrun.options.loss import make_loss

    torch.manual_seed(0)
    out, y = torch.randn(8, 3), torch.randint(3, (8,))
    onehot = F.one_hot(y, 3).float()
    expected = {
        "cross_entropy": F.cross_entropy(out, y), "nll": F.nll_loss(F.log_softmax(out, 1), y),
        "bce": F.binary_cross_entropy_with_logits(out, onehot),
        "kl_div": F.kl_div(F.log_softmax(out, 1), onehot, reduction="batchmean"),
        "mse": F.mse_loss(out, onehot), "l1": F.l1_loss(out, onehot), "huber": F.huber_loss(out, onehot, delta=0.3),
    }[kind]
    knobs = ["loss.delta=0.3"] if kind == "huber" else []  # not torch's default of 1: a dropped knob would show
    criterion, _ = make_loss(make_config([f"loss={kind}", *knobs]).loss, "classification", 3, 0.0)
    assert float(criterion(out, y)) == pytest.approx(float(expected), rel=1e-6)


# ---------------------------------------------------------------------------- augmentations
@pytest.mark.parametrize("kind", shipped("augmentation"))
def test_augmentation_changes_a_batch_and_keeps_what_it_should(kind):
    from trainrun.options.augmentation import make_augmentation
    from trainrun.data import load

    torch.manual_seed(0)
    cfg = make_config([f"augmentation=[{kind}]", "data=synthetic_images", "data.n_samples=64",
                       *([f"augmentation.{kind}.p=1.0"] if "p" in REGISTRIES["augmentation"][kind].knobs else [])])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=False)
    x, y = data.fetch(data.train, slice(0, 32))
    out, labels = make_augmentation(cfg.augmentation, data)(x.clone(), y)
    assert out.shape == x.shape and not torch.equal(out, x)
    if REGISTRIES["augmentation"].trait(kind, "mixes_labels"):
        assert labels.shape == (32, data.num_classes) and torch.allclose(labels.sum(1), torch.ones(32))
    else:
        assert torch.equal(labels, y)
