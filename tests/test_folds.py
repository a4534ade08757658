"""k-fold cross-validation: `trainrun data.folds=K` runs K runs whose validation folds are disjoint, stratified and
cover the training pool exactly once, the test split the same in each; the summary ranks configurations by their
means over the folds."""
from __future__ import annotations

import csv
import statistics

import numpy as np
import pytest
import torch

from conftest import TINY, cli, make_config
from trainrun.errors import ConfigError, DataError


def folds_of(overrides: list[str], k: int):
    from trainrun.data import load

    out = []
    for fold in range(k):
        cfg = make_config([*overrides, f"data.folds={k}", f"data.fold={fold}"])
        data = load(cfg.data, 0, torch.device("cpu"), prenormalize=False)
        out.append(data)
    return out


def rows(split) -> set:
    return {tuple(x.flatten().tolist()) for x in split.x}


@pytest.mark.parametrize("overrides", [[], ["data=spirals"]])
def test_folds_are_disjoint_stratified_and_cover_the_pool_once_with_the_test_split_untouched(overrides):
    k = 5
    folds = folds_of(overrides, k)
    vals = [rows(f.val) for f in folds]
    assert all(not (vals[i] & vals[j]) for i in range(k) for j in range(i + 1, k))  # disjoint
    pool = rows(folds[0].train) | vals[0]
    assert set().union(*vals) == pool and sum(map(len, vals)) == len(pool)  # each row validates once
    assert all(rows(f.train) | rows(f.val) == pool and not (rows(f.train) & rows(f.val)) for f in folds)
    assert all(torch.equal(f.test.x, folds[0].test.x) for f in folds)  # the test split is the same in every fold
    for f in folds:  # stratified: each class's share in every fold, to one sample
        per_class = torch.bincount(f.val.y, minlength=f.num_outputs)
        whole = torch.bincount(torch.cat([folds[0].train.y, folds[0].val.y]), minlength=f.num_outputs)
        assert ((per_class - whole / k).abs() <= 1).all(), (per_class, whole)


def test_arrays_and_tables_fold_too(tmp_path):
    import pyarrow
    import pyarrow.csv

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(90, 3)).astype(np.float32), y=np.arange(90) % 3)
    pyarrow.csv.write_csv(pyarrow.table({"a": rng.normal(size=60), "label": [str(i % 2) for i in range(60)]}),
                          tmp_path / "t.csv")
    for overrides in (["data=arrays", f"data.path={tmp_path / 'a.npz'}"],
                      ["data=table", f"data.path={tmp_path / 't.csv'}", "data.target=label"]):
        folds = folds_of(overrides, 3)
        assert sum(len(f.val) for f in folds) == len(folds[0].train) + len(folds[0].val)


def test_a_validation_split_given_by_the_users_files_is_refused(tmp_path):
    from torchvision.io import write_png

    from trainrun.data import load

    for split in ("train", "val", "test"):  # a folder whose own sub-folders give the splits
        for label in ("a", "b"):
            (tmp_path / "imgs" / split / label).mkdir(parents=True)
            for i in range(4):
                write_png(torch.full((1, 8, 8), 30 * i, dtype=torch.uint8), str(tmp_path / "imgs" / split / label / f"{i}.png"))
    cfg = make_config(["data=folder", f"data.root={tmp_path / 'imgs'}", f"data.cache_dir={tmp_path / 'cache'}",
                       "data.folds=3", "data.fold=0"])
    with pytest.raises(DataError, match="data.folds=3: this data's validation split is given"):
        load(cfg.data, 0, torch.device("cpu"), prenormalize=False)


@pytest.mark.parametrize("overrides,said", [
    (["data.fold=1"], "data.fold=1: give data.folds=K beside it"),
    (["data.folds=3", "data.fold=3"], "data.fold=3: folds are 0 to 2"),
    (["data.folds=1", "data.fold=0"], "data.folds=1 is invalid"),
    (["data.folds=4"], "data.folds=4 runs every fold from the command line"),
])
def test_bad_fold_values_are_refused(overrides, said):
    with pytest.raises(ConfigError, match=said):
        make_config(overrides)


def test_data_folds_runs_each_fold_and_the_summary_ranks_configurations_by_their_means(tmp_path):
    result = cli("-m", "optimizer.lr=0.01,0.0001", "data.folds=3", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = next(tmp_path.glob("outputs/multirun/*/*"))
    with open(sweep / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert sorted(r["run"].split("_", 1)[1] for r in table) == sorted(
        f"lr-{lr}_fold-{k}" for lr in ("0.01", "0.0001") for k in range(3))
    means = {lr: statistics.fmean(float(r["val/loss"]) for r in table if f"lr-{lr}_" in r["run"]) for lr in ("0.01", "0.0001")}
    summary = (sweep / "summary.md").read_text()
    spread = [line for line in summary.splitlines() if line.startswith("| optimizer.lr=")]
    assert [line.split(" | ")[0].removeprefix("| ") for line in spread] == \
           [f"optimizer.lr={lr}" for lr in sorted(means, key=means.get)]  # best mean first
    for line in spread:
        lr = line.split(" | ")[0].split("=")[1]
        assert float(line.split(" | ")[3]) == pytest.approx(means[lr], rel=1e-3)  # val/loss mean over the folds
    assert "per configuration, over seeds or folds" in result.stdout
