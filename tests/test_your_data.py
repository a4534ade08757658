"""Your own data: tables (CSV, Parquet, parsed by pyarrow) and arrays (.npz, memory-mapped .npy, .pt)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import cli, train_run

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402


def write_sklearn_csv(path, loader, label_names: bool):
    """A real table with a header row: scikit-learn's bundled data (no download)."""
    bunch = loader()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(n.replace(" ", "_") for n in bunch.feature_names), "label"])
        for row, target in zip(bunch.data, bunch.target):
            writer.writerow([*row, bunch.target_names[target] if label_names else target])
    return path


@pytest.mark.parametrize("name,task,at_least", [("breast_cancer", "classification", 0.9), ("wine", "classification", 0.85),
                                                ("diabetes", "regression", None)])
def test_real_tables_from_csv(tmp_path, name, task, at_least):
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    path = write_sklearn_csv(tmp_path / f"{name}.csv", loader, label_names=name == "breast_cancer")
    metrics = train_run(tmp_path / "run", ["data=table", f"data.path={path}", "data.target=label", "trainer.epochs=15",
                                           "data.subset=null", "optimizer.lr=0.003"], tiny=False)
    if task == "classification":
        assert metrics["test/acc"] >= at_least
        classes = json.loads((tmp_path / "run" / "classes.json").read_text())
        assert classes == (["benign", "malignant"] if name == "breast_cancer" else ["0", "1", "2"])
    else:  # the diabetes target is a float column of whole numbers: regression, an MAE in its units
        assert "test/mae" in metrics and "test/acc" not in metrics
        assert not (tmp_path / "run" / "classes.json").exists()


@pytest.fixture
def parquet_file(tmp_path):
    """Categorical and numeric columns with missing values; the label follows `size` and `colour`."""
    rng = np.random.default_rng(0)
    n = 600
    colour = rng.choice(["red", "green", "blue"], n)
    size = rng.normal(0, 1, n)
    label = np.where((colour == "red") | (size > 1), "yes", "no")
    size_with_gaps = [None if i % 50 == 7 else float(v) for i, v in enumerate(size)]
    noise = rng.integers(0, 1000, n)
    table = pa.table({"colour": pa.array(colour).dictionary_encode(), "size": size_with_gaps, "noise": noise,
                      "label": label})
    pq.write_table(table, tmp_path / "samples.parquet")
    return tmp_path / "samples.parquet"


@pytest.mark.slow  # everyday tier under 10 min: 15 s of a worker here
def test_parquet_with_categories_and_missing_values(tmp_path, parquet_file):
    args = ["data=table", f"data.path={parquet_file}", "data.target=label", "trainer.epochs=20", "data.subset=null"]
    refused = cli(*args, cwd=tmp_path)
    assert refused.returncode == 2 and "column size has 12 missing values (rows [7, 57, 107, 157, 207]);" in refused.stderr
    dropped = train_run(tmp_path / "drop", [*args, "data.missing=drop"], tiny=False)
    filled = train_run(tmp_path / "mean", [*args, "data.missing=mean", "data.features=[colour,size]"], tiny=False)
    assert dropped["test/acc"] > 0.9 and filled["test/acc"] > 0.9


def test_a_table_sets_its_input_width_from_one_hot_columns(parquet_file):
    from conftest import make_config
    from trainrun.data import load

    cfg = make_config(["data=table", f"data.path={parquet_file}", "data.target=label", "data.missing=mean"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    assert data.input_shape == (3 + 1 + 1,) and data.task == "classification" and data.class_names == ["no", "yes"]


def test_arrays_npz_npy_memory_mapped_and_pt(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) * 7 + 3  # labels 3 and 10: mapped to classes 0 and 1
    np.savez(tmp_path / "data.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "data.pt")
    results = [train_run(tmp_path / name, ["data=arrays", *args, "trainer.epochs=10", "trainer.deterministic=true",
                                           "data.subset=null"], tiny=False)
               for name, args in [("npz", [f"data.path={tmp_path / 'data.npz'}"]),
                                  ("npy", [f"data.path={tmp_path / 'x.npy'}", f"data.targets={tmp_path / 'y.npy'}"]),
                                  ("pt", [f"data.path={tmp_path / 'data.pt'}"])]]
    assert results[0]["test/acc"] > 0.9
    assert results[0]["test/acc"] == results[1]["test/acc"] == results[2]["test/acc"]  # one dataset, three files


def test_npy_is_memory_mapped_not_copied(tmp_path):
    from trainrun.data import arrays as data

    np.save(tmp_path / "x.npy", np.arange(30, dtype=np.float32).reshape(10, 3))
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    loaded = data.arrays(None, None, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
    assert loaded.on_disk  # float32 inputs are the file's pages, not a copy
    on_file = np.load(tmp_path / "x.npy", mmap_mode="r+")
    on_file[0, 0] = 99  # written through the file: the loaded tensor sees it, so it is a map of that file
    on_file.flush()
    assert float(loaded.x[0, 0]) == 99
    np.save(tmp_path / "x.npy", np.zeros((10, 3)))  # float64: converted to float32, so a copy in memory
    assert not data.arrays(None, None, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")).on_disk


@pytest.mark.parametrize("make,args,message", [
    (lambda d: np.savez(d / "a.npz", inputs=np.zeros((4, 2)), y=np.zeros(4)), ["data.path={d}/a.npz"],
     "a.npz has no x; it holds: inputs, y"),
    (lambda d: np.savez(d / "a.npz", x=np.zeros((4, 2)), y=np.zeros(5)), ["data.path={d}/a.npz"],
     "x has 4 rows, y has 5"),
    (lambda d: (d / "a.npz").write_text("not numpy"), ["data.path={d}/a.npz"], "data.path={d}/a.npz: unreadable"),
    (lambda d: None, ["data.path={d}/none.npz"], "data.path={d}/none.npz: no such file"),
    (lambda d: np.save(d / "x.npy", np.zeros((4, 2))), ["data.path={d}/x.npy"], "name its targets' .npy with data.targets"),
    (lambda d: None, [], "data=arrays needs data.path=..."),
    # NaN or infinity: a NaN loss at the first step, which would read as a learning rate too high
    (lambda d: np.savez(d / "a.npz", x=np.eye(40)[:, :3] + np.where(np.arange(120).reshape(40, 3) == 16, np.nan, 0),
                        y=np.arange(40) % 2), ["data.path={d}/a.npz"],
     "data=arrays: the inputs (x): row 5 holds NaN (at 1); replace or drop such rows"),
    (lambda d: np.savez(d / "a.npz", x=np.ones((40, 3)), y=np.arange(40) % 2,
                        x_test=np.where(np.arange(30).reshape(10, 3) == 7, -np.inf, 0), y_test=np.arange(10) % 2),
     ["data.path={d}/a.npz"], "data=arrays: the inputs (x_test): row 2 holds infinity (at 1)"),
    (lambda d: np.savez(d / "a.npz", x=np.ones((40, 3)), y=np.where(np.arange(40) == 9, np.nan, 0.5)),
     ["data.path={d}/a.npz"], "data=arrays: the targets (y): row 9 holds NaN"),  # a regression's
])
@pytest.mark.slow  # everyday tier under 10 min: 28 s of a worker here
def test_bad_arrays_are_one_line(tmp_path, make, args, message):
    make(tmp_path)
    result = cli("data=arrays", *(a.format(d=tmp_path) for a in args), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message.format(d=tmp_path) in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("content,args,message", [
    ("a,b\n1,2\n3,4\n", ["data.target=label"], "data.target=label is not a column of t.csv; its columns: a, b"),
    ("a,label\n1,x\n3,x\n", ["data.target=label"], "data.target=label has one value (x): nothing to learn"),
    ("a,label\n1,x\n3,y\n", ["data.target=label", "data.features=[a,c]"], "data.features: t.csv has no column c"),
    ("a,label\nz,1.5\nw,2.5\n", ["data.target=a", "data.task=regression"], "data.target=a holds text, not numbers"),
    ("a,label\n1,x\n,y\n", ["data.target=label"], "column a has 1 missing values (rows [1]); set data.missing"),
    ("a,label\n1,x\n", [], "data=table needs data.target=..."),
    ("a,b,label\n1,2,x\n3,inf,y\n3,4,x\n4,5,y\n", ["data.target=label"],
     "data=table: the inputs (x): row 1 holds infinity in column b"),
])
@pytest.mark.slow  # everyday tier under 10 min: 35 s of a worker here
def test_bad_tables_are_one_line(tmp_path, content, args, message):
    (tmp_path / "t.csv").write_text(content)
    result = cli("data=table", f"data.path={tmp_path / 't.csv'}", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "outputs").exists()


def test_classes_keeps_and_relabels_and_per_class_is_stratified(tmp_path):
    from trainrun.data import shipped as data_module
    from trainrun.data import load

    from conftest import make_config

    cfg = make_config(["data.classes=[7,2,9]", "data.per_class=5"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=False)  # the stored images as they are
    assert data.num_outputs == 3 and len(data.train) == 15
    assert sorted(data.train.y.tolist()) == [0] * 5 + [1] * 5 + [2] * 5
    assert set(data.test.y.tolist()) == {0, 1, 2} and len(data.test) < 0.35 * 1797 * 0.2 + 50
    # relabelled in the order given: label 0 holds class 7's images
    x, y, _, _ = data_module.digits(None, None)
    sevens = {tuple(img.flatten().tolist()) for img in x[y == 7]}
    assert all(tuple(img.flatten().tolist()) in sevens for img in data.test.x[data.test.y == 0])


@pytest.mark.parametrize("args,message", [
    (["data.classes=[3]"], "data.classes=[3]: expected at least two distinct classes"),
    (["data.classes=[1,12]"], "12 is not one"),
    (["data.per_class=500"], "data.per_class=500: class 0 has only"),
    (["data=polynomial", "data.per_class=3"], "data.per_class applies to classification data"),
])
@pytest.mark.slow  # everyday tier under 10 min: 23 s of a worker here
def test_bad_class_filters_are_one_line(tmp_path, args, message):
    result = cli(*args, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / "r").exists()
