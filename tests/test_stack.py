"""Stacks: runs trained together as one stacked model, each equal to the run trained alone up to rounding, each
still its own run (files, early stopping, divergence), and the launcher that plans and announces them."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli, make_config, quiet_console, read_metrics
from test_predict import export, predict
from trainrun.run import trainer
from trainrun.stack.launch import train_held

QUICK = ["data.subset=400", "trainer.log_every_n_steps=1", "trainer.checkpoint.every_n_seconds=null"]
MLP = [*QUICK, "regularization=dropout", "trainer.epochs=6", "trainer.early_stopping.patience=1"]
CNN = [*QUICK, "model=cnn", "model.channels=[8,16]", "model.hidden=[32]", "norm=batch", "augmentation=[crop,flip]",
       "trainer.epochs=3"]


def events(run_dir: Path) -> dict[str, list[float]]:
    found = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    found.Reload()
    return {tag: [e.value for e in found.Scalars(tag)] for tag in found.Tags()["scalars"]}


def hold(run_dirs: list[Path], common: list[str], runs: list[list[str]]) -> list:
    """The runs prepared as a stack's launcher prepares them, held before they train."""
    trainer.HELD = held = []
    try:
        for run_dir, own in zip(run_dirs, runs):
            trainer.train(make_config([*common, *own]), run_dir, quiet_console())
    finally:
        trainer.HELD = None
    return held


def train_alone(tmp_path, common: list[str], runs: list[list[str]]) -> list[dict]:
    return [trainer.train(make_config([*common, *own]), tmp_path / f"alone{i}", quiet_console())
            for i, own in enumerate(runs)]


def alone_and_stacked(tmp_path, common: list[str], runs: list[list[str]], memory_gb=None) -> tuple[list, list]:
    """Each run trained alone, then the same runs trained as one stack: their metrics, in order."""
    alone = train_alone(tmp_path, common, runs)
    held = hold([tmp_path / f"stacked{i}" for i in range(len(runs))], common, runs)
    results = train_held(held, memory_gb)  # the job's return values: metrics.json and the sweep's objective
    return alone, [{k: v for k, v in results[id(h)].items() if k != "objective"} for h in held]


def files(run_dir: Path) -> list[str]:
    """A run's files by name (an event file's name holds its time: by kind)."""
    return sorted("events" if p.name.startswith("events.out") else p.name for p in run_dir.iterdir())


def assert_same_metrics(ours: dict, theirs: dict, rel: float) -> None:
    """Equal metrics.json, numbers to `rel` (sums added in another order), its wall time aside."""
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if key == "wall_time_s":
            continue
        if isinstance(value, float):
            assert ours[key] == pytest.approx(value, rel=rel), key
        else:
            assert ours[key] == value, key


def assert_equal_runs(tmp_path, alone: list, stacked: list) -> None:
    for i, (a, s) in enumerate(zip(alone, stacked)):
        assert s is not None, f"run {i} left no metrics"
        assert (s["stop_reason"], s["best_epoch"], s["epochs_run"], s["steps"]) == \
               (a["stop_reason"], a["best_epoch"], a["epochs_run"], a["steps"]), i
        metric = "test/acc" if "test/acc" in a else "test/mae"
        assert abs(s[metric] - a[metric]) <= 0.005 * (1 if metric == "test/acc" else abs(a[metric])), i
        ours, theirs = events(tmp_path / f"stacked{i}"), events(tmp_path / f"alone{i}")
        assert sorted(ours) == sorted(theirs)  # the same tags
        steps = len(theirs["step/loss"]) // max(a["epochs_run"], 1)  # the first epoch's steps
        torch.testing.assert_close(torch.tensor(ours["step/loss"][:steps]), torch.tensor(theirs["step/loss"][:steps]),
                                   rtol=1e-5, atol=0)
        assert files(tmp_path / f"stacked{i}") == files(tmp_path / f"alone{i}")


def test_stacked_mlps_with_dropout_equal_each_run_alone_and_stop_early_on_their_own(tmp_path):
    runs = [["optimizer.lr=0.001", "trainer.seed=0"], ["optimizer.lr=0.003", "trainer.seed=1"],
            ["optimizer.lr=0.03", "trainer.seed=0", "averaging=ema"],
            ["optimizer.lr=0.01", "trainer.seed=0", "regularization.dropout=0"],
            ["optimizer.lr=0.01", "trainer.seed=1", "regularization.weight_decay=0.001", "regularization.l1=1e-5",
             "regularization.grad_clip_norm=0.5", "regularization.grad_clip_value=0.1", "regularization.max_norm=1.5"]]
    alone, stacked = alone_and_stacked(tmp_path, MLP, runs)
    assert_equal_runs(tmp_path, alone, stacked)
    reasons = [(m["stop_reason"], m["epochs_run"]) for m in alone]
    assert len(set(reasons)) > 1, reasons  # runs left the stack at different epochs, the others went on


@pytest.mark.parametrize("common,runs,vmapped", [
    (MLP, [[], ["regularization.label_smoothing=0.1"]], False),  # two loss functions: a call a run
    ([*QUICK, "data=least_squares", "loss=huber", "loss.delta=0.5", "trainer.epochs=3"],
     [["optimizer.lr=0.01"], ["optimizer.lr=0.03", "trainer.seed=1"]], True)],  # one: vmapped over the stack
    ids=["two-losses", "regression-one-loss"])
def test_stacked_losses_equal_each_run_alone_in_one_call_or_a_call_a_run(tmp_path, monkeypatch, common, runs,
                                                                         vmapped):
    from trainrun.stack.training import Stack

    paths, same_loss = set(), Stack.same_loss
    monkeypatch.setattr(Stack, "same_loss", lambda stack, stepping: paths.add(same_loss(stack, stepping)) or
                        same_loss(stack, stepping))
    alone, stacked = alone_and_stacked(tmp_path, common, runs)
    assert paths == {vmapped}
    assert_equal_runs(tmp_path, alone, stacked)


def test_stacked_cnns_with_batch_norm_and_augmentation_equal_each_run_alone(tmp_path):
    runs = [["optimizer.lr=0.001", "trainer.seed=0"], ["optimizer.lr=0.003", "trainer.seed=1"],
            ["optimizer.lr=0.001", "trainer.seed=1", "optimizer.weight_decay=0.01"],
            ["optimizer.lr=0.003", "trainer.seed=2", "averaging=swa", "averaging.start_epoch=2", "averaging.lr=0.01"]]
    alone, stacked = alone_and_stacked(tmp_path, CNN, runs)
    assert_equal_runs(tmp_path, alone, stacked)


def test_a_run_that_diverges_leaves_the_stack_and_the_others_finish_unchanged(tmp_path):
    runs = [["optimizer.lr=0.001"], ["optimizer=sgd", "optimizer.lr=1e30"], ["optimizer.lr=0.003", "trainer.seed=2"]]
    common = [*QUICK, "trainer.epochs=3", "optimizer=sgd"]
    alone, stacked = alone_and_stacked(tmp_path, common, [r if "optimizer=sgd" not in r else r[1:] for r in runs])
    assert alone[1]["stop_reason"] == stacked[1]["stop_reason"] == "diverged"
    assert alone[1]["steps"] == stacked[1]["steps"] < alone[0]["steps"]  # it left at its divergence
    for i in (0, 2):
        assert_same_metrics(stacked[i], alone[i], rel=1e-4)


def test_the_stack_size_follows_a_small_memory_budget(tmp_path, capsys):
    runs = [[f"trainer.seed={s}"] for s in range(3)]
    alone, stacked = alone_and_stacked(tmp_path, [*QUICK, "trainer.epochs=2"], runs, memory_gb=1e-4)
    assert "runs per stack fit the memory budget" in capsys.readouterr().out
    assert [m["test/acc"] for m in stacked] == pytest.approx([m["test/acc"] for m in alone], abs=0.005)


def session_hparams(run_dir: Path) -> dict:
    """The hparams a run's event file gives TensorBoard's HParams dashboard."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = EventAccumulator(str(run_dir))
    found.Reload()
    content = found.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for key, value in session.hparams.items()}


def summary_rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as f:
        return [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]


@pytest.mark.slow  # two sweeps of 8 runs
def test_a_sweep_splits_into_stacks_and_lone_runs_and_ends_as_the_basic_launcher_ends(tmp_path):
    args = ["-m", "model=linear,mlp", "trainer.seed=0,1", "optimizer=adam,lbfgs", "optimizer.lr=0.01",
            "trainer.epochs=2", "data.subset=300"]
    stacked = cli(*args, "hydra.sweep.dir=stacked", cwd=tmp_path)
    basic = cli(*args, "hydra/launcher=basic", "hydra.sweep.dir=basic", cwd=tmp_path)
    assert stacked.returncode == 0 and basic.returncode == 0, stacked.stderr
    assert "stacked: 4 runs train together in 2 stacks (runs per stack: 2 x 2)" in stacked.stdout
    assert stacked.stdout.count("optimizer=lbfgs has no stacked step") == 4
    assert "stacked:" not in basic.stdout
    ours, theirs = summary_rows(tmp_path / "stacked"), summary_rows(tmp_path / "basic")
    assert [r["run"] for r in ours] == [r["run"] for r in theirs]
    for run in (tmp_path / "basic").glob("*/metrics.json"):  # the HParams view: each run's hparams, the same
        name = run.parent.name
        shown = session_hparams(tmp_path / "stacked" / name)
        assert "lr" in shown and "seed" in shown and shown == session_hparams(tmp_path / "basic" / name), name
    for a, b in zip(ours, theirs):
        for key in a:
            if key.startswith(("val/", "test/", "train/")):
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4), (a["run"], key)
            else:
                assert a[key] == b[key], (a["run"], key)


def test_a_stacked_run_is_predicted_exported_and_resumed_alone(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli("-m", "optimizer.lr=0.001,0.003", "trainer.epochs=2", "data.subset=300", "trainer.deterministic=true",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0 and "stacked: 2 runs" in done.stdout, done.stderr
    run = next(p for p in sweep.iterdir() if p.name.startswith("1_"))
    solo = cli("optimizer.lr=0.003", "trainer.epochs=2", "data.subset=300", "trainer.deterministic=true",
               f"hydra.run.dir={tmp_path / 'solo'}", cwd=tmp_path)
    assert solo.returncode == 0
    for where in (run, tmp_path / "solo"):  # continued alone, two more epochs
        more = cli(f"trainer.resume={where}", "trainer.epochs=4", cwd=tmp_path)
        assert more.returncode == 0, more.stderr
    ours, theirs = read_metrics(run), read_metrics(tmp_path / "solo")
    assert ours["epochs_run"] == 4
    assert_same_metrics(ours, theirs, rel=1e-5)
    code, out, err = predict(run)  # its test split, through trainrun-predict, as its own test computed it
    assert code == 0, err
    assert f"acc {ours['test/acc']:.4f}" in out
    code, out, err = export(run, "--format", "pt2", "--output", tmp_path / "exported")
    assert code == 0 and (tmp_path / "exported").exists(), err


def test_a_stack_on_a_terminal_shows_a_line_per_run_with_its_epoch_and_state(tmp_path):
    import io

    from rich.console import Console

    from trainrun.run.console import StackDisplay

    trainer.HELD = held = []
    try:
        for seed in (0, 1):
            trainer.train(make_config([*QUICK, f"trainer.seed={seed}", "trainer.epochs=2"]), tmp_path / f"run{seed}",
                          quiet_console())
    finally:
        trainer.HELD = None
    runs = [h.run for h in held]
    runs[1].completed = True
    screen = io.StringIO()
    display = StackDisplay(runs, Console(file=screen, force_terminal=True, width=80))
    display.update()
    display.stop()
    shown = screen.getvalue()
    assert "a stack of 2 runs" in shown and "best val/loss" in shown
    assert "run0" in shown and "training" in shown and "run1" in shown and "done" in shown
    assert StackDisplay(runs, Console(file=io.StringIO(), force_terminal=False)).live is None  # not a terminal


@pytest.mark.parametrize("norm", [["norm=layer"], ["model=cnn", "model.channels=[4,8]", "model.hidden=[16]", "norm=group",
                                                   "norm.num_groups=2"],
                                  ["model=cnn", "model.channels=[4,8]", "model.hidden=[16]", "norm=instance"]],
                         ids=["layer", "group", "instance"])
def test_stacked_runs_with_each_stackable_norm_equal_each_run_alone(tmp_path, norm):
    runs = [["optimizer.lr=0.001", "trainer.seed=0"], ["optimizer.lr=0.003", "trainer.seed=1"]]
    alone, stacked = alone_and_stacked(tmp_path, [*QUICK, *norm, "trainer.epochs=2"], runs)
    assert_equal_runs(tmp_path, alone, stacked)


def test_runs_of_one_seed_gather_each_steps_batch_once(tmp_path, monkeypatch):
    from trainrun.stack.training import Stack

    runs = [["optimizer.lr=0.01"], ["optimizer.lr=0.1"], ["trainer.seed=1", "data.split_seed=0"]]
    stack = Stack(hold([tmp_path / f"r{i}" for i in range(len(runs))], QUICK, runs))
    gathered, prepare = [], trainer.Training.prepare
    monkeypatch.setattr(trainer.Training, "prepare", lambda run, idx: gathered.append(run) or prepare(run, idx))
    stack.start(stack.active)
    for _ in range(3):
        stack.advance(None)
    # seed 0's two runs take one batch a step; seed 1 on the same data takes its own rows
    assert gathered == [stack.members[0].run, stack.members[2].run] * 3


def drawn(seed):
    """A user's data function that draws from the process's generator (not its seed)."""
    return torch.randn(300, 5), torch.randint(0, 3, (300,))


def test_runs_on_the_same_data_and_split_share_its_tensors_each_with_its_own_record(tmp_path):
    import gc
    import importlib

    shared = importlib.import_module("trainrun.data.load").SHARED
    runs = [["optimizer.lr=0.01"], ["trainer.seed=1"], ["optimizer.lr=0.1", "trainer.overfit_batches=1"],
            ["trainer.seed=1", "data.split_seed=0"]]
    held = hold([tmp_path / f"r{i}" for i in range(len(runs))], QUICK, runs)
    data = [h.run.parts.data for h in held]
    assert len({id(d) for d in data}) == 4  # a record each: overfit_batches replaced its own train split only
    assert len(data[2].train) == 64 and len(data[0].train) == len(data[3].train) > 64
    split_0 = {data[i].val.x.data_ptr() for i in (0, 2, 3)}  # split seed 0, loaded once though seed 1 came between
    assert len(split_0) == 1 and data[1].val.x.data_ptr() not in split_0
    assert data[0].train.x.data_ptr() == data[3].train.x.data_ptr()
    assert not torch.equal(data[0].val.y, data[1].val.y)
    del held, data
    gc.collect()
    assert list(shared.in_use.values()) == [shared.last]  # data no run uses are let go, but the last loaded
    # a loader that drew from the process's generator is loaded again: a run alone starts from what it left
    from trainrun.data.load import load

    cfg = make_config(["data=custom", "data._target_=test_stack.drawn"])
    first, again = (load(cfg.data, 0, torch.device("cpu"), prenormalize=True) for _ in range(2))
    assert first.train.x.data_ptr() != again.train.x.data_ptr()


def test_runs_whose_model_cannot_stack_train_one_after_another_as_alone(tmp_path, capsys):
    runs = [["optimizer.lr=0.001", "trainer.seed=0"], ["optimizer.lr=0.003", "trainer.seed=1"]]
    alone, stacked = alone_and_stacked(tmp_path, [*QUICK, "activation=prelu", "trainer.epochs=2"], runs)
    assert "train one after another: its model has a PReLU" in capsys.readouterr().out
    for ours, theirs in zip(stacked, alone):
        assert_same_metrics(ours, theirs, rel=0)  # trained as alone, from the states they were held with


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "true"])
def test_a_bad_memory_budget_is_refused_in_one_line_before_the_sweep(tmp_path, value):
    done = cli("-m", "trainer.seed=0,1", f"hydra.launcher.memory_gb={value}", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert done.returncode == 2 and "hydra.launcher.memory_gb=" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("common", [CNN, MLP], ids=["cnn-batchnorm-augmentation", "mlp-dropout"])
def test_runs_that_join_a_stack_later_equal_each_run_alone(tmp_path, common):
    """A search's slot: a run admitted steps after the others, so its epochs' shorter last batch comes at another
    step than theirs (those steps pass in one pass per batch size), still equals its run alone."""
    from trainrun.stack.training import Stack

    runs = [["optimizer.lr=0.001", "trainer.seed=0"], ["optimizer.lr=0.003", "trainer.seed=1"],
            ["optimizer.lr=0.001", "trainer.seed=1", "optimizer.weight_decay=0.01"]]
    alone = train_alone(tmp_path, common, runs)
    held = hold([tmp_path / f"stacked{i}" for i in range(len(runs))], common, runs)
    stack = Stack(held[:1], per_run=True)
    stack.start(stack.active)
    for joining, after in ((held[1], 2), (held[2], 3)):
        for _ in range(after):
            stack.advance(None)
        stack.admit([joining])
    sizes = []
    forward = stack.forward
    stack.forward = lambda xs: sizes.append(len({len(x) for x in xs})) or forward(xs)
    while stack.active:
        stack.advance(None)
    assert max(sizes) > 1  # some steps passed runs of two batch sizes
    stacked = [m.metrics for m in stack.members]
    assert_equal_runs(tmp_path, alone, stacked)
