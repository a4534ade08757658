"""Studies: each claim's rule on crafted numbers (a case that holds, one that does not), the planned sweeps,
and studies end to end at a reduced size with their exact claims asserted as numbers."""
from __future__ import annotations

import json
import math

import pytest

from conftest import cli, read_metrics, train_run
from trainrun.studies import STUDIES
from trainrun.study import FAILS, HOLDS, INCONCLUSIVE, Run


def run(choices: dict, metrics: dict = None, activations: dict = None, grads: dict = None, later=()) -> Run:
    init = {"epoch": 0, "step": 0, "activations": activations or {}, "grad_norms": grads or {}}
    return Run("_".join(f"{k}-{v}" for k, v in choices.items()), {k: str(v) for k, v in choices.items()},
               metrics or {}, [init, *later], {})


def verdict(study: str, index: int, runs: list) -> str:
    return STUDIES[study].claims[index].check(runs)[0]


def act(std, spread=1.0):
    return {"mean": 0.0, "std": std, "unit_spread": spread}


def test_sign_rule():
    zero = {"fc1.linear.weight": 0.0, "fc2.linear.weight": 0.0, "head.weight": 0.5}
    assert verdict("activations", 0, [run({"activation": "sign"}, grads=zero)]) == HOLDS
    leak = {**zero, "fc1.linear.weight": 1e-9}
    assert verdict("activations", 0, [run({"activation": "sign"}, grads=leak)]) == FAILS
    assert verdict("activations", 0, []) == INCONCLUSIVE


def test_vanishing_gradient_rule():
    def grads(first, last):
        return {"fc1.linear.weight": first, "fc6.linear.weight": last, "head.weight": 1.0}

    relu = run({"activation": "relu"}, grads=grads(0.5, 1.0))
    assert verdict("activations", 1, [run({"activation": "sigmoid"}, grads=grads(1e-4, 1.0)), relu]) == HOLDS
    assert verdict("activations", 1, [run({"activation": "sigmoid"}, grads=grads(0.2, 1.0)), relu]) == FAILS


def test_abs_rule():
    relu = run({"activation": "relu"}, {"test/acc": 0.9})
    assert verdict("activations", 2, [run({"activation": "abs"}, {"test/acc": 0.88}), relu]) == HOLDS
    assert verdict("activations", 2, [run({"activation": "abs"}, {"test/acc": 0.5}), relu]) == FAILS


def test_init_depth_rules():
    def net(init, depth, last_std, spread=1.0, acc=0.9):
        acts = {f"fc{i}": act(1.0, spread) for i in range(1, depth)}
        acts[f"fc{depth}"] = act(last_std, spread)
        return run({"model.depth": depth, "init": init}, {"test/acc": acc}, activations=acts)

    assert verdict("init_depth", 0, [net("zeros", 2, 0.0, spread=0.0)]) == HOLDS
    assert verdict("init_depth", 0, [net("zeros", 2, 0.0, spread=1e-7)]) == FAILS
    assert verdict("init_depth", 1, [net("standard_normal", 2, 10.0), net("standard_normal", 20, 1e5)]) == HOLDS
    assert verdict("init_depth", 1, [net("standard_normal", 2, 10.0), net("standard_normal", 20, 50.0)]) == FAILS
    assert verdict("init_depth", 1, [net("standard_normal", 2, 10.0), net("standard_normal", 20, None)]) == INCONCLUSIVE
    keeps = [net("xavier_normal", 2, 1.0), net("xavier_normal", 20, 0.1), net("kaiming_normal", 2, 1.0),
             net("kaiming_normal", 20, 1.2)]
    assert verdict("init_depth", 2, keeps) == HOLDS
    assert verdict("init_depth", 2, [*keeps[:3], net("kaiming_normal", 20, 3.6)]) == FAILS
    deep = [net("kaiming_normal", 20, 1.0, acc=0.93), net("xavier_normal", 20, 1.0, acc=0.7)]
    assert verdict("init_depth", 3, deep) == HOLDS
    assert verdict("init_depth", 3, [net("kaiming_normal", 20, 1.0, acc=0.6), deep[1]]) == FAILS


@pytest.mark.parametrize("study,runs", [("activations", 6), ("init_depth", 15), ("selu", 4), ("optimizers", 7),
                                        ("mc_dropout", 3), ("regularization", 4)])
# (staged studies plan per stage: test_the_staged_lr_diagnosis_study_end_to_end_and_resumed)
def test_each_study_plans_its_sweep_without_training(tmp_path, study, runs):
    planned = cli(f"study={study}", "--cfg", "hydra", "-p", "hydra.sweeper", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    params = planned.stdout.split("params:")[1]
    sizes = [len(line.split(":", 1)[1].split(",")) for line in params.strip().splitlines()]
    assert math.prod(sizes) == runs


def test_selu_rules():
    def net(init, moments):
        return run({"init": init}, activations={f"fc{i}": {"mean": m, "std": s, "unit_spread": 1.0}
                                                for i, (m, s) in enumerate(moments, 1)})

    steady = net("lecun_normal", [(0.05, 1.0)] * 5)
    assert verdict("selu", 0, [steady]) == HOLDS
    assert verdict("selu", 0, [net("lecun_normal", [(0.05, 1.0)] * 4 + [(0.5, 1.0)])]) == FAILS
    assert verdict("selu", 1, [steady, net("default", [(0.0, 0.2)])]) == HOLDS
    assert verdict("selu", 1, [steady, net("xavier_normal", [(0.0, 1.0)])]) == FAILS


def test_optimizers_rule():
    def opt(name, loss):
        return Run(name, {"optimizer": name}, {}, [], {"loss/train": [(1, 0.1, 1.0), (2, 0.2, loss)]})

    assert verdict("optimizers", 0, [opt("sgd", 0.1), opt("momentum", 0.05), opt("nesterov", 0.04)]) == HOLDS
    assert verdict("optimizers", 0, [opt("sgd", 0.1), opt("momentum", 0.2), opt("nesterov", 0.04)]) == FAILS


def test_mc_dropout_rule():
    def seed(s, right, wrong):
        return run({"trainer.seed": s}, {"test/mc_entropy_correct": right, "test/mc_entropy_wrong": wrong})

    assert verdict("mc_dropout", 0, [seed(0, 0.2, 0.9), seed(1, 0.3, 0.8)]) == HOLDS
    assert verdict("mc_dropout", 0, [seed(0, 0.2, 0.9), seed(1, 0.8, 0.3)]) == FAILS


def test_transfer_rule():
    def learn(checkpoint, head_only, acc):
        return Run(f"learn-{checkpoint}-{head_only}", {"model.checkpoint": checkpoint, "model.head_only": head_only},
                   {"test/acc": acc}, [], {})

    scratch = learn("null", "false", 0.6)
    assert verdict("transfer", 0, [learn("/x/best.pt", "false", 0.8), learn("/x/best.pt", "True", 0.7), scratch]) == HOLDS
    assert verdict("transfer", 0, [learn("/x/best.pt", "false", 0.8), learn("/x/best.pt", "true", 0.5), scratch]) == FAILS


def test_lr_diagnosis_rules():
    def swept(factor, scheduler, loss, stop="completed"):
        return Run("s", {"optimizer.lr": f"{0.5 * factor:.4g}", "scheduler": scheduler}, {"stop_reason": stop}, [],
                   {"loss/val": [(1, 0.1, 2.3), (2, 0.2, loss)]})

    find = Run("find-0", {"tune": "lr_find"}, {"suggested_lr": 0.5}, [], {})
    good = [find, swept(0.001, "none", 2.2), swept(1, "none", 0.3), swept(100, "none", float("nan"), "diverged"),
            swept(10, "none", 2.4), swept(10, "step", 0.5)]
    assert [verdict("lr_diagnosis", i, good) for i in range(3)] == [HOLDS, HOLDS, HOLDS]
    bad = [find, swept(0.001, "none", 0.4), swept(1, "none", 0.3), swept(100, "none", 0.35),
           swept(10, "none", 2.4), swept(10, "step", 2.3)]
    assert [verdict("lr_diagnosis", i, bad) for i in range(3)] == [FAILS, FAILS, FAILS]
    assert verdict("lr_diagnosis", 0, good[1:]) == INCONCLUSIVE  # no range test


def test_normalization_rules():
    def net(norm, position, lr, loss3, acc):
        return Run("batchnorm-0", {"norm": norm, "norm.position": position, "optimizer.lr": lr}, {"test/acc": acc}, [],
                   {"loss/val": [(1, 0.1, 2.3), (3, 0.3, loss3)]})

    good = [net("none", "before", "0.01", 2.0, 0.5), net("batch", "before", "0.01", 1.0, 0.9),
            net("batch", "after", "0.01", 1.1, 0.9), net("none", "before", "1.0", 2.3, 0.1),
            net("batch", "before", "1.0", 0.3, 0.95), net("batch", "after", "1.0", 0.4, 0.9)]
    assert verdict("normalization", 0, good) == HOLDS and verdict("normalization", 1, good) == HOLDS
    bad = [*good[:2], net("batch", "after", "0.01", 2.1, 0.9), good[3], good[4], net("batch", "after", "1.0", 2, 0.7)]
    assert verdict("normalization", 0, bad) == FAILS and verdict("normalization", 1, bad) == FAILS

    def inputs(normalize, loss3):
        return Run("inputs-0", {"data.normalize": normalize}, {}, [], {"loss/val": [(1, 0.1, 2.3), (3, 0.3, loss3)]})

    raw = inputs("none", 1.0)
    assert verdict("normalization", 2, [raw, inputs("standardize", 0.5), inputs("pca", 0.6), inputs("whiten", 0.4)]) == HOLDS
    assert verdict("normalization", 2, [raw, inputs("standardize", 0.5), inputs("pca", 1.2), inputs("whiten", 0.4)]) == FAILS


def test_regularization_rule():
    def reg(name, gap):
        return Run(name, {"regularization": name}, {}, [], {"acc/train": [(1, 0.1, 1.0)], "acc/val": [(1, 0.1, 1.0 - gap)]})

    assert verdict("regularization", 0, [reg("none", 0.2), reg("l2", 0.1), reg("l1", 0.15), reg("dropout", 0.05)]) == HOLDS
    assert verdict("regularization", 0, [reg("none", 0.2), reg("l2", 0.1), reg("l1", 0.2), reg("dropout", 0.05)]) == FAILS


def test_gd_vs_sgd_rules():
    def stage(name, scheduler, losses):
        return Run(f"{name}-0", {"scheduler": scheduler}, {}, [],
                   {"loss/train": [(i + 1, 0.1 * i, v) for i, v in enumerate(losses)]})

    gd = stage("gd", "none", [1.0, 0.1, 0.01, 0.001])
    stalled = stage("sgd", "none", [1.0, 0.1, 0.099, 0.098])
    descending = stage("sgd", "inverse_time", [1.0, 0.1, 0.05, 0.02])
    assert verdict("gd_vs_sgd", 0, [gd, stalled]) == HOLDS and verdict("gd_vs_sgd", 1, [stalled, descending]) == HOLDS
    still_falling = stage("sgd", "none", [1.0, 0.1, 0.05, 0.01])
    assert verdict("gd_vs_sgd", 0, [gd, still_falling]) == FAILS
    assert verdict("gd_vs_sgd", 1, [still_falling, descending]) == FAILS


def test_help_lists_each_study_with_its_claim(tmp_path):
    shown = cli("--help", cwd=tmp_path).stdout
    assert "activations  sign passes no gradient to the hidden layers" in shown
    assert "init_depth   zeros keeps units identical" in shown
    from trainrun.studies import STUDIES as all_studies
    assert all(f"\n  {name} " in shown for name in all_studies)


def test_measuring_layers_changes_nothing_in_the_run(tmp_path):
    args = ["trainer.deterministic=true", "regularization=dropout", "model.depth=3", "model.width=32"]
    plain = train_run(tmp_path / "plain", args)
    measured = train_run(tmp_path / "measured", [*args, "logger.layers=true"])
    assert {k: v for k, v in plain.items() if k != "wall_time_s"} == \
        {k: v for k, v in measured.items() if k != "wall_time_s"}
    records = json.loads((tmp_path / "measured" / "layers.json").read_text())["records"]
    assert [r["epoch"] for r in records] == [0, 1, 2]  # at init, then after each epoch
    assert set(records[0]["activations"]) >= {"fc1", "fc2", "fc3", "head"}


def test_the_activations_study_end_to_end(tmp_path):
    sweep = tmp_path / "s"
    result = cli("-m", "study=activations", "study.epochs.small=2", "data.subset=300", f"hydra.sweep.dir={sweep}",
                 cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "study activations:" in result.stdout and "claims hold" in result.stdout
    layers = json.loads((sweep / "5_activation-sign" / "layers.json").read_text())["records"]
    hidden = [n for r in layers for n, g in r["grad_norms"].items() if n.startswith("fc") and g != 0.0]
    assert not hidden and all(r["grad_norms"]["head.weight"] > 0 for r in layers)  # exactly zero, only the head learns
    report = (sweep / "study.md").read_text()
    assert "| sign: the hidden layers receive exactly zero gradient |" in report and "**holds**" in report
    assert (sweep / "activations.png").stat().st_size > 10_000
    assert read_metrics(sweep / "5_activation-sign")["epochs_run"] == 2


@pytest.mark.slow  # two stages: a range test, then 10 runs
def test_the_staged_lr_diagnosis_study_end_to_end_and_resumed(tmp_path):
    sweep = tmp_path / "s"
    args = ["-m", "study=lr_diagnosis", "study.epochs.small=2", "data.subset=300", f"hydra.sweep.dir={sweep}"]
    result = cli(*args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    suggested = read_metrics(sweep / "find-0")["suggested_lr"]
    lrs = sorted(float(p.name.split("_lr-")[1].split("_")[0]) for p in sweep.glob("sweep-*"))
    assert len(lrs) == 10 and lrs[0] == pytest.approx(suggested * 0.001, rel=1e-3)  # the second stage used the first's
    again = cli(*args, cwd=tmp_path, timeout=600)
    assert "stage find: 1 finished" in again.stdout and "stage sweep: 10 finished" in again.stdout


@pytest.mark.slow  # 15 runs
def test_the_init_depth_study_end_to_end(tmp_path):
    sweep = tmp_path / "s"
    result = cli("-m", "study=init_depth", "study.epochs.small=2", "data.subset=300", f"hydra.sweep.dir={sweep}",
                 cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for run_dir in sweep.glob("*_init-zeros"):  # identical units: no spread at all, at init and after training
        records = json.loads((run_dir / "layers.json").read_text())["records"]
        assert max(a["unit_spread"] for r in records for n, a in r["activations"].items() if n.startswith("fc")) == 0.0
    report = (sweep / "study.md").read_text()
    assert report.count("| **") == 4 and "**Verdict:** study init_depth:" in report
    assert (sweep / "init_depth_activations.png").is_file() and (sweep / "init_depth_loss.png").is_file()
