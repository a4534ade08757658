"""model=torchvision made complete, and local pretrained weights: the architecture's own tensor names, the data's
channels and outputs, a small-image stem, weights from a state dict, a .safetensors file or a run, nothing downloaded."""
from __future__ import annotations

import re

import pytest
import torch

from conftest import TINY, cli, make_config, read_metrics, train_run

pytestmark = pytest.mark.timeout(600)

RESNET = ["model=torchvision", "model.name=resnet18", "trainer.epochs=1", "data.subset=200", "logger.enabled=false"]


def built(*overrides):
    """The model a run would build, on the digits (1 x 8 x 8)."""
    from trainrun.config import typed
    from trainrun.data import load
    from trainrun.options.model import build_model

    cfg = typed(make_config(["data.subset=50", *overrides]))
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    return build_model(cfg, data)[0]


def test_a_torchvision_model_takes_the_datas_channels_and_a_small_stem_under_its_own_names():
    net = built("model=torchvision", "model.name=resnet18")
    assert net.conv1.weight.shape == (64, 1, 3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity) and net.fc.out_features == 10
    assert all(not name.startswith("net.") for name in net.state_dict())  # no wrapper's prefix
    with torch.no_grad():  # an 8x8 digit keeps a 1x1 map at the end, not nothing
        assert net.layer4(net.layer3(net.layer2(net.layer1(net.conv1(torch.zeros(2, 1, 8, 8)))))).shape[-1] == 1
    imagenet_stem = built("model=torchvision", "model.name=resnet18", "model.small_input=false")
    assert imagenet_stem.conv1.kernel_size == (7, 7) and isinstance(imagenet_stem.maxpool, torch.nn.MaxPool2d)


def test_pretrained_rgb_weights_on_gray_images_are_summed_over_their_channels(tmp_path):
    from torchvision import models

    rgb = models.resnet18(num_classes=10)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    net = built("model=torchvision", "model.name=resnet18", "model.small_input=false", f"model.weights={tmp_path / 'rgb.pt'}",
                "init=kaiming_normal")  # an init applies before the weights, which then replace it
    assert torch.equal(net.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))  # = repeating the gray image 3 times
    assert torch.equal(net.layer3[0].conv2.weight, rgb.layer3[0].conv2.weight)
    x = torch.randn(2, 1, 64, 64)
    rgb.eval(), net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4)


CUSTOM_NET = """
import math
from torch import nn

def net(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 32), nn.ReLU(), nn.Linear(32, num_outputs))
"""


@pytest.mark.parametrize("model", [["model=cnn", "model.channels=[4]", "model.hidden=[16]"],
                                   ["model=custom", "model._target_=my_net.net"]])
def test_weights_start_any_model_and_the_loaded_layers_train_at_the_backbone_lr(tmp_path, monkeypatch, model):
    from trainrun.config import typed
    from trainrun.data import load
    from trainrun.options.model import build_model
    from trainrun.options.optimizer import make_optimizer

    (tmp_path / "my_net.py").write_text(CUSTOM_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    train_run(tmp_path / "first", [*model, "data.classes=[0,1,2,3,4]"])
    first = torch.load(tmp_path / "first" / "best.pt", weights_only=True)["model"]
    cfg = typed(make_config(["data.subset=50", "data.classes=[5,6,7]", *model, f"model.weights={tmp_path / 'first'}",
                             "optimizer.backbone_lr_scale=0.1", "init=orthogonal"]))
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    net, reused = build_model(cfg, data)
    now = net.state_dict()
    head = [k for k in now if now[k].shape != first[k].shape]
    assert head and all(now[k].shape[0] == 3 for k in head)  # the output layer, for 3 classes: replaced
    assert reused == set(now) - set(head)
    assert all(torch.equal(now[k], first[k]) for k in reused)  # the rest loaded, over the init
    lrs = {id(p): g["lr"] for g in make_optimizer(cfg.optimizer, net, reused).param_groups for p in g["params"]}
    named = dict(net.named_parameters())
    assert {lrs[id(named[k])] for k in reused if k in named} == {cfg.optimizer.lr * 0.1}
    assert {lrs[id(named[k])] for k in head} == {cfg.optimizer.lr}


def test_a_run_saved_when_weights_were_called_checkpoint_is_still_read(tmp_path):
    from omegaconf import OmegaConf

    from trainrun.use.trained import open_run

    first = cli(*TINY, f"hydra.run.dir={tmp_path / 'old'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-1500:]
    config = tmp_path / "old" / ".hydra" / "config.yaml"
    saved = OmegaConf.to_container(OmegaConf.load(config))
    saved["model"]["checkpoint"] = saved["model"].pop("weights")  # as an earlier trainrun wrote it
    config.write_text(OmegaConf.to_yaml(saved))
    assert open_run(str(tmp_path / "old")).cfg.model.weights is None
    from trainrun.config import upgraded  # a value the old key held is kept under the new name, not dropped

    assert upgraded({"model": {"checkpoint": "runs/first/best.pt", "kind": "mlp"}}) == {
        "model": {"weights": "runs/first/best.pt", "kind": "mlp"}}
    refused = cli("model.checkpoint=x", cwd=tmp_path)
    assert refused.returncode == 2 and "unknown key 'model.checkpoint': it is called model.weights now" in refused.stderr


@pytest.mark.slow  # everyday tier under 10 min: 35 s of a worker here
def test_a_runs_weights_start_another_with_another_number_of_classes_head_replaced(tmp_path):
    first = cli(*RESNET, "data.classes=[0,1,2,3,4]", f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-1500:]
    saved = torch.load(tmp_path / "first" / "best.pt", weights_only=True)["model"]
    assert saved["conv1.weight"].shape == (64, 1, 3, 3) and saved["fc.weight"].shape == (5, 512)
    from trainrun.use.predict import main  # rebuilt from the saved config alone: the same architecture, the same result

    main([str(tmp_path / "first"), "--output", str(tmp_path / "p.csv")])
    assert f'"acc": {read_metrics(tmp_path / "first")["test/acc"]}' in (tmp_path / "p.report.json").read_text()
    frozen = "model.freeze=[conv1,bn1,layer1,layer2,layer3,layer4]"
    second = cli(*RESNET, "data.classes=[5,6,7]", f"model.weights={tmp_path / 'first'}", frozen,
                 f"hydra.run.dir={tmp_path / 'second'}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-1500:]
    said = " ".join(second.stdout.split())
    assert re.search(r"model\.weights: loaded 120 of the model's 122 tensors", said)
    assert "the output layer fc has another size here; it is replaced" in said
    after = torch.load(tmp_path / "second" / "best.pt", weights_only=True)["model"]
    assert torch.equal(after["layer2.0.conv1.weight"], saved["layer2.0.conv1.weight"])  # loaded, then frozen
    assert after["fc.weight"].shape == (3, 512)


def test_safetensors_weights_load_like_a_state_dict(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    from torchvision import models

    net = models.resnet18(num_classes=10)
    safetensors.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = built("model=torchvision", "model.name=resnet18", "model.small_input=false",
                   f"model.weights={tmp_path / 'w.safetensors'}")
    assert torch.equal(loaded.layer4[1].conv2.weight, net.layer4[1].conv2.weight)
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    with pytest.raises(Exception, match="cannot read weights from"):
        built("model=torchvision", "model.name=resnet18", f"model.weights={tmp_path / 'bad.safetensors'}")
    (tmp_path / "notes.pt").write_text("not weights")
    with pytest.raises(Exception, match=r"notes.pt is unreadable \(truncated or corrupt: not a PyTorch file\); expected a trainrun checkpoint"):
        built(f"model.weights={tmp_path / 'notes.pt'}")


@pytest.mark.slow  # everyday tier under 10 min: 31 s of a worker here
def test_a_timm_model_trains_on_the_datas_channels_and_outputs(tmp_path):
    pytest.importorskip("timm")
    net = built("model=timm", "model.name=resnet10t")
    assert net.conv1[0].in_channels == 1 and net.get_classifier().out_features == 10
    result = cli("model=timm", "model.name=resnet10t", "trainer.epochs=1", "data.subset=100", "logger.enabled=false",
                 f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    assert read_metrics(tmp_path / "run")["epochs_run"] == 1
    refused = cli("model=timm", "model.name=resnet10x", cwd=tmp_path)
    assert refused.returncode == 2 and "model.name=resnet10x is not a timm model (did you mean resnet10t" in refused.stderr


def test_model_timm_without_timm_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    with pytest.raises(Exception, match=r"model=timm needs timm: pip install 'trainrun\[timm\]'"):
        built("model=timm")


def photo_folder(root, size=32):
    """Two classes of RGB crops of scikit-learn's sample photographs, as PNG files."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    for name in ("china", "flower"):
        photo = load_sample_image(f"{name}.jpg")
        (root / name).mkdir(parents=True)
        for i in range(12):
            top, left = 20 * i, 30 * i
            Image.fromarray(photo[top:top + size, left:left + size]).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("kind,name,mean", [("torchvision", "resnet18", [0.485, 0.456, 0.406]),
                                            pytest.param("timm", "tf_mobilenetv3_small_minimal_100", [0.5, 0.5, 0.5],
                                                         marks=pytest.mark.slow)])
@pytest.mark.slow  # everyday tier under 10 min: 36 s of a worker here
def test_library_weights_bring_the_input_statistics_they_were_trained_with(tmp_path, kind, name, mean):
    import json

    if kind == "timm":
        timm = pytest.importorskip("timm")
        net = timm.create_model(name, num_classes=2)
    else:
        from torchvision import models

        net = models.get_model(name, num_classes=2)
    torch.save(net.state_dict(), tmp_path / "w.pt")  # a downloaded checkpoint, offline: a local file
    photos = photo_folder(tmp_path / "photos")
    run = ["data=folder", f"data.root={photos}", f"model={kind}", f"model.name={name}", f"model.weights={tmp_path / 'w.pt'}",
           "trainer.epochs=1", "logger.enabled=false"]
    result = cli(*run, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    said = " ".join(result.stdout.replace("│", " ").split())  # the header's box wraps its lines
    assert f"standardize with the statistics of model={kind} {name}'s pretrained weights" in said
    record = json.loads((tmp_path / "run" / "preprocessing.json").read_text())["normalize"]
    assert torch.tensor(record["mean"]).flatten().tolist() == pytest.approx(mean)
    own = cli(*run, "data.normalize=standardize", f"hydra.run.dir={tmp_path / 'own'}", cwd=tmp_path)
    assert "with this run's train-split statistics" in " ".join(own.stdout.replace("│", " ").split())
    fitted = json.loads((tmp_path / "own" / "preprocessing.json").read_text())["normalize"]
    assert torch.tensor(fitted["mean"]).flatten().tolist() != pytest.approx(mean, abs=0.02)


def test_library_statistics_apply_to_pixels_only_and_average_over_channels_for_gray(tmp_path):
    from trainrun.data.load import per_channel

    published = {"channel_mean": [0.485, 0.456, 0.406], "channel_std": [0.229, 0.224, 0.225], "source": "s"}
    gray = per_channel(published, torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    assert gray["mean"] == [[[[pytest.approx(0.449)]]]] and gray["input_shape"] == [1, 8, 8]
    assert per_channel(published, torch.zeros(1, 1, 8, 8)) is None  # the digits' 0..16 floats are no pixels
    assert per_channel(published, torch.zeros(1, 4, 8, 8, dtype=torch.uint8)) is None  # 4 channels: its own


OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow  # everyday tier under 10 min: 32 s of a worker here
def test_torchvisions_weight_names_download_once_and_offline_say_which_file_to_fetch(tmp_path):
    from torchvision import models

    env = {**OFFLINE, "TORCH_HOME": str(tmp_path / "torch")}
    run = [*RESNET, "model.weights=IMAGENET1K_V1", f"hydra.run.dir={tmp_path / 'run'}"]
    offline = cli(*run, cwd=tmp_path, env=env)
    url = models.ResNet18_Weights.IMAGENET1K_V1.url
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    assert f"model.weights=IMAGENET1K_V1: torchvision downloads {url} into {tmp_path / 'torch' / 'hub' / 'checkpoints'}, " \
           "which failed here" in offline.stderr and "offline, fetch the file elsewhere and give its path" in offline.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    imagenet = models.resnet18()  # what the download would have put in torch's cache
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(imagenet.state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    cached = cli(*run, cwd=tmp_path, env=env)
    assert cached.returncode == 0, cached.stderr[-1500:]
    said = " ".join(cached.stdout.split())
    assert re.search(r"model\.weights: loaded 119 of the model's 122 tensors from torchvision's resnet18 IMAGENET1K_V1", said)
    trained = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    assert trained["conv1.weight"].shape == (64, 1, 3, 3)  # the small stem for 8x8 digits and the head: not loaded


def test_timms_pretrained_weights_offline_say_which_file_to_fetch(tmp_path):
    pytest.importorskip("timm")
    offline = cli("model=timm", "model.name=resnet10t", "model.weights=pretrained", cwd=tmp_path,
                  env={**OFFLINE, "HF_HOME": str(tmp_path / "hf")})
    assert offline.returncode == 2 and "Traceback" not in offline.stderr, offline.stderr[-1500:]
    assert "model.weights=pretrained: timm downloads resnet10t's weights from the Hugging Face Hub, which failed here" \
        in offline.stderr


@pytest.mark.slow
def test_a_torchvision_run_exports_verified(tmp_path):
    """A library architecture's run, both exports checked by their runtimes. (The range test, which reads only
    the composed run, is tested on the MLP, a CNN and a regression in test_tune.py; on resnet18 here it took
    20 s of CI's 30 minutes.)"""
    from test_predict import export

    trained = cli(*RESNET, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-1500:]
    code, out, err = export(tmp_path / "run", "--format", "onnx,pt2", "--output", tmp_path / "export")
    assert code == 0, err
    for f in ("onnx", "pt2"):
        line = next(line for line in out.splitlines() if line.startswith(str(tmp_path / "export" / f"model.{f}")))
        assert "verified on 64 inputs of the run's test split" in line and float(line.rsplit(" ", 1)[1]) <= 1e-4
