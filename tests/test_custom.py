"""Your own code and your own YAML: <group>=custom with _target_ and params, --config-dir, experiment=."""
from __future__ import annotations

import textwrap

import pytest
import torch
from torchvision.io import write_png

from conftest import cli, read_metrics

USER_MODULE = textwrap.dedent('''
    import math

    import torch
    from torch import nn


    class WideNet(nn.Module):
        """Takes what trainrun offers: the input shape, the number of outputs, the chosen activation."""

        def __init__(self, input_shape, num_outputs, width=16, activation=None):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), activation())
            self.head = nn.Linear(width, num_outputs)

        def forward(self, x):
            return self.head(self.body(x))


    class SignSGD(torch.optim.Optimizer):
        def __init__(self, params, lr=0.01):
            super().__init__(params, {"lr": lr})

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad.sign(), alpha=-group["lr"])


    def blobs(n=600, seed=0):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(3, (n,), generator=g)
        return torch.randn(n, 5, generator=g) + 3 * y[:, None].float(), y


    def too_many_outputs(input_shape, num_outputs):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs + 2))


    def squared_error(num_classes):
        return lambda out, y: ((out - nn.functional.one_hot(y, num_classes).float()) ** 2).mean()


    NOT_CALLABLE = 3
''')


@pytest.fixture
def project(tmp_path):
    (tmp_path / "my_project.py").write_text(USER_MODULE)
    return tmp_path


@pytest.mark.slow  # everyday tier under 10 min: 20 s of a worker here
def test_a_custom_model_optimizer_loss_and_data_train_together(project):
    result = cli("model=custom", "model._target_=my_project.WideNet", "+model.params.width=24", "activation=gelu",
                 "optimizer=custom", "optimizer._target_=my_project.SignSGD", "optimizer.lr=0.01",
                 "loss=custom", "loss._target_=my_project.squared_error",
                 "data=custom", "data._target_=my_project.blobs", "+data.params.n=900",
                 "trainer.epochs=4", "trainer.deterministic=true", cwd=project)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = next(project.glob("outputs/*/*"))
    metrics = read_metrics(run_dir)
    assert metrics["test/acc"] > 0.9  # three well-separated blobs
    state = torch.load(run_dir / "last.pt", weights_only=True)  # a custom optimizer's state resumes safely
    assert state["model"]["body.1.weight"].shape == (24, 5)  # params.width reached the class
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.01
    resumed = cli(f"trainer.resume={run_dir}", "trainer.epochs=5", cwd=project)
    assert resumed.returncode == 0 and read_metrics(run_dir)["epochs_run"] == 5, resumed.stderr[-2000:]


@pytest.mark.parametrize("args,message", [
    (["model=custom"], "model=custom needs model._target_, the dotted path of a class or function"),
    (["model=custom", "model._target_=nowhere.Net"], "model._target_=nowhere.Net: cannot import nowhere"),
    (["model=custom", "model._target_=my_project.Nope"], "model._target_=my_project.Nope: my_project has no Nope"),
    (["model=custom", "model._target_=my_project.NOT_CALLABLE"], "is not callable (a int)"),
    (["model=custom", "model._target_=my_project.too_many_outputs"],
     "model=custom: expected 10 outputs per sample, got shape (12,)"),
    (["optimizer=custom", "optimizer._target_=my_project.blobs"], "is not a torch.optim.Optimizer subclass"),
    (["model=custom", "model._target_=my_project.WideNet", "+model.params.depth=3"],
     "model=custom: WideNet.__init__() got an unexpected keyword argument 'depth'"),
    (["model=mlp", "+model.params.width=3"], "model=mlp: model.params does not apply here; it takes: hidden"),
])
@pytest.mark.slow  # everyday tier under 10 min: 46 s of a worker here
def test_bad_custom_options_are_one_line(project, args, message):
    result = cli(*args, cwd=project)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) <= 2 and message in result.stderr
    assert not (project / "outputs").exists()


@pytest.mark.slow  # everyday tier under 10 min: 15 s of a worker here
def test_user_yaml_options_and_experiments_from_config_dir(project):
    conf = project / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "data").mkdir()
    (conf / "experiment").mkdir()
    (conf / "model" / "wide_net.yaml").write_text("kind: custom\n_target_: my_project.WideNet\nparams:\n  width: 12\n")
    (conf / "data" / "my_blobs.yaml").write_text("kind: custom\n_target_: my_project.blobs\nparams: {n: 300}\n")
    (conf / "experiment" / "quick.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: wide_net\n  - override /data: my_blobs\n"
        "trainer:\n  epochs: 2\n")
    (conf / "model" / "typo.yaml").write_text("kind: custom\n_target_: my_project.WideNet\nwidht: 3\n")
    helped = cli("--config-dir", str(conf), "--help", cwd=project)
    assert "wide_net" in helped.stdout and "my_blobs" in helped.stdout
    result = cli("--config-dir", str(conf), "experiment=quick", "logger.enabled=false", cwd=project)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = next(project.glob("outputs/*/*"))
    assert read_metrics(run_dir)["epochs_run"] == 2
    assert torch.load(run_dir / "last.pt", weights_only=True)["model"]["body.1.weight"].shape == (12, 5)
    typo = cli("--config-dir", str(conf), "model=typo", cwd=project)
    assert typo.returncode == 2 and "model/typo" in typo.stderr and "widht" in typo.stderr


@pytest.mark.slow  # everyday tier under 10 min: 35 s of a worker here
def test_a_library_factory_taking_kwargs_is_offered_no_context_and_told_its_width(tmp_path):
    """torchvision's resnet18(**kwargs) hands kwargs to ResNet, which knows no input_shape: nothing is offered
    through **kwargs, and a wrong width names the parameter to set."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two real photographs: crops of each are a class
    for name, photo in zip(("china", "flower"), photos):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(12):
            y, x = 40 * (i // 4), 40 * (i % 4)
            crop = torch.from_numpy(np.ascontiguousarray(photo[y:y + 32, x:x + 32])).permute(2, 0, 1)
            write_png(crop.contiguous(), str(tmp_path / "photos" / name / f"{i}.png"))
    base = ["data=folder", f"data.root={tmp_path / 'photos'}", "model=custom", "model._target_=torchvision.models.resnet18",
            "trainer.epochs=1", "logger.enabled=false", "data.batch_size=8"]
    refused = cli(*base, "data.batch_size=6", cwd=tmp_path)
    assert refused.returncode == 2 and "input_shape" not in refused.stderr
    assert "expected 2 outputs per sample, got shape (1000,); give it the width, e.g. +model.params.num_classes=2" \
        in refused.stderr
    one_left = cli(*base, "+model.params.num_classes=2", cwd=tmp_path)  # 17 train samples: batches of 8, 8, 1
    assert one_left.returncode == 2 and "Traceback" not in one_left.stderr
    assert "model=custom (its BatchNorm2d): the last training batch of each epoch would hold one sample" in one_left.stderr
    trained = cli(*base, "+model.params.num_classes=2", "data.batch_size=6", f"hydra.run.dir={tmp_path / 'run'}",
                  cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-1500:]
    assert read_metrics(tmp_path / "run")["epochs_run"] == 1
