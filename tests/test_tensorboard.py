"""The event files, read back with TensorBoard's own reader: tags, values and steps."""
from __future__ import annotations

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import train_run


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tb")
    metrics = train_run(run_dir, ["logger.enabled=true", "trainer.epochs=3", "trainer.log_every_n_steps=2",
                                  "augmentation=[noise]", "model=cnn", "scheduler=step", "scheduler.step_size=1",
                                  "scheduler.gamma=0.5", "trainer.early_stopping.enabled=false", "logger.layers=true"])
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events, metrics


def values(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_scalars_per_step_and_per_epoch(logged):
    events, metrics = logged
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "acc/train", "loss/val", "acc/val", "step/lr", "step/loss", "step/grad_norm",
            "time/epoch_s", "time/samples_per_s", "time/epoch"} <= tags
    steps_per_epoch = metrics["steps"] // 3
    assert [s for s, _ in values(events, "loss/val")] == [steps_per_epoch, 2 * steps_per_epoch, 3 * steps_per_epoch]
    # every log_every_n_steps (2) steps, and the first step, so the curves start at the initialization
    assert [s for s, _ in values(events, "step/loss")] == [1, *range(2, metrics["steps"] + 1, 2)]
    assert all(math.isfinite(v) for _, v in values(events, "step/loss"))


def test_the_curves_sort_first(logged):
    """TensorBoard orders cards by tag: train and val accuracy and loss open the page, before everything else."""
    events, _ = logged
    tags = sorted(events.Tags()["scalars"])
    assert tags[:4] == ["acc/train", "acc/val", "loss/train", "loss/val"]


def test_lr_is_logged_every_step_and_follows_the_schedule(logged):
    events, metrics = logged
    lr = values(events, "step/lr")
    assert [s for s, _ in lr] == list(range(1, metrics["steps"] + 1))
    per_epoch = metrics["steps"] // 3
    # step schedule, step_size 1 epoch, gamma 0.5: the lr halves at each epoch boundary (logged after the step)
    assert [v for _, v in lr] == pytest.approx([1e-3 * 0.5 ** ((s - 1) // per_epoch) for s, _ in lr])


def test_metrics_json_matches_the_event_file(logged):
    events, metrics = logged
    by_step = dict(values(events, "loss/val"))
    best_step = metrics["best_epoch"] * (metrics["steps"] // 3)
    assert by_step[best_step] == pytest.approx(metrics["val/loss"], rel=1e-5)
    assert dict(values(events, "summary/test_acc"))[metrics["steps"]] == pytest.approx(metrics["test/acc"])
    assert dict(values(events, "summary/val_loss_at_best_epoch"))[metrics["steps"]] == pytest.approx(metrics["val/loss"])


def test_per_layer_gradient_norms(logged):
    events, _ = logged
    tags = set(events.Tags()["scalars"])
    assert {"per_layer/grad_norm/conv1/conv2d/weight", "per_layer/grad_norm/fc1/linear/weight",
            "per_layer/grad_norm/head/weight"} <= tags
    layer = values(events, "per_layer/grad_norm/head/weight")
    total = values(events, "step/grad_norm")
    assert all(0 < part <= whole + 1e-6 for (_, part), (_, whole) in zip(layer, total))


def test_histograms_of_weights_gradients_and_activations(logged):
    events, _ = logged
    histograms = set(events.Tags()["histograms"])
    assert {"per_layer/weights/head/weight", "per_layer/gradients/head/weight", "per_layer/activations/conv1",
            "per_layer/activations/head"} <= histograms
    assert len(events.Histograms("per_layer/weights/head/weight")) == 3  # once per epoch


def test_config_text_augmented_images_graph_and_layout(logged):
    events, _ = logged
    assert "augmented_batch" in events.Tags()["images"]
    image = events.Images("augmented_batch")[0]
    assert image.width > 8 and image.height > 8  # a grid of samples
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "kind: cnn" in text and "noise" in text
    assert "${" not in text and "root: " in text  # resolved: the data root is a path, not ${oc.env:...}
    assert events.Tags()["graph"]
    assert "custom_scalars__config__" in events.Tags()["tensors"]


def test_hparams_for_the_dashboard(logged):
    events, _ = logged
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["model"].string_value == "cnn"
    assert session.hparams["lr"].number_value == pytest.approx(1e-3)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {"summary/test_acc", "summary/val_loss_at_best_epoch"} <= {m.name.tag for m in experiment.metric_infos}


def test_a_large_tensor_histogram_is_exact_in_its_statistics_and_close_in_its_counts(tmp_path):
    """Above HISTOGRAM_SAMPLE values the bins come from a fixed random sample, scaled to the full count."""
    import torch
    from omegaconf import OmegaConf

    from trainrun.run.logger import HISTOGRAM_SAMPLE, TensorBoard

    tb = TensorBoard(OmegaConf.create({}), tmp_path)
    values = torch.cat([torch.randn(300_000), torch.rand(100_000) * 3 + 5])  # two modes, 6x the sample
    histogram = tb.histogram("w", values).histo
    assert values.numel() > 4 * HISTOGRAM_SAMPLE
    assert (histogram.min, histogram.max, histogram.num) == (values.min().item(), values.max().item(), values.numel())
    assert histogram.sum == pytest.approx(values.sum().item(), rel=1e-4)
    assert histogram.sum_squares == pytest.approx(values.pow(2).sum().item(), rel=1e-4)
    exact = torch.histc(values, 64, values.min().item(), values.max().item())
    assert sum(histogram.bucket) == pytest.approx(values.numel())
    # each bin within 1% of all values of the exact count (a 65,536-value sample: ~0.2% standard error)
    assert max(abs(a - b) for a, b in zip(histogram.bucket, exact.tolist())) < 0.01 * values.numel()
    assert tb.histogram("w", values).histo.bucket == histogram.bucket  # the same sample every time
    tb.close()


def test_logger_off_writes_no_events(tmp_path):
    train_run(tmp_path, ["logger.enabled=false"])
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_c_checksums_match_tensorboards_own():
    import os

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as python_crc
    from tensorboard.summary.writer import record_writer

    from trainrun.run.logger import use_c_checksums

    use_c_checksums()
    for size in (0, 1, 12, 1500, 70_000):
        data = os.urandom(size)
        assert record_writer.masked_crc32c(data) == python_crc(data)


def test_each_logger_switch_turns_its_part_off(tmp_path):
    # per-layer diagnostics are off by default
    train_run(tmp_path, ["logger.enabled=true", "model=cnn", "augmentation=[noise]",
                         "logger.log_images=false", "logger.log_graph=false"])
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert tags["histograms"] == [] and tags["images"] == [] and not tags["graph"]
    assert not [t for t in tags["scalars"] if t.startswith("per_layer/")]  # the global norm stays
    assert {"loss/train", "loss/val", "step/lr", "step/grad_norm"} <= set(tags["scalars"])


def test_layers_on_with_histograms_off_keeps_the_per_layer_norms(tmp_path):
    train_run(tmp_path, ["logger.enabled=true", "logger.layers=true", "logger.histogram_every_n_epochs=0"])
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    assert events.Tags()["histograms"] == []
    assert [t for t in events.Tags()["scalars"] if t.startswith("per_layer/grad_norm/")]


def test_a_step_interval_schedule_moves_the_lr_every_step_in_a_real_run(tmp_path):
    train_run(tmp_path, ["logger.enabled=true", "scheduler=cosine", "scheduler.interval=step", "trainer.epochs=2",
                         "optimizer.lr=0.01"])
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    lrs = [e.value for e in events.Scalars("step/lr")]
    # 2 epochs of 5 batches (300 digits, batch 64); the lr logged after step t is the cosine's at t
    assert lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(1, 11)], abs=1e-9)
