"""Hostile and broken input: every bad override is one clear line, exit code 2, and leaves no run behind."""
from __future__ import annotations

import pytest

from conftest import cli

BAD_INPUT = [
    # unknown options and keys, with the valid choices or a suggestion
    (["optimizer=adamm"], "unknown optimizer 'adamm' (did you mean adam?); choose one of: adadelta"),
    (["model=transformer"], "unknown model 'transformer'"),
    (["activation=leakyrelu"], "unknown activation 'leakyrelu' (did you mean leaky_relu?)"),
    (["init=he"], "unknown init 'he'"),
    (["data=imagenet"], "unknown data 'imagenet'"),
    (["scheduler=cosine_warmup"], "unknown scheduler 'cosine_warmup'"),
    (["loss=hinge"], "unknown loss 'hinge'"),
    (["augmentation=[flip,crops]"], "unknown augmentation 'crops' (did you mean crop?)"),
    (["optimizer.lrr=0.1"], "unknown key 'optimizer.lrr' (did you mean lr?)"),
    (["trainer.epoch=3"], "unknown key 'trainer.epoch' (did you mean epochs?)"),
    (["trainer.early_stopping.patient=3"], "unknown key 'trainer.early_stopping.patient' (did you mean patience?)"),
    (["augmentation=[crop]", "augmentation.crop.pading=3"], "unknown key 'augmentation.crop.pading' (did you mean padding?)"),
    (["+trainer.foo=1"], "trainer.foo"),
    # wrong types
    (["optimizer.lr=abc"], "optimizer.lr: Value 'abc'"),
    (["trainer.epochs=ten"], "trainer.epochs: Value 'ten'"),
    (["trainer.deterministic=maybe"], "trainer.deterministic: Value 'maybe'"),
    (["logger.enabled=sometimes"], "logger.enabled: Value 'sometimes'"),
    (["model.hidden=abc"], "model.hidden"),
    (["model.hidden=[a,b]"], "model.hidden"),
    (["optimizer.lr=="], "cannot parse the override optimizer.lr==: extraneous input"),
    # out of range
    (["optimizer.lr=-1"], "optimizer.lr=-1.0 is invalid: expected > 0"),
    (["optimizer.lr=0"], "optimizer.lr=0.0 is invalid: expected > 0"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1 is invalid"),
    (["optimizer=momentum", "optimizer.momentum=1.5"], "optimizer.momentum=1.5 is invalid: expected in [0, 1)"),
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] is invalid: expected two numbers in [0, 1)"),
    (["optimizer.betas=[0.9,1.2]"], "optimizer.betas=[0.9, 1.2] is invalid"),
    (["optimizer.eps=0"], "optimizer.eps=0.0 is invalid"),
    (["optimizer.backbone_lr_scale=-1"], "optimizer.backbone_lr_scale=-1.0 is invalid"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 is invalid: expected in [0, 1)"),
    (["data.test_fraction=0"], "data.test_fraction=0.0 is invalid: expected in (0, 1)"),
    (["data.batch_size=0"], "data.batch_size=0 is invalid"),
    (["data.batch_size=half"], "data.batch_size=half is invalid: expected a positive integer or 'full'"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0 is invalid"),
    (["data.subset=0"], "data.subset=0 is invalid"),
    (["data.sampler=random"], "data.sampler=random is invalid: expected one of shuffle, replacement, sequential"),
    (["data.normalize=zscore"], "data.normalize=zscore is invalid"),
    (["data=polynomial", "data.n_samples=0"], "data.n_samples=0 is invalid"),
    (["data=spirals", "data.noise=-1"], "data.noise=-1.0 is invalid"),
    (["norm=layer", "norm.position=middle"], "norm.position=middle is invalid: expected one of before, after"),
    (["norm=group", "norm.num_groups=0"], "norm.num_groups=0 is invalid"),
    (["init.bias=ones"], "init.bias=ones is invalid: expected one of default, zeros"),
    (["init=normal", "init.std=0"], "init.std=0.0 is invalid"),
    (["scheduler=step", "scheduler.interval=batch"], "scheduler.interval=batch is invalid: expected one of epoch, step"),
    (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma=0.0 is invalid"),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0 is invalid"),
    (["regularization.weight_decay=-1"], "regularization.weight_decay=-1.0 is invalid"),
    (["regularization.l1=-1"], "regularization.l1=-1.0 is invalid"),
    (["regularization.dropout=1.0"], "regularization.dropout=1.0 is invalid"),
    (["regularization.label_smoothing=1.0"], "regularization.label_smoothing=1.0 is invalid"),
    (["regularization.grad_clip_norm=0"], "regularization.grad_clip_norm=0.0 is invalid"),
    (["regularization.grad_clip_value=-1"], "regularization.grad_clip_value=-1.0 is invalid"),
    (["regularization.max_norm=0"], "regularization.max_norm=0.0 is invalid"),
    (["regularization.mc_dropout_samples=-2"], "regularization.mc_dropout_samples=-2 is invalid"),
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is invalid"),
    (["trainer.device=tpu"], "trainer.device=tpu is invalid: expected auto, cpu, cuda, cuda:N or mps"),
    (["trainer.precision=fp8"], "trainer.precision=fp8 is invalid"),
    (["trainer.grad_accum_steps=0"], "trainer.grad_accum_steps=0 is invalid"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is invalid"),
    (["trainer.eval_every=0"], "trainer.eval_every=0 is invalid"),
    (["trainer.early_stopping.mode=up"], "trainer.early_stopping.mode=up is invalid: expected one of min, max, auto"),
    (["trainer.early_stopping.patience=-1"], "trainer.early_stopping.patience=-1 is invalid"),
    (["trainer.early_stopping.min_delta=-0.1"], "trainer.early_stopping.min_delta=-0.1 is invalid"),
    (["trainer.early_stopping.monitor=loss"], "trainer.early_stopping.monitor=loss is invalid"),
    (["trainer.checkpoint.every_n_epochs=0"], "trainer.checkpoint.every_n_epochs=0 is invalid"),
    (["trainer.checkpoint.every_n_steps=0"], "trainer.checkpoint.every_n_steps=0 is invalid"),
    (["trainer.checkpoint.every_n_seconds=-1"], "trainer.checkpoint.every_n_seconds=-1.0 is invalid"),
    (["data=synthetic_images", "data.image_shape=[3,32]"], "data.image_shape=[3, 32] is invalid"),
    (["data=synthetic_images", "data.num_classes=1"], "data.num_classes=1 is invalid: expected at least 2"),
    (["logger.histogram_every_n_epochs=-1"], "logger.histogram_every_n_epochs=-1 is invalid"),
    (["augmentation=[flip]", "augmentation.flip.p=1.5"], "augmentation.flip.p=1.5 is invalid: expected in [0, 1]"),
    (["augmentation=[crop]", "augmentation.crop.padding=-2"], "augmentation.crop.padding=-2 is invalid"),
    (["augmentation=[noise]", "augmentation.noise.std=-1"], "augmentation.noise.std=-1.0 is invalid"),
    (["augmentation=[mixup]", "augmentation.mixup.alpha=0"], "augmentation.mixup.alpha=0.0 is invalid"),
    # combinations that cannot work
    (["norm=batch", "data.batch_size=1"], "norm=batch cannot work with data.batch_size=1"),
    (["optimizer=lbfgs", "trainer.precision=16-mixed"], "optimizer=lbfgs cannot run with trainer.precision=16-mixed"),
    (["scheduler=plateau", "scheduler.interval=step"], "scheduler=plateau steps on the validation metric"),
    (["regularization.max_norm=1", "norm=weight"], "regularization.max_norm cannot bound weights that norm=weight"),
    (["augmentation=[color]"], "augmentation color needs 3-channel (RGB) images; this data has shape (1, 8, 8)"),
    (["augmentation=[crop]", "data=spirals"], "augmentation crop needs images"),
    (["augmentation=[mixup]", "data=polynomial", "model=polynomial"], "augmentation mixup mixes class labels"),
    (["norm=instance"], "norm=instance needs a conv model"),
    (["norm=group", "norm.num_groups=7"], "norm.num_groups=7 must divide every normalized layer's width; model=mlp has a layer of 256"),
    (["activation=relu", "activation.negative_slope=0.1"], "activation.negative_slope does not apply"),
    (["optimizer=adam", "optimizer.momentum=0.9"], "optimizer=adam: optimizer.momentum does not apply here"),
    (["init=xavier_uniform", "init.std=0.1"], "init=xavier_uniform: init.std does not apply here; it takes: gain"),
    (["model=cnn", "data=spirals"], "model=cnn needs images"),
    (["model.depth=3"], "model.depth=3 needs model.width beside it"),
    (["model=resnet", "model.depth=10"], "model.depth=10 is invalid: expected 6n+2, a CIFAR ResNet's depth"),
    (["model=cnn", "model.pool=mean"], "model.pool=mean is invalid: expected one of max, avg, none"),
    (["model=cnn", "model.channels=[8,8,8,8]"], "shrink input (1, 8, 8) to nothing"),
    (["model=torchvision", "model.name=vgg99"], "model.name=vgg99 is not one; model=torchvision takes"),
    (["model.freeze=[nope]"], "model.freeze: no layer 'nope'; layers: fc1, fc2, head"),
    (["model.weights=/nonexistent/run"], "model.weights=/nonexistent/run: no such file"),
    (["loss=cross_entropy", "data=polynomial", "model=polynomial"], "loss=cross_entropy needs class labels"),
    (["regularization=label_smoothing", "data=polynomial", "model=polynomial"], "label_smoothing needs class labels"),
    (["model=polynomial"], "model=polynomial takes inputs of shape (1,) (data=polynomial); data=digits gives images"),
    (["trainer.early_stopping.monitor=val/f1"], "trainer.early_stopping.monitor=val/f1 is not a metric"),
    (["data.val_fraction=0"], "needs a validation split"),
    (["trainer.device=cuda:3"], "trainer.device=cuda:3 but no CUDA device"),
    # found by trying every option's own knobs as a hostile user would (issue: no input breaks it)
    (["optimizer=nesterov", "optimizer.momentum=0"], "optimizer=nesterov: Nesterov momentum requires a momentum"),
    (["activation=rrelu", "activation.lower=0.5", "activation.upper=0.1"], "activation.lower=0.5 must not exceed"),
    (["init=uniform", "init.a=1", "init.b=0"], "init=uniform: init.a=1.0 must be below init.b=0.0"),
    (["scheduler=cyclic", "scheduler.step_size_up=0"], "scheduler.step_size_up=0 is invalid: expected a positive"),
    (["loss=huber", "loss.delta=0"], "loss.delta=0.0 is invalid: expected > 0"),
    (["model=cnn", "model.kernel_size=0"], "model.kernel_size=0 is invalid"),
    (["model=torchvision", "model.name=alexnet"], "model=torchvision: Given input size"),
    (["model=torchvision", "model.weights=/nonexistent.pt"], "model.weights=/nonexistent.pt: no such file, nor one of "
     "torchvision's names for resnet18's weights (IMAGENET1K_V1, DEFAULT): give the path of a state dict"),
    (["model=timm", "model.weights=IMAGENET1K_V1"], "model.weights=IMAGENET1K_V1: no such file, nor one of timm's names for "
     "resnet10t's weights (pretrained)"),
    (["model=torchvision", "model.name=fcn_resnet50"], "fcn_resnet50 is a segmentation, detection or video model"),
    (["model=torchvision", "model.name=resnet17"], "model.name=resnet17 is not one; model=torchvision takes a "
                                                  "classification model of torchvision.models (did you mean resnet18"),
    (["model=torchvision", "model.name=vgg11", "model.small_input=true"], "vgg11 has no conv1 + maxpool stem"),
    (["model=torchvision", "model.small_input=maybe"], "model.small_input=maybe is invalid"),
    (["scheduler=cosine", "scheduler.eta_min=-1"], "scheduler.eta_min=-1.0 is invalid: expected >= 0"),
    (["optimizer.lr=inf"], "optimizer.lr=inf is invalid"),
    (["optimizer.lr=nan"], "optimizer.lr=nan is invalid"),
    (["norm=batch", "norm.momentum=5"], "norm.momentum=5.0 is invalid: expected in [0, 1]"),
    (["norm=batch", "norm.eps=-1"], "norm.eps=-1.0 is invalid"),
    (["optimizer=lbfgs", "optimizer.max_iter=-3"], "optimizer.max_iter=-3 is invalid"),
    (["data.n_samples=10"], "data=digits: data.n_samples does not apply here; it takes: no knobs"),
    (["loss=mse", "loss.delta=1"], "loss=mse: loss.delta does not apply here; it takes: no knobs"),
    (["norm=batch", "data.subset=129"], "norm=batch: the last training batch of each epoch would hold one sample"),
    (["model.hidden=[0]"], "model.hidden=[0] is invalid: expected a positive integer"),
    (["trainer.seed=-1"], "trainer.seed=-1 is invalid"),
    (["model.hidden=[10000000000]"], "model=mlp: [enforce fail"),
    (["scheduler=inverse_time", "scheduler.k=-1"], "scheduler.k=-1.0 is invalid: expected >= 0"),
    (["augmentation=[blur]", "augmentation.blur.kernel_size=2"], "augmentation=blur:"),
    (["data=mnist", "data.download=false", "model=cnn1d"], "model=cnn1d needs sequences; data=mnist gives images"),
    # the command line itself
    (["model=null"], "model=null: a run needs one model option; choose one of: cnn"),
    (["~data"], "~data: a run needs one data option"),
    (["trainer.epochs=${nope}"], "trainer.epochs: Interpolation key 'nope' not found"),
    (["optimizer.lr=[0.1"], "cannot parse the override optimizer.lr=[0.1"),
    (["--foo"], "unknown flag --foo (see trainrun --help)"),
    (["study=search"], "study=search is a sweep of runs: add -m (trainrun -m study=search)"),
    (["study=null"], "study=null: no study is the default; leave study= out"),
    (["tune=null"], "tune=null: no tune is the default"),
    # a sweep whose every run would fail the same way is refused before it starts (its directory not made)
    (["-m", "optimizer.lrr=0.1,0.2"], "unknown key 'optimizer.lrr' (did you mean lr?)"),
    (["-m", "study=search", "study.size=big"], "study.size=big is invalid: expected one of small, full"),
    (["-m", "optimizer=adam,sgd", "optimizer.lr=-1"], "optimizer.lr=-1.0 is invalid"),
    (["-m", "optimizer.lr=interval(0.01,0.1)"], "a grid takes listed values (e.g. 0.01,0.1,1); an interval is searched with"),
    # missing data offline
    (["data=mnist", "data.download=false"], "data=mnist: no dataset under"),
    (["data=cifar10", "data.download=false"], "data=cifar10: no dataset under"),
]


def test_the_table_is_long_enough():
    assert len(BAD_INPUT) >= 50


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: "), result.stderr
    assert message in result.stderr
    assert not (tmp_path / "outputs").exists()  # no half-made run directory that looks like a run
