"""Population-based training (hparams_search=pbt): an exploit copies a member exactly and applies the explored
hyperparameters, the lineage is recorded, a killed population resumes exactly, bad settings are refused."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import optuna.distributions as d
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli, make_config
from test_stack import hold
from test_sweep_resume import final_metrics, start
from trainrun.stack.training import Stack
from trainrun.stack.pbt import Exploration, Population, perturbed, quantile_size, sample

QUICK = ["data.subset=400", "trainer.checkpoint.every_n_seconds=null", "trainer.log_every_n_steps=1"]


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_an_exploit_copies_the_source_and_its_next_step_is_the_sources_with_the_explored_lr(tmp_path, optimizer):
    """Two members with one seed (the same batches): after the exploit the target's weights, optimizer state and
    schedule are the source's, and its next update is the source's next update times the lr factor (Adam's and
    SGD's step are linear in lr)."""
    runs = [[f"optimizer={optimizer}", f"optimizer.lr={lr}", "trainer.epochs=2", "scheduler=cosine"]
            for lr in (0.01, 0.0001)]
    held = hold([tmp_path / f"member-{i:02d}" for i in range(len(runs))], QUICK, runs)
    population = Population({"optimizer.lr": d.FloatDistribution(1e-5, 1.0, log=True)},
                            Exploration(interval=1, quantile=0.5, resample_probability=0.0, factors=(1.5,), seed=0),
                            tmp_path, {"member-00": {"optimizer.lr": 0.01}, "member-01": {"optimizer.lr": 0.0001}},
                            "val/loss", False, epochs=2)
    seen = {}

    def between(stack):
        population(stack)
        if stack.active[0].run.progress.epoch != 2 or seen:
            return
        source, target = sorted(stack.active, key=lambda m: m.run.judged["val/loss"])
        params = [list(m.run.parts.model.parameters()) for m in (source, target)]
        seen.update(source=source, target=target, at_copy=[p.detach().clone() for p in params[0]])
        for a, b in zip(*params):
            assert torch.equal(a, b)
        theirs, own = source.run.parts.optimizer.state_dict(), target.run.parts.optimizer.state_dict()
        assert theirs["state"] and own["state"].keys() == theirs["state"].keys()
        for key, value in theirs["state"].items():
            for name, tensor in value.items():
                assert torch.equal(tensor, own["state"][key][name]), name
        assert own["param_groups"][0]["lr"] == pytest.approx(1.5 * theirs["param_groups"][0]["lr"], rel=1e-12)
        assert target.run.parts.scheduler.base_lrs[0] == pytest.approx(1.5 * source.run.parts.scheduler.base_lrs[0])
        step = stack.step

        def first_step(*args):  # the next step of both: what it did to each
            result = step(*args)
            seen["next"] = [[p.detach().clone() for p in ps] for ps in params]
            stack.step = step
            return result

        stack.step = first_step

    Stack(held, between).fit()
    source, target = seen["source"], seen["target"]
    for w0, a, b in zip(seen["at_copy"], *seen["next"]):
        assert not torch.equal(a, w0)
        torch.testing.assert_close(b - w0, 1.5 * (a - w0), rtol=1e-4, atol=1e-7)  # float32 rounding of w
    lineage = json.loads((tmp_path / "pbt.json").read_text())["members"][target.run.run_dir.name]
    (exploit,) = lineage["exploits"]
    assert exploit["epoch"] == 1 and exploit["from"] == source.run.run_dir.name
    assert exploit["objective"] >= exploit["source_objective"]
    assert lineage["hyperparameters"][-1] == {"epoch": 1, "optimizer.lr": pytest.approx(0.01 * 1.5)}


def events(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    found = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    found.Reload()
    return [(e.step, e.value) for e in found.Scalars(tag)]


PBT = ["-m", "hparams_search=pbt", "hydra.sweeper.population=6", "hydra.sweeper.interval=2", "trainer.epochs=6",
       "data.subset=600", "optimizer=sgd", "trainer.deterministic=true", "trainer.checkpoint.every_n_seconds=null",
       "trainer.checkpoint.every_n_epochs=1", "model.hidden=[256,256]", "optimizer.weight_decay=0",
       "optimizer.lr=tag(log, interval(1e-3, 1.0))"]


def test_a_pbt_sweep_from_the_command_line_records_its_lineage_and_each_member_is_a_run(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli(*PBT, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "population-based training: 6 members, exploit every 2 epochs on val/loss" in done.stdout
    saved = json.loads((sweep / "pbt.json").read_text())
    assert (sweep / "pbt.png").stat().st_size > 10_000
    exploits = [(name, e) for name, record in saved["members"].items() for e in record["exploits"]]
    # 6 members, quantile 0.25: the worst 2 copy at epochs 2 and 4
    assert sorted(e["epoch"] for _, e in exploits) == [2, 2, 4, 4]
    for name, e in exploits:
        # ranked on the monitored value of that epoch: the copier's is worse than its source's
        val = dict(events(sweep / name, "loss/val"))
        step = sorted(val)[e["epoch"] - 1]
        assert e["objective"] == pytest.approx(val[step], rel=1e-6)
        assert e["objective"] >= e["source_objective"]
        # its lr curve continues through the exploit with the explored value
        explored = next(h["optimizer.lr"] for h in saved["members"][name]["hyperparameters"] if h["epoch"] == e["epoch"])
        lr = events(sweep / name, "step/lr")
        after = [v for s, v in lr if s > step]
        assert after[0] == pytest.approx(explored, rel=1e-6)
    for i in range(6):  # every member a run of its own, on one split (its own seed otherwise)
        run = sweep / f"member-{i:02d}"
        config = (run / ".hydra" / "config.yaml").read_text()
        assert "split_seed: 0" in config and f"seed: {i}\n" in config.split("trainer:")[1]
        assert {"metrics.json", "best.pt", "last.pt"} <= {p.name for p in run.iterdir()}
        assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 6  # pbt's preset: all epochs
    best = min(range(6), key=lambda i: json.loads((sweep / f"member-{i:02d}" / "metrics.json").read_text())["val/loss"])
    assert f"member-{best:02d}" in done.stdout.split("★ 1")[1].splitlines()[0]  # the summary's best run
    # after the table (which shows starting values): the best member's hyperparameters over the epochs
    schedule = saved["members"][f"member-{best:02d}"]["hyperparameters"]
    said = f"the best, member-{best:02d}, trained " + "; ".join(
        f"from epoch {h['epoch']} optimizer.lr={h['optimizer.lr']:.4g}" for h in schedule)
    assert said in " ".join(done.stdout.split())


@pytest.mark.slow
def test_a_killed_pbt_sweep_repeated_ends_equal_to_the_uninterrupted_one(tmp_path):
    reference = cli(*PBT, f"hydra.sweep.dir={tmp_path / 'reference'}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    sweep = tmp_path / "sweep"
    proc = start([*PBT, f"hydra.sweep.dir={sweep}"], tmp_path)
    deadline = time.monotonic() + 300
    while not any(record["exploits"] for record in (json.loads((sweep / "pbt.json").read_text())["members"].values()
                                                    if (sweep / "pbt.json").is_file() else [])):
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # just after the first exploit: the last checkpoints are epoch 2's
    proc.wait()
    assert not list(sweep.glob("*/metrics.json"))
    resumed = cli(*PBT, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming 6 unfinished" in resumed.stdout
    assert final_metrics(sweep) == final_metrics(tmp_path / "reference")
    assert json.loads((sweep / "pbt.json").read_text()) == json.loads((tmp_path / "reference" / "pbt.json").read_text())


@pytest.mark.parametrize("args, message", [
    (["hydra.sweeper.population=1"], "hydra.sweeper.population=1 is invalid: expected an integer >= 2"),
    (["hydra.sweeper.quantile=0.7"], "hydra.sweeper.quantile=0.7 is invalid: expected a fraction in (0, 0.5]"),
    (["hydra.sweeper.quantile=nan"], "hydra.sweeper.quantile=nan is invalid"),
    (["hydra.sweeper.interval=0"], "hydra.sweeper.interval=0 is invalid: expected a whole number of epochs >= 1"),
    (["hydra.sweeper.resample_probability=1.5"], "hydra.sweeper.resample_probability=1.5 is invalid"),
    (["hydra.sweeper.factors=[0.8,-1]"], "hydra.sweeper.factors=[0.8, -1.0] is invalid: expected a list of numbers > 0"),
    (["hydra.sweeper.seed=-1"], "hydra.sweeper.seed=-1 is invalid: expected an integer >= 0"),
    (["hydra.sweeper.interval=20"], "hydra.sweeper.interval=20 leaves no exploit in trainer.epochs=20"),
    (["trainer.eval_every=3"], "hydra.sweeper.interval=4 is not a multiple of trainer.eval_every=3"),
    (["regularization.dropout=interval(0.0,0.5)"], "regularization.dropout cannot change during a run"),
    (["model.hidden=choice([64],[128])"], "model.hidden cannot change during a run"),
    (["optimizer=adadelta"], "this one cannot: optimizer=adadelta has no stacked step"),
    (["hydra/launcher=basic"], "hparams_search=pbt trains its population as one stack: it needs hydra/launcher=stack"),
    (["optimizer.lr=tag(log, interval(-1.0, 1.0))"], "cannot search optimizer.lr=tag(log, interval(-1.0, 1.0))"),
    (["optimizer.lr=interval(0.0, 1.0)"], "optimizer.lr=0.0 is invalid"),
])
def test_bad_pbt_settings_are_refused_in_one_line_before_the_sweep(tmp_path, args, message):
    sweep = tmp_path / "sweep"
    done = cli("-m", "hparams_search=pbt", *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2 and "Traceback" not in done.stderr
    assert not sweep.exists()


def test_explore_stays_inside_the_space_and_the_quantile_follows_ray():
    import numpy as np

    rng = np.random.default_rng(0)
    lr = d.FloatDistribution(1e-3, 1e-1, log=True)
    assert perturbed(lr, 0.09, 1.2, 1) == 0.1  # clipped to the space
    assert perturbed(lr, 0.01, 0.8, 1) == pytest.approx(0.008)
    assert perturbed(d.IntDistribution(1, 10), 9, 1.2, 1) == 10
    assert perturbed(d.CategoricalDistribution([0.1, 0.5, 0.9]), 0.5, 1.2, -1) == 0.1  # a choice moves a place
    assert perturbed(d.CategoricalDistribution([0.1, 0.5, 0.9]), 0.9, 1.2, 1) == 0.9
    draws = [sample(lr, rng) for _ in range(2000)]
    assert min(draws) >= 1e-3 and max(draws) <= 1e-1
    assert 0.4 < sum(v < 1e-2 for v in draws) / len(draws) < 0.6  # log-uniform: half below the geometric middle
    assert [quantile_size(n, 0.25) for n in (2, 3, 4, 8, 16)] == [1, 1, 1, 2, 4]
    assert quantile_size(4, 0.5) == 2 and quantile_size(5, 0.5) == 2


def test_a_population_killed_between_its_members_writes_goes_back_to_the_step_all_reached(tmp_path):
    from trainrun.run.checkpoint import PREVIOUS, save_atomic
    from trainrun.stack.pbt import aligned

    def member(name: str, *steps: int) -> Path:
        run = tmp_path / name
        run.mkdir()
        for step in steps:  # each write keeps the one before as PREVIOUS, as a population's checkpointer does
            save_atomic({"step": step}, run / "last.pt", previous=run / PREVIOUS)
        (run / "best.pt").write_bytes(b"best")
        return run

    ahead, behind, fresh = member("ahead", 10, 20), member("behind", 10), member("fresh", 10, 20)
    aligned([ahead, behind, fresh])
    for run in (ahead, behind, fresh):
        assert torch.load(run / "last.pt")["step"] == 10
    assert (ahead / "best.pt").is_file()

    started = member("started", 10)
    never = tmp_path / "never"  # killed before its first checkpoint
    never.mkdir()
    aligned([started, never])
    assert not (started / "last.pt").exists() and not (started / "best.pt").exists()  # both start over


def test_runs_with_one_split_seed_share_their_split_whatever_their_own_seed():
    from trainrun.run.build import build
    from trainrun.run.distributed import World

    def rows(*overrides):
        data = build(make_config(["data.subset=300", *overrides]), World(), None).data
        return [data.fetch(split, slice(0, len(split)))[0] for split in (data.train, data.val, data.test)]

    shared = rows("data.split_seed=3", "trainer.seed=0"), rows("data.split_seed=3", "trainer.seed=1")
    for a, b in zip(*shared):
        assert torch.equal(a, b)
    own = rows("trainer.seed=0"), rows("trainer.seed=1")  # null: the split follows trainer.seed
    assert not torch.equal(own[0][1], own[1][1])
