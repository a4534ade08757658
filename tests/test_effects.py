"""What each training choice does, asserted on real (tiny) runs and on the built objects."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from trainrun.errors import ConfigError
from conftest import make_config, train_run
from trainrun.data import Batches, Split, load
from trainrun.registry import AUGMENTATIONS, NORMALIZERS
from trainrun.options.model import build_model
from trainrun.options.weights import read_state
from trainrun.run.stopping import EarlyStopping


def built(overrides=(), data_overrides=("data=mnist1d",)):
    """The model a config builds, on real data shapes (mnist1d is generated locally)."""
    cfg = make_config([*data_overrides, *overrides])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    return build_model(cfg, data)[0], data, cfg


# ---------------------------------------------------------------------------- init
@pytest.mark.parametrize("init,activation,expected_std", [
    ("kaiming_normal", "relu", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("kaiming_normal", "tanh", lambda fan_in, fan_out: (5 / 3) / math.sqrt(fan_in)),
    ("kaiming_uniform", "relu", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("xavier_uniform", "relu", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    ("xavier_normal", "relu", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    ("lecun_normal", "selu", lambda fan_in, fan_out: 1 / math.sqrt(fan_in)),
    ("lecun_uniform", "selu", lambda fan_in, fan_out: 1 / math.sqrt(fan_in)),
    ("normal", "relu", lambda fan_in, fan_out: 0.01),
])
def test_init_gives_the_expected_weight_scale(init, activation, expected_std):
    model, _, _ = built([f"init={init}", f"activation={activation}", "model.hidden=[512,512]"])
    w = model.fc2.linear.weight  # 512 x 512: enough entries for a tight estimate
    fan_out, fan_in = w.shape
    assert float(w.detach().std()) == pytest.approx(expected_std(fan_in, fan_out), rel=0.03)


def test_orthogonal_init_gives_orthonormal_rows():
    model, _, _ = built(["init=orthogonal", "model.hidden=[256,256]"])
    w = model.fc2.linear.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(256), atol=1e-4)


def test_uniform_init_and_zero_biases():
    model, _, _ = built(["init=uniform", "init.a=-0.2", "init.b=0.2", "init.bias=zeros"])
    w = model.fc1.linear.weight.detach()
    assert -0.2 <= float(w.min()) < -0.19 and 0.19 < float(w.max()) <= 0.2
    assert float(model.fc1.linear.bias.detach().abs().max()) == 0


def test_zeros_init_keeps_hidden_units_identical(tmp_path):
    train_run(tmp_path, ["init=zeros", "activation=tanh", "trainer.epochs=3"])
    state = read_state(str(tmp_path))
    w1, w2 = state["fc1.linear.weight"], state["fc2.linear.weight"]
    assert torch.allclose(w1, w1[:1].expand_as(w1)) and torch.allclose(w2, w2[:1].expand_as(w2))


# ---------------------------------------------------------------------------- activation
def test_sign_activation_runs_warns_and_does_not_learn(tmp_path, caplog):
    learned = train_run(tmp_path / "relu", ["trainer.epochs=5"])
    with caplog.at_level("WARNING", logger="trainrun"):
        stuck = train_run(tmp_path / "sign", ["activation=sign", "trainer.epochs=5"])
    assert "zero gradient" in caplog.text
    assert learned["test/acc"] > 0.8
    # only the output layer learns on top of frozen random sign features
    assert stuck["test/acc"] < learned["test/acc"] - 0.15


def test_leaky_relu_slope_reaches_the_layer_and_the_init_gain():
    model, _, _ = built(["activation=leaky_relu", "activation.negative_slope=0.2", "init=kaiming_normal",
                         "model.hidden=[512,512]"])
    assert model.fc1.act.negative_slope == 0.2
    assert float(model.fc2.linear.weight.detach().std()) == pytest.approx(math.sqrt(2 / (1 + 0.2 ** 2) / 512), rel=0.03)


# ---------------------------------------------------------------------------- norm, dropout
def test_norm_position_before_and_after_the_activation():
    before, _, _ = built(["norm=layer", "norm.position=before"])
    after, _, _ = built(["norm=layer", "norm.position=after"])
    assert list(before.fc1._modules) == ["linear", "norm", "act"]
    assert list(after.fc1._modules) == ["linear", "act", "norm"]


def test_batchnorm_uses_running_statistics_in_eval():
    model, data, _ = built(["norm=batch"])
    x = data.train.x[:64]
    model.train()
    model(x)  # one update of the running statistics
    model.eval()
    bn = model.fc1.norm
    one, in_batch = model(x[:1]), model(x)[:1]
    assert torch.allclose(one, in_batch, atol=1e-5)  # eval: a sample's output does not depend on its batch
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_dropout_is_on_in_training_and_off_in_eval():
    model, data, _ = built(["regularization=dropout"])
    x = data.train.x[:32]
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_selu_gets_alpha_dropout():
    model, _, _ = built(["activation=selu", "regularization.dropout=0.1"])
    assert isinstance(model.fc1.dropout, nn.AlphaDropout)


def test_weight_norm_reparametrizes_every_layer():
    model, _, _ = built(["norm=weight"])
    assert all(nn.utils.parametrize.is_parametrized(m) for m in model.modules() if isinstance(m, nn.Linear))


# ---------------------------------------------------------------------------- optimizer, scheduler
def lr_sequence(overrides, lr: float, intervals: int) -> list[float]:
    """The lr before each of `intervals` scheduler steps, for the scheduler a config builds."""
    from trainrun.options.scheduler import Plan, make_scheduler

    cfg = make_config(["optimizer=sgd", f"optimizer.lr={lr}", *overrides])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(cfg.scheduler, opt, Plan(total=intervals, per_epoch=1, monitor_mode="min"))
    lrs = []
    for _ in range(intervals):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_lr_sequence_of_step_schedule():
    lrs = lr_sequence(["scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5"], lr=0.8, intervals=6)
    assert lrs == pytest.approx([0.8, 0.8, 0.4, 0.4, 0.2, 0.2])


@pytest.mark.parametrize("kind,check", [
    ("inverse_time", lambda lrs: lrs[:3] == pytest.approx([1.0, 1 / 1.5, 1 / 2.0])),
    ("exponential", lambda lrs: lrs[:3] == pytest.approx([1.0, 0.9, 0.81])),
    ("multistep", lambda lrs: lrs[9] == 1.0 and lrs[10] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.01)),
    ("cosine", lambda lrs: lrs[0] == 1.0 and lrs[50] == pytest.approx(0.5, abs=0.02) and lrs[-1] < 0.01),
    ("warmup_cosine", lambda lrs: lrs[0] < lrs[5] < lrs[9] and max(lrs) == pytest.approx(1.0, abs=0.01) and lrs[-1] < 0.01),
    ("onecycle", lambda lrs: lrs[0] < 1.0 and max(lrs) == pytest.approx(10.0, rel=0.01) and lrs[-1] < 0.01),
    ("cyclic", lambda lrs: lrs[0] == pytest.approx(0.1) and lrs[20] == pytest.approx(1.0) and lrs[40] == pytest.approx(0.1)
     and lrs[10] == pytest.approx(0.55)),  # a triangle: up over step_size_up=20 intervals, then down
])
def test_scheduler_shapes(kind, check):
    lrs = lr_sequence([f"scheduler={kind}", "scheduler.interval=epoch",
                       *(["scheduler.warmup_epochs=10"] if kind == "warmup_cosine" else []),
                       *(["scheduler.step_size_up=20"] if kind == "cyclic" else [])], lr=1.0, intervals=100)
    assert check(lrs), lrs[:20]


def test_plateau_scheduler_cuts_lr_when_validation_stalls(tmp_path):
    from trainrun.options.scheduler import Plan, make_scheduler

    cfg = make_config(["scheduler=plateau", "scheduler.patience=1", "scheduler.factor=0.5"])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(cfg.scheduler, opt, Plan(total=10, per_epoch=1, monitor_mode="min"))
    for value in [1.0, 0.9, 0.9, 0.9]:
        sched.step(value)
    assert opt.param_groups[0]["lr"] == 0.5


def test_full_batch_gradient_descent_takes_one_step_per_epoch(tmp_path):
    metrics = train_run(tmp_path, ["data.batch_size=full", "optimizer=sgd", "trainer.epochs=4"])
    assert metrics["steps"] == 4


def test_lbfgs_with_full_batch_solves_least_squares(tmp_path):
    metrics = train_run(tmp_path, ["data=least_squares", "data.n_samples=1000", "data.n_features=20", "model=linear",
                                   "optimizer=lbfgs", "data.batch_size=full", "trainer.epochs=3", "data.subset=null"])
    assert metrics["test/loss"] < 0.02  # the noise floor is 0.1^2 = 0.01


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"])
def test_optimizers_bring_the_loss_down(tmp_path, optimizer):
    metrics = train_run(tmp_path, [f"optimizer={optimizer}", "trainer.epochs=4", "data.subset=null"])
    assert metrics["test/loss"] < 0.5 and metrics["test/acc"] > 0.85, metrics


def test_grad_accumulation_matches_a_larger_batch(tmp_path):
    """Two accumulated batches of 32 take the same step as one batch of 64 (same samples, same order)."""
    common = ["data.sampler=sequential", "optimizer=sgd", "trainer.epochs=1", "data.subset=256"]
    big = train_run(tmp_path / "big", [*common, "data.batch_size=64"])
    accumulated = train_run(tmp_path / "acc", [*common, "data.batch_size=32", "trainer.grad_accum_steps=2"])
    assert big["steps"] == accumulated["steps"] == 4
    assert accumulated["val/loss"] == pytest.approx(big["val/loss"], rel=1e-4)


def test_backbone_lr_scale_and_freeze_after_checkpoint(tmp_path):
    from trainrun.options.optimizer import make_optimizer

    train_run(tmp_path / "first", [])
    # a narrower second layer does not fit: only the output layer may differ
    narrower = make_config([f"model.weights={tmp_path / 'first'}", "model.hidden=[256,128]"])
    data = load(narrower.data, 0, torch.device("cpu"), prenormalize=True)
    with pytest.raises(ConfigError, match=r"fc2.linear.weight is \(256, 256\) there and \(128, 256\) here"):
        build_model(narrower, data)
    # a new head: fc1 and fc2 are reused from the checkpoint (at a tenth of the lr), the head starts fresh
    cfg = make_config([f"model.weights={tmp_path / 'first'}", "optimizer.backbone_lr_scale=0.1", "model.new_head=true"])
    model, reused = build_model(cfg, data)
    assert {"fc1.linear.weight", "fc2.linear.bias"} <= reused and "head.weight" not in reused
    opt = make_optimizer(cfg.optimizer, model, reused)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-4, 1e-3])
    frozen, _ = build_model(make_config([f"model.weights={tmp_path / 'first'}", "model.freeze=[fc1]"]), data)
    assert not frozen.fc1.linear.weight.requires_grad and frozen.fc2.linear.weight.requires_grad
    first_two, _ = build_model(make_config(["model.freeze=2"]), data)
    assert [n for n, p in first_two.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    head_only = make_config([f"model.weights={tmp_path / 'first'}", "model.head_only=true",
                             "optimizer.backbone_lr_scale=0.1"])
    model, reused = build_model(head_only, data)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert "head.weight" not in reused  # a new head learns at the full lr, not the reused layers' tenth
    assert [g["lr"] for g in make_optimizer(head_only.optimizer, model, reused).param_groups if g["params"]] == [1e-3]
    saved = read_state(str(tmp_path / "first"))
    kept, reused = build_model(make_config([f"model.weights={tmp_path / 'first'}"]), data)
    assert torch.equal(kept.head.weight, saved["head.weight"]) and "head.weight" in reused  # the same task: kept
    anew, reused = build_model(make_config([f"model.weights={tmp_path / 'first'}", "model.new_head=true"]), data)
    assert not torch.equal(anew.head.weight, saved["head.weight"]) and "head.weight" not in reused
    assert torch.equal(anew.fc1.linear.weight, saved["fc1.linear.weight"]) and anew.head.weight.requires_grad


# ---------------------------------------------------------------------------- regularization
def test_clip_norm_bounds_the_gradient():
    from trainrun.options.regularization import Regularizer

    cfg = make_config(["regularization=clip", "regularization.grad_clip_norm=0.01"])
    layer = nn.Linear(10, 10)
    layer(torch.randn(8, 10)).pow(2).sum().backward()
    Regularizer(cfg.regularization, layer).clip_gradients()
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in layer.parameters()]))
    assert float(total) == pytest.approx(0.01, rel=1e-3)


def test_max_norm_bounds_each_neuron(tmp_path):
    train_run(tmp_path, ["regularization.max_norm=0.5", "optimizer.lr=0.01"])
    w = read_state(str(tmp_path / "last.pt"))["fc1.linear.weight"]
    assert float(w.norm(dim=1).max()) <= 0.5 + 1e-5


def test_l2_and_l1_penalties_shrink_the_weights(tmp_path):
    norms = {}
    for name, extra in (("plain", []), ("l2", ["regularization.weight_decay=0.5"]), ("l1", ["regularization.l1=0.05"])):
        # SGD: under Adam a coupled L2 penalty is rescaled away (which is why AdamW exists)
        train_run(tmp_path / name, ["trainer.epochs=3", "optimizer=sgd", *extra])
        norms[name] = float(read_state(str(tmp_path / name / "last.pt"))["fc1.linear.weight"].norm())
    assert norms["l2"] < 0.8 * norms["plain"] and norms["l1"] < 0.8 * norms["plain"], norms


def test_mc_dropout_reports_its_accuracy_beside_the_plain_one(tmp_path):
    metrics = train_run(tmp_path, ["regularization=dropout", "regularization.mc_dropout_samples=8", "trainer.epochs=3"])
    assert 0.5 < metrics["test/mc_acc"] <= 1.0 and abs(metrics["test/mc_acc"] - metrics["test/acc"]) < 0.15


def test_mc_dropout_passes_keep_dropout_on_and_average_the_samples():
    from trainrun.run.trainer import evaluate_mc_dropout

    model, data, _ = built(["regularization.dropout=0.5"])
    modes = []
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.register_forward_hook(lambda module, i, o: modes.append(module.training))
    evaluate_mc_dropout(model, data.test, data, samples=4, batch_size=len(data.test))
    assert modes and all(modes) and len(modes) == 4 * sum(isinstance(m, nn.Dropout) for m in model.modules())
    assert not model.training and not any(m.training for m in model.modules())  # eval mode again afterwards


def test_label_smoothing_raises_the_floor_of_the_loss(tmp_path):
    smooth = train_run(tmp_path, ["regularization=label_smoothing", "trainer.epochs=8", "trainer.early_stopping.enabled=false"])
    # with smoothing 0.1 over 10 classes, cross-entropy cannot go below the target's entropy (~0.5)
    assert smooth["train/loss"] > 0.45


# ---------------------------------------------------------------------------- augmentation
def test_augmentations_draw_per_sample():
    from trainrun.options.augmentation import make_augmentation

    cfg = make_config(["augmentation=[flip]", "model=cnn"])
    _, data, _ = built([], ["data=digits"])
    augment = make_augmentation(cfg.augmentation, data)
    x = torch.rand(1000, 1, 8, 8)
    out, _ = augment(x, torch.zeros(1000, dtype=torch.long))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and 400 < int(flipped.sum()) < 600


def test_crop_translates_by_whole_pixels_within_the_padding():
    from trainrun.options.augmentation import crop

    _, data, _ = built([], ["data=digits"])
    x = torch.zeros(200, 1, 8, 8)
    x[:, :, 4, 4] = 1.0  # one lit pixel per image
    out, _ = crop(data, p=1.0, padding=2)(x, None)
    assert torch.equal(out.flatten(1).sum(1), torch.ones(200))  # moved, not blurred
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1], (out[:, 0] == 1).nonzero()[:, 2]
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 15  # many different shifts in one batch


def test_color_needs_rgb_and_jitters_rgb():
    from trainrun.check import check_data
    from trainrun.options.augmentation import color
    from trainrun.errors import ConfigError

    _, gray, _ = built([], ["data=digits"])
    cfg = make_config(["augmentation=[color]"])
    knobs = AUGMENTATIONS.knobs(cfg.augmentation.color, "color")  # its YAML's values
    with pytest.raises(ConfigError, match=r"augmentation color needs 3-channel \(RGB\) images; this data has shape \(1, 8, 8\)"):
        check_data(cfg, gray, 64)
    gray.input_shape = (3, 8, 8)  # the same factory on an RGB batch
    x = torch.rand(64, 3, 8, 8)
    out, _ = color(gray, **{**knobs, "p": 1.0})(x, None)
    assert out.shape == x.shape and not torch.equal(out, x) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_mixup_gives_soft_labels_that_sum_to_one():
    from trainrun.options.augmentation import make_augmentation

    cfg = make_config(["augmentation=[mixup]"])
    _, data, _ = built([], ["data=digits"])
    _, y = make_augmentation(cfg.augmentation, data)(torch.rand(16, 1, 8, 8), torch.randint(10, (16,)))
    assert y.shape == (16, 10) and torch.allclose(y.sum(1), torch.ones(16))


def test_augmented_images_change_during_training_only(tmp_path):
    metrics = train_run(tmp_path, ["augmentation=[noise]", "augmentation.noise.std=5.0", "trainer.epochs=3"])
    clean = train_run(tmp_path / "clean", ["trainer.epochs=3"])
    # heavy noise hurts training fit; evaluation sees clean images either way
    assert metrics["train/acc"] < clean["train/acc"]


# ---------------------------------------------------------------------------- data
def test_standardize_uses_train_statistics_per_feature():
    x = torch.randn(500, 6) * torch.tensor([1.0, 2, 3, 4, 5, 0]) + 7
    z = NORMALIZERS.create(None, Split(x, torch.zeros(len(x))), kind="standardize")(x)
    assert torch.allclose(z[:, :5].mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(z[:, :5].std(0), torch.ones(5), atol=1e-4)
    assert torch.allclose(z[:, 5], torch.zeros(500))  # a constant feature stays finite


@pytest.mark.parametrize("method", ["pca", "whiten"])
def test_pca_decorrelates_and_whiten_also_scales(method):
    x = torch.randn(2000, 4) @ torch.tensor([[2.0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 3, 1], [0, 0, 0, 0.5]])
    z = NORMALIZERS.create(None, Split(x, torch.zeros(len(x))), kind=method)(x)
    cov = torch.cov(z.T)
    assert torch.allclose(cov - torch.diag(cov.diag()), torch.zeros(4, 4), atol=1e-3)
    if method == "whiten":
        assert torch.allclose(cov.diag(), torch.ones(4), atol=0.05)  # up to the variance floor
    else:
        assert (cov.diag()[:-1] >= cov.diag()[1:]).all()  # largest variance first


def test_samplers():
    shuffle = torch.cat(list(Batches(100, 10, "shuffle", 0, torch.device("cpu")).epoch(1)))
    assert sorted(shuffle.tolist()) == list(range(100)) and shuffle.tolist() != list(range(100))
    replacement = torch.cat(list(Batches(100, 10, "replacement", 0, torch.device("cpu")).epoch(1)))
    assert len(replacement) == 100 and len(set(replacement.tolist())) < 100
    sequential = list(Batches(100, 10, "sequential", 0, torch.device("cpu")).epoch(1))
    assert sequential[0] == slice(0, 10) and len(sequential) == 10
    again = torch.cat(list(Batches(100, 10, "shuffle", 0, torch.device("cpu")).epoch(1)))
    assert torch.equal(shuffle, again)  # the order is a function of (seed, epoch)


def test_validation_split_is_seeded_and_disjoint():
    cfg = make_config(["data=spirals"])
    a = load(cfg.data, 3, torch.device("cpu"), prenormalize=False)
    b = load(cfg.data, 3, torch.device("cpu"), prenormalize=False)
    assert torch.equal(a.val.x, b.val.x)
    assert len(a.train) + len(a.val) + len(a.test) == 2000 and len(a.test) == 400 and len(a.val) == 160


@pytest.mark.slow  # everyday tier under 10 min: 33 s of a worker here
def test_spirals_need_a_nonlinear_model(tmp_path):
    linear = train_run(tmp_path / "lin", ["data=spirals", "model=linear", "trainer.epochs=15", "data.subset=null"])
    mlp = train_run(tmp_path / "mlp", ["data=spirals", "model=mlp", "trainer.epochs=15", "data.subset=null",
                                       "optimizer.lr=0.01"])
    assert linear["test/acc"] < 0.75 and mlp["test/acc"] > 0.9


# ---------------------------------------------------------------------------- early stopping, reproducibility
def test_early_stopping_fires_at_the_expected_epoch_on_a_crafted_curve():
    stopper = EarlyStopping("val/loss", "min", patience=3, min_delta=0.01)
    curve = [1.0, 0.8, 0.7, 0.695, 0.71, 0.69, 0.7, 0.5]
    stopped_at = next(epoch for epoch, v in enumerate(curve, 1) if (stopper.update(v, epoch), stopper.should_stop)[1])
    assert stopped_at == 6 and stopper.best_epoch == 3  # 0.695 and 0.69 are within min_delta of 0.7


def test_early_stopping_in_max_mode_for_accuracy():
    stopper = EarlyStopping("val/acc", "max", patience=1, min_delta=0)
    assert stopper.update(0.5, 1) and stopper.update(0.6, 2) and not stopper.update(0.55, 3)
    assert stopper.should_stop and stopper.best == 0.6


def test_early_stopping_stops_a_real_run_and_restores_the_best_weights(tmp_path):
    metrics = train_run(tmp_path, ["trainer.epochs=40", "trainer.early_stopping.patience=2", "data.subset=null",
                                   "optimizer.lr=0.01"])
    assert metrics["stop_reason"] == "early_stopping"
    assert metrics["epochs_run"] == metrics["best_epoch"] + 2
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"]


def test_divergence_stops_with_a_message(tmp_path):
    import io

    from rich.console import Console

    from trainrun.run.console import RunConsole
    from trainrun.run.trainer import train

    screen = io.StringIO()
    metrics = train(make_config(["optimizer=sgd", "optimizer.lr=1e6", "trainer.epochs=5", "data.subset=300",
                                 "logger.enabled=false"]), tmp_path, RunConsole(Console(file=screen, width=400)))
    assert metrics["stop_reason"] == "diverged" and metrics["epochs_run"] == 1
    assert "(diverged). Try a lower learning rate (optimizer.lr=1e+06 now)" in screen.getvalue()

    # the first step's loss comes before any update: a NaN there is not the learning rate's, and is not so blamed
    screen = io.StringIO()
    metrics = train(make_config(["init=normal", "init.std=1e30", "trainer.epochs=5", "data.subset=300",
                                 "logger.enabled=false"]), tmp_path / "init", RunConsole(Console(file=screen, width=400)))
    assert metrics["stop_reason"] == "diverged" and metrics["steps"] == 1
    assert "step 1: the loss is nan before any update, so not from the learning rate" in screen.getvalue()
    assert "Try a lower learning rate" not in screen.getvalue()


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    runs = [train_run(tmp_path / name, [f"trainer.seed={seed}", "augmentation=[noise]", "regularization=dropout"])
            for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    drop = lambda m: {k: v for k, v in m.items() if k != "wall_time_s"}
    assert drop(runs[0]) == drop(runs[1]) and drop(runs[0]) != drop(runs[2])


def test_checkpoint_holds_everything_to_resume(tmp_path):
    train_run(tmp_path, [])
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "early_stopping", "per_rank", "config"} <= set(state)
    assert state["epoch"] == 2 and len(state["per_rank"]) == 1  # one entry per process: its RNG and epoch sums
    assert {"python", "numpy", "torch"} <= set(state["per_rank"][0]["rng"]) and "progress" in state["per_rank"][0]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


# ---------------------------------------------------------------------------- device placement
def test_data_stay_on_the_accelerator_only_within_the_budget():
    from trainrun.data import storage_device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert storage_device(3 * 2**30, cuda, budget_gb=4.0) == cuda
    assert storage_device(5 * 2**30, cuda, budget_gb=4.0) == cpu  # gathered on the host, copied per batch
    assert storage_device(5 * 2**30, cpu, budget_gb=0.0) == cpu


def test_channels_last_trains_a_cnn_in_nhwc(tmp_path):
    nhwc = train_run(tmp_path / "nhwc", ["model=cnn", "trainer.channels_last=true", "trainer.epochs=3"])
    nchw = train_run(tmp_path / "nchw", ["model=cnn", "trainer.epochs=3"])
    weight = torch.load(tmp_path / "nhwc" / "last.pt", weights_only=True)["model"]["conv2.conv2d.weight"]
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert nhwc["test/loss"] == pytest.approx(nchw["test/loss"], rel=1e-4)  # a layout, not another computation


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_mixed_precision_trains_on_cpu(tmp_path, precision):
    full = train_run(tmp_path / "32", ["trainer.epochs=3"])
    mixed = train_run(tmp_path / precision, [f"trainer.precision={precision}", "trainer.epochs=3"])
    assert mixed["stop_reason"] == "completed" and mixed["test/acc"] > full["test/acc"] - 0.1
    from trainrun.run.build import build
    from trainrun.run.distributed import World

    parts = build(make_config([f"trainer.precision={precision}", "data.subset=64"]), World())
    with parts.autocast():  # the built run computes in the lower precision, and scales the loss for float16
        out = parts.model.fc1(parts.data.train.x[:4].flatten(1))
    assert out.dtype == {"bf16": torch.bfloat16, "16-mixed": torch.float16}[precision]
    assert parts.scaler.is_enabled() == (precision == "16-mixed")


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile's CPU backend compiles C++")
def test_compile_trains_the_same_model(tmp_path):
    compiled = train_run(tmp_path / "compiled", ["trainer.compile=true", "trainer.epochs=2"])
    eager = train_run(tmp_path / "eager", ["trainer.epochs=2"])
    assert compiled["steps"] == eager["steps"]
    assert compiled["test/loss"] == pytest.approx(eager["test/loss"], rel=1e-3)  # fused kernels, same math
    from trainrun.run.build import build
    from trainrun.run.distributed import World

    assert isinstance(build(make_config(["trainer.compile=true", "data.subset=64"]), World()).forward,
                      torch._dynamo.eval_frame.OptimizedModule)  # the loop steps the compiled module
    weights = torch.load(tmp_path / "compiled" / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod") for k in weights)  # the plain model's names: loadable anywhere


def test_max_steps_and_eval_every(tmp_path):
    metrics = train_run(tmp_path, ["trainer.max_steps=7", "trainer.epochs=10", "trainer.eval_every=2"])
    assert metrics["steps"] == 7 and metrics["epochs_run"] == 2  # 5 steps an epoch: stopped inside the second


def test_eval_every_evaluates_on_its_epochs_and_the_last(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_run(tmp_path, ["trainer.epochs=5", "trainer.eval_every=2", "logger.enabled=true",
                         "trainer.early_stopping.monitor=train/loss"])
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    epoch_at_step = {e.step: e.value for e in events.Scalars("time/epoch")}
    assert [epoch_at_step[e.step] for e in events.Scalars("loss/val")] == [2, 4, 5]


def test_deterministic_mode_does_not_leak_into_the_next_run_of_the_process(tmp_path):
    train_run(tmp_path / "a", ["trainer.deterministic=true"])
    assert torch.are_deterministic_algorithms_enabled()
    train_run(tmp_path / "b", [])
    assert not torch.are_deterministic_algorithms_enabled()  # a sweep's runs share one process


def test_a_deterministic_run_without_compile_does_not_import_the_compiler(tmp_path):
    """torch.use_deterministic_algorithms imports torch._inductor (2.8 s of each run here) for compile's flag."""
    code = ("import sys; from trainrun.run.build import seed_everything; import torch; "
            "seed_everything(0, True, False); assert torch.are_deterministic_algorithms_enabled(); "
            "assert 'torch._inductor.config' not in sys.modules; "
            "seed_everything(0, True, True); import torch._inductor.config as c; assert c.deterministic")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]


def test_digits_read_from_sklearns_file_equal_sklearns_loader():
    from sklearn.datasets import load_digits

    from trainrun.data.shipped import digits

    x, y, _, _ = digits(None, None)
    bunch = load_digits()
    assert torch.equal(x, torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0)
    assert torch.equal(y, torch.tensor(bunch.target))


def test_images_are_stored_as_bytes_and_batches_are_floats(tmp_path):
    cfg = make_config(["data=synthetic_images", "data.n_samples=500", "data.image_shape=[3,32,32]",
                       "data.normalize=standardize"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    assert data.train.x.dtype == torch.uint8 and data.train.x.element_size() == 1  # a quarter of float32's memory
    x, _ = data.fetch(data.train, slice(0, 8))
    assert x.dtype == torch.float32 and torch.equal(x, data.train.x[:8].float() / 255)
    z = data.normalize(x)  # per channel, with statistics of the stored bytes
    whole = data.fetch(data.train, slice(None))[0]
    assert torch.allclose(data.normalize(whole).mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert z.shape == x.shape
