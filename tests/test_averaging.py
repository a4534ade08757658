"""Weight averaging (averaging=ema|swa): the average is what it claims, evaluated and kept beside the raw weights,
resumed exactly, and used by predict."""
from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli, make_config, read_metrics, train_run

SMALL = ["data.subset=300", "trainer.early_stopping.enabled=false", "trainer.deterministic=true"]
CNN = ["model=cnn", "model.channels=[4,8]", "norm=batch"]


def test_ema_is_the_hand_computed_average_of_the_weights_after_each_step(tmp_path, monkeypatch):
    from trainrun.options.averaging import EMA

    seen = []  # the model's state after each optimizer step, as the run hands it to the average
    update = EMA.after_step
    monkeypatch.setattr(EMA, "after_step", lambda self, model, step: (
        seen.append((step, {k: v.clone() for k, v in model.state_dict().items()})), update(self, model, step))[1])
    train_run(tmp_path, ["averaging=ema", "averaging.warmup=false", "averaging.decay=0.6", "trainer.max_steps=4",
                         *CNN], tiny=True)
    assert [step for step, _ in seen] == [1, 2, 3, 4]
    expected = dict(seen[0][1])  # the first update copies the model
    for _, state in seen[1:]:
        expected = {k: 0.6 * e + 0.4 * state[k] if e.is_floating_point() else state[k] for k, e in expected.items()}
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["averaging"]
    assert saved["count"] == 4
    for key, value in expected.items():  # batch-norm statistics are averaged too (timm's ModelEmaV3)
        torch.testing.assert_close(saved["model"][key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert any(not torch.equal(saved["model"][k], seen[-1][1][k]) for k in expected)  # an average, not a copy


def test_ema_warm_up_follows_timm():
    from trainrun.options.averaging import EMA

    ema = EMA(torch.nn.Linear(2, 2), decay=0.999, warmup=True, warmup_power=0.75, warmup_gamma=1.0)
    assert ema.decay_at(1) == 0.0  # a copy
    assert ema.decay_at(2) == pytest.approx(1 - 2 ** -0.75)
    assert ema.decay_at(464) == pytest.approx(0.99, abs=1e-4)
    assert ema.decay_at(10**7) == 0.999  # capped at decay


def test_swa_batch_norm_statistics_are_update_bn_on_the_training_inputs(tmp_path):
    from trainrun.run.build import build
    from trainrun.run.distributed import World

    overrides = [*SMALL, *CNN, "averaging=swa", "averaging.start_epoch=2", "trainer.epochs=3", "logger.enabled=false",
                 "data.eval_batch_size=64", "augmentation=[noise]"]
    train_run(tmp_path, overrides, tiny=False)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["averaging"]
    assert saved["count"] == 2  # epochs 2 and 3
    parts = build(make_config(overrides), World())  # the same data, split and normalized as the run's
    model = parts.model
    model.load_state_dict(saved["model"])
    data = parts.data
    inputs = [data.normalize(data.fetch(data.train, slice(s, s + 64))[0]) for s in range(0, len(data.train), 64)]
    torch.optim.swa_utils.update_bn(inputs, model)  # unaugmented training inputs, in evaluation-sized batches
    stats = [k for k in saved["model"] if k.endswith(("running_mean", "running_var"))]
    assert stats
    for key in stats:
        torch.testing.assert_close(saved["model"][key], model.state_dict()[key], msg=key)


def test_averaged_weights_are_logged_chosen_for_best_pt_and_predicted(tmp_path):
    run = tmp_path / "run"
    done = cli(*SMALL, *CNN, "averaging=swa", "averaging.start_epoch=2", "averaging.lr=0.05", "trainer.epochs=5",
               f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    metrics = read_metrics(run)
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    val, swa = ([e.value for e in events.Scalars(f"loss/{split}")] for split in ("val", "val_swa"))
    assert len(val) == 5 and len(swa) == 4  # averaged from epoch 2
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["weights"] == metrics["test_weights"]
    chosen = min(range(5), key=lambda i: min(val[i], swa[i - 1] if i else float("inf")))
    assert best["epoch"] == chosen + 1 == metrics["best_epoch"]
    assert metrics["test_weights"] == ("swa" if chosen and swa[chosen - 1] < val[chosen] else "raw")
    last = torch.load(run / "last.pt", weights_only=True)
    from trainrun.use.trained import open_run

    for checkpoint, state in (("best", best["model"]), ("last", last["averaging"]["model"])):
        used = open_run(str(run), checkpoint=checkpoint)
        for key, value in used.model.state_dict().items():
            assert torch.equal(value, state[key]), (checkpoint, key)
    assert any("swa average" in n for n in open_run(str(run), checkpoint="last").notes)


def test_without_a_best_epoch_the_test_uses_the_final_average(tmp_path):
    metrics = train_run(tmp_path, ["averaging=ema", "trainer.early_stopping.restore_best=false"])
    assert metrics["test_weights"] == "ema"
    plain = train_run(tmp_path / "plain", [])
    assert "test_weights" not in plain and metrics["test/loss"] != plain["test/loss"]


@pytest.mark.slow  # 4 runs of a few seconds
@pytest.mark.parametrize("averaging", [["averaging=ema"], ["averaging=swa", "averaging.start_epoch=2", *CNN]])
def test_a_resumed_run_keeps_its_average_bit_for_bit(tmp_path, averaging):
    args = [*SMALL, *averaging, "logger.enabled=false"]
    straight = cli(*args, "trainer.epochs=4", f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    stopped = cli(*args, "trainer.epochs=3", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # SWA averaged twice
    assert straight.returncode == 0 and stopped.returncode == 0, stopped.stderr
    resumed = cli(f"trainer.resume={tmp_path / 'run'}", "trainer.epochs=4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = (torch.load(tmp_path / d / "last.pt", weights_only=True)["averaging"] for d in ("run", "straight"))
    assert ours["count"] == theirs["count"] > 0
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])
    drop = ("wall_time_s",)
    assert {k: v for k, v in read_metrics(tmp_path / "run").items() if k not in drop} == \
           {k: v for k, v in read_metrics(tmp_path / "straight").items() if k not in drop}


@pytest.mark.parametrize("args, message", [
    (["averaging=swa", "averaging.start_epoch=30"], "averaging.start_epoch=30 is after the run's last epoch"),
    (["averaging=ema", "averaging.decay=1.0"], "averaging.decay=1.0 is invalid"),
    (["averaging=ema", "averaging.decay=0"], "averaging.decay=0.0 is invalid"),
    (["averaging=swa", "averaging.decay=0.9"], "averaging.decay does not apply here"),
    (["averaging=swa", "averaging.anneal_strategy=cosine"], "averaging.anneal_strategy=cosine is invalid"),
    (["averaging=emma"], "did you mean ema?"),
    (["averaging=ema", "tune=lr_find"], "leave averaging=ema out"),
])
def test_bad_averaging_is_refused_in_one_line_before_a_run(tmp_path, args, message):
    done = cli(*args, cwd=tmp_path)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()
