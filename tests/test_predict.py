"""trainrun-predict and trainrun-export: a trained run used on new inputs without its training data, with the
preprocessing fitted on its train split; exports verified by ONNX Runtime and torch.export.load."""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MNIST_DIR, ROOT, cli, read_metrics

pyarrow = pytest.importorskip("pyarrow")
pytest.importorskip("pyarrow.csv")
pytest.importorskip("pyarrow.parquet")
pytestmark = pytest.mark.timeout(600)

TINY = ["trainer.epochs=2", "logger.enabled=false"]


def command(main, *args) -> tuple[int, str, str]:
    """A trainrun-predict or trainrun-export `main` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def predict(*args) -> tuple[int, str, str]:
    from trainrun.use.predict import main

    return command(main, *args)


def export(*args) -> tuple[int, str, str]:
    from trainrun.use.export import main

    return command(main, *args)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def train(tmp_path: Path, name: str, *overrides) -> Path:
    run = tmp_path / name
    result = cli(*TINY, *overrides, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The default run (digits, an MLP), with dropout so MC dropout applies."""
    tmp = tmp_path_factory.mktemp("digits")
    return train(tmp, "run", "regularization.dropout=0.2")


def test_a_run_split_by_its_own_split_seed_is_predicted_on_that_split(tmp_path):
    # a population's members train on one split (data.split_seed) with seeds of their own: predict must carve
    # the same test split, not the one trainer.seed would (its rows were trained on)
    run = train(tmp_path, "run", "trainer.seed=3", "data.split_seed=11")
    code, _, err = predict(run)
    assert code == 0, err
    report = json.loads(next((run / "predictions").glob("test.report.json")).read_text())
    metrics = read_metrics(run)
    assert report["metrics"]["loss"] == metrics["test/loss"] and report["metrics"]["acc"] == metrics["test/acc"]


@pytest.mark.slow  # everyday tier under 10 min: 14 s of a worker here
def test_the_runs_own_test_split_is_predicted_with_metrics_equal_to_metrics_json(digits_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, out, err = predict(digits_run, "--top-k", "3")
    assert code == 0, err
    metrics = read_metrics(digits_run)
    report = json.loads(next((digits_run / "predictions").glob("test.report.json")).read_text())
    assert report["metrics"]["loss"] == metrics["test/loss"] and report["metrics"]["acc"] == metrics["test/acc"]
    rows = read_csv(digits_run / "predictions" / "test.csv")
    assert len(rows) == report["metrics"]["samples"] == 359
    assert list(rows[0]) == ["id", "label", "probability", "label_2", "probability_2", "label_3", "probability_3",
                             "target"]
    assert sum(r["label"] == r["target"] for r in rows) / len(rows) == metrics["test/acc"]
    assert all(float(r["probability"]) >= float(r["probability_2"]) >= float(r["probability_3"]) for r in rows)
    table = report["per_class"]
    assert sum(c["support"] for c in table) == 359 and np.trace(np.array(report["confusion"])) == \
        round(metrics["test/acc"] * 359)
    assert (digits_run / "predictions" / "test.confusion.png").stat().st_size > 1000
    events = EventAccumulator(str(digits_run), size_guidance={"images": 0})
    events.Reload()
    assert "predict/confusion/test" in events.Tags()["images"]
    # again: a new file, the first one untouched
    before = (digits_run / "predictions" / "test.csv").read_bytes()
    assert predict(digits_run)[0] == 0
    assert (digits_run / "predictions" / "test-2.csv").is_file()
    assert (digits_run / "predictions" / "test.csv").read_bytes() == before


def test_mc_dropout_adds_each_inputs_predictive_entropy(digits_run, tmp_path):
    output = tmp_path / "mc.jsonl"
    code, out, err = predict(digits_run, "--mc-samples", "8", "--output", output)
    assert code == 0, err
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    entropies = [r["entropy"] for r in rows]
    assert len(rows) == 359 and all(0 <= e <= math.log(10) + 1e-6 for e in entropies)
    assert len(set(entropies)) > 300  # one per input, not a constant


def test_an_npy_is_read_a_batch_at_a_time_in_either_order_and_a_truncated_one_is_named(digits_run, tmp_path):
    from sklearn.datasets import load_digits

    x = (load_digits().images[:1100, None] / 16).astype(np.float32)  # three batches of 512, the last partial
    np.savez(tmp_path / "x.npz", x=x)
    np.save(tmp_path / "c.npy", x)
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    from trainrun.use.inputs import NpyRows

    reads, read_rows = [], NpyRows.__getitem__

    def counted(self, rows):  # every read of the .npy: a batch of at most 512 rows, never the whole file
        reads.append(rows.indices(len(self))[1] - rows.indices(len(self))[0])
        return read_rows(self, rows)
    NpyRows.__getitem__ = counted
    outputs = {}
    try:
        for name in ("x.npz", "c.npy", "f.npy"):
            code, _, err = predict(digits_run, tmp_path / name, "--output", tmp_path / f"{name}.csv")
            assert code == 0, err
            outputs[name] = read_csv(tmp_path / f"{name}.csv")
    finally:
        NpyRows.__getitem__ = read_rows
    assert reads == [512, 512, 76] * 2  # c.npy, then f.npy (through its memory map)
    assert len(outputs["c.npy"]) == 1100 and outputs["c.npy"] == outputs["x.npz"] == outputs["f.npy"]
    whole = (tmp_path / "c.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[:len(whole) - 1000])
    code, _, err = predict(digits_run, tmp_path / "cut.npy", "--output", tmp_path / "cut.csv")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'cut.npy'} is truncated: its header promises 1100 rows", err
    assert not (tmp_path / "cut.csv").exists()


def test_arrays_of_new_inputs_are_predicted_and_scored(digits_run, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "new.npz", x=(digits.images[:50, None] / 16).astype(np.float32), y=digits.target[:50])
    code, out, err = predict(digits_run, tmp_path / "new.npz", "--output", tmp_path / "new.parquet")
    assert code == 0, err
    table = pyarrow.parquet.read_table(tmp_path / "new.parquet").to_pydict()
    assert table["id"] == [str(i) for i in range(50)] and table["target"] == [str(t) for t in digits.target[:50]]
    assert "acc" in out and json.loads((tmp_path / "new.report.json").read_text())["metrics"]["samples"] == 50
    np.save(tmp_path / "wide.npy", np.zeros((4, 1, 8, 9), np.float32))
    code, _, err = predict(digits_run, tmp_path / "wide.npy")
    assert code == 2 and "each row of x has shape (1, 8, 9); this run was trained on (1, 8, 8)" in err
    x = (digits.images[:600, None] / 16).astype(np.float32)
    x[517, 0, 3, 4] = np.nan  # in the second batch read: named by its row in the file, nothing written
    np.save(tmp_path / "nan.npy", x)
    code, _, err = predict(digits_run, tmp_path / "nan.npy", "--output", tmp_path / "nan.csv")
    assert code == 2 and "nan.npy: x: row 517 holds NaN (at (0, 3, 4)); replace or drop such rows" in err
    assert not (tmp_path / "nan.csv").exists()
    np.save(tmp_path / "pixels.npy", digits.images[:10, None].astype(np.uint8))  # would be read as pixels / 255
    code, _, err = predict(digits_run, tmp_path / "pixels.npy")
    assert code == 2 and "pixels.npy: x is uint8; this run was trained on float32 inputs" in err


@pytest.mark.slow  # everyday tier under 10 min: 13 s of a worker here
def test_a_sweeps_best_run_by_its_objective_is_used(tmp_path):
    sweep = tmp_path / "sweep"
    result = cli("-m", "optimizer.lr=0.0001,0.01", "data.subset=300", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = {p.parent: read_metrics(p.parent)["val/loss"] for p in sweep.glob("*/metrics.json")}
    best = min(runs, key=runs.get)
    code, out, err = predict(sweep)
    assert code == 0, err
    assert f"run: {best}" in out and (best / "predictions" / "test.csv").is_file()


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """A table run: wine's features with a text column, class names as text."""
    from sklearn.datasets import load_wine

    tmp = tmp_path_factory.mktemp("table")
    wine = load_wine()
    frame = {name: wine.data[:, i] for i, name in enumerate(wine.feature_names)}
    frame["region"] = np.where(frame["alcohol"] > 13, "north", "south")
    frame["target"] = [str(wine.target_names[t]) for t in wine.target]
    frame = pyarrow.table(frame)
    pyarrow.csv.write_csv(frame, tmp / "wine.csv")
    run = train(tmp, "run", "data=table", f"data.path={tmp / 'wine.csv'}", "data.target=target", "trainer.epochs=20")
    return run, frame


def test_a_table_run_predicts_reordered_columns_without_the_target(table_run, tmp_path):
    run, frame = table_run
    record = json.loads((run / "preprocessing.json").read_text())
    columns = record["inputs"]["columns"]
    features = [c for c in frame.column_names if c != "target"]
    assert [c["name"] for c in columns] == features
    assert next(c for c in columns if c["name"] == "region")["categories"] == ["north", "south"]
    new = frame.select(list(reversed(features))).slice(0, 40)
    new = new.append_column("comment", pyarrow.array(["extra"] * 40))
    pyarrow.csv.write_csv(new, tmp_path / "new.csv")
    code, out, err = predict(run, tmp_path / "new.csv", "--output", tmp_path / "p.csv")
    assert code == 0, err
    assert "ignored columns (not features of this run): comment" in out
    rows = read_csv(tmp_path / "p.csv")
    assert len(rows) == 40 and {r["label"] for r in rows} <= {"class_0", "class_1", "class_2"}
    assert "target" not in rows[0] and not (tmp_path / "p.report.md").exists()  # nothing to score against
    # the same rows with their target, in the original column order: the same predictions, scored
    pyarrow.csv.write_csv(frame.slice(0, 40), tmp_path / "labelled.csv")
    code, out, err = predict(run, tmp_path / "labelled.csv", "--output", tmp_path / "q.csv")
    assert code == 0, err
    assert [r["label"] for r in read_csv(tmp_path / "q.csv")] == [r["label"] for r in rows]
    assert json.loads((tmp_path / "q.report.json").read_text())["metrics"]["acc"] > 0.7


def test_a_tables_missing_column_and_unseen_category_are_named(table_run, tmp_path):
    run, frame = table_run
    pyarrow.csv.write_csv(frame.drop_columns(["hue"]), tmp_path / "no_hue.csv")
    code, _, err = predict(run, tmp_path / "no_hue.csv")
    assert code == 2 and "no_hue.csv has no column hue, a feature of this run" in err
    odd = frame.slice(0, 10).to_pydict()
    odd["region"][3] = "west"
    pyarrow.csv.write_csv(pyarrow.table(odd), tmp_path / "odd.csv")
    code, _, err = predict(run, tmp_path / "odd.csv")
    assert code == 2 and "column region, row 3: the value 'west' was not seen in training" in err
    assert not any((run / "predictions").glob("odd*"))
    code, out, err = predict(run, tmp_path / "odd.csv", "--unseen=zeros", "--output", tmp_path / "odd.jsonl")
    assert code == 0 and "1 text values not seen in training, encoded as all zeros" in out
    odd = frame.slice(0, 10).to_pydict()
    odd["hue"][6] = float("inf")
    pyarrow.csv.write_csv(pyarrow.table(odd), tmp_path / "inf.csv")
    code, _, err = predict(run, tmp_path / "inf.csv")
    assert code == 2 and "inf.csv: row 6 holds infinity in column hue" in err


def test_table_categories_and_fills_come_from_the_train_rows_alone(tmp_path):
    from conftest import make_config
    from trainrun.data import load

    n = 200
    rng = np.random.default_rng(0)
    frame = {"id": np.arange(n, dtype=np.float64), "code": [f"c{i}" for i in range(n)],  # each value once
             "x": rng.normal(size=n), "y": rng.integers(0, 2, size=n)}
    frame["x"][::7] = np.nan
    pyarrow.csv.write_csv(pyarrow.table(frame), tmp_path / "t.csv")
    cfg = make_config(["data=table", f"data.path={tmp_path / 't.csv'}", "data.target=y", "data.normalize=none",
                       "data.missing=mean"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    columns = {c["name"]: c for c in data.fitted["inputs"]["columns"]}
    train_ids = data.train.x[:, 0].long().tolist()
    assert columns["code"]["categories"] == sorted(f"c{i}" for i in train_ids)  # no test row's value
    train_x = [frame["x"][i] for i in train_ids if not np.isnan(frame["x"][i])]
    assert columns["x"]["fill"] == pytest.approx(np.mean(train_x), abs=1e-12)
    test_codes = data.test.x[:, 1:1 + len(columns["code"]["categories"])]
    assert test_codes.sum() == 0  # every test row's code is unseen in training: all zeros


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A folder run on real MNIST PNGs of three digits, resized from 28x28 to 16x16."""
    if not MNIST_DIR.is_dir():
        pytest.skip("../shared/data/mnist is not here")
    import importlib.util

    spec = importlib.util.spec_from_file_location("mnist_png", ROOT / "scripts" / "mnist_png.py")
    mnist_png = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mnist_png)
    tmp = tmp_path_factory.mktemp("folder")
    pngs = tmp / "pngs"
    mnist_png.write_pngs(pngs, limit=600)
    photos = tmp / "photos"
    for digit in ("0", "1", "7"):
        shutil.copytree(pngs / digit, photos / digit)
    run = train(tmp, "run", "data=folder", f"data.root={photos}", "data.image_size=[16,16]", "model=cnn",
                "trainer.epochs=4")
    return run, pngs


def test_a_folder_run_predicts_a_flat_folder_of_new_images_by_name(folder_run, tmp_path):
    run, pngs = folder_run
    record = json.loads((run / "preprocessing.json").read_text())
    assert record["inputs"]["image_size"] == [16, 16] and record["class_names"] == ["0", "1", "7"]
    flat = tmp_path / "new"
    flat.mkdir()
    chosen = [sorted((pngs / d).glob("*.png"))[-1] for d in ("0", "1", "7")]
    for i, png in enumerate(chosen):
        shutil.copy(png, flat / f"photo_{i}.png")
    code, out, err = predict(run, flat, "--output", tmp_path / "p.csv")
    assert code == 0, err
    rows = read_csv(tmp_path / "p.csv")
    assert [r["id"] for r in rows] == ["photo_0.png", "photo_1.png", "photo_2.png"]
    assert [r["label"] for r in rows] == ["0", "1", "7"]
    # class sub-folders named as the run's classes: scored
    code, out, err = predict(run, pngs / "7", "--output", tmp_path / "sevens.csv")  # flat folder of sevens
    assert code == 0 and "target" not in read_csv(tmp_path / "sevens.csv")[0]
    scored = tmp_path / "scored"
    for d in ("0", "7"):
        shutil.copytree(pngs / d, scored / d)
    code, out, err = predict(run, scored, "--output", tmp_path / "s.csv")
    assert code == 0, err
    report = json.loads((tmp_path / "s.report.json").read_text())
    assert report["metrics"]["acc"] > 0.9 and [c["support"] > 0 for c in report["per_class"]] == [True, False, True]


def test_float_arrays_for_a_run_of_uint8_pixels_are_refused_not_read_as_scaled(folder_run, tmp_path):
    run, pngs = folder_run
    np.save(tmp_path / "f.npy", np.full((3, 1, 28, 28), 200.0))  # 0-255 as floats: 255x what the model saw
    code, _, err = predict(run, tmp_path / "f.npy", "--output", tmp_path / "f.csv")
    assert code == 2 and "f.npy: x is float64; this run was trained on uint8 pixels (0-255): give x as uint8" in err
    assert not (tmp_path / "f.csv").exists()


def test_a_file_that_is_not_an_image_is_named_or_skipped_and_counted(folder_run, tmp_path):
    run, pngs = folder_run
    flat = tmp_path / "new"
    flat.mkdir()
    shutil.copy(sorted((pngs / "1").glob("*.png"))[0], flat / "a.png")
    (flat / "broken.png").write_bytes(b"not an image")
    code, _, err = predict(run, flat, "--output", tmp_path / "p.csv")
    assert code == 2 and "broken.png is not a readable image (Unsupported image file)" in err
    assert not (tmp_path / "p.csv").exists()
    (flat / "broken.png").unlink()
    (flat / "cut.png").write_bytes((flat / "a.png").read_bytes()[:100])  # a PNG cut short, as a failed copy leaves it
    code, _, err = predict(run, flat, "--output", tmp_path / "p.csv")
    # torchvision's words, not the C++ file and line it prefixes them with
    assert code == 2 and "cut.png is not a readable image (Out of bound read in decode_png)" in err
    assert ".cpp" not in err and len(err.strip().splitlines()) == 1
    code, out, err = predict(run, flat, "--output", tmp_path / "p.csv", "--on-bad-file=skip")
    assert code == 0 and "skipped 1 unreadable files" in out
    assert [r["id"] for r in read_csv(tmp_path / "p.csv")] == ["a.png"]


@pytest.mark.parametrize("args,message", [
    (["{tmp}/nowhere"], "no such directory"),
    (["{tmp}"], "is not a trainrun run (no .hydra/config.yaml)"),
    (["{run}", "--top-k", "0"], "--top-k=0: between 1 and the run's 10 classes"),
    (["{run}", "--top-k", "11"], "--top-k=11: between 1 and the run's 10 classes"),
    (["{run}", "--output", "{run}/metrics.json"], "exists; nothing is overwritten"),
    (["{run}", "--output", "{tmp}/p.txt"], "the extension says the format"),
    (["{run}", "{tmp}/empty"], "no images"),
    (["{run}", "data.test_fractio=0.5"], "unknown key 'data.test_fractio'"),
    (["{run}", "data.test_fraction=1.5"], "data.test_fraction=1.5"),
    (["{run}", "optimizer.lr=0.5"], "only data.* may be given here"),
    (["{run}", "--top-k", "x"], "argument --top-k: invalid int value: 'x'"),
    (["{run}", "--mc-samples", "1"], "--mc-samples=1: 0 (off) or at least 2 passes"),
    ([], "the following arguments are required: run\n"),  # the input is optional: the run's own test split
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(digits_run, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    before = sorted(p.name for p in digits_run.rglob("*"))
    code, out, err = predict(*(a.format(tmp=tmp_path, run=digits_run) for a in args))
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert sorted(p.name for p in digits_run.rglob("*")) == before


def test_a_run_without_dropout_refuses_mc_samples_and_an_old_run_is_refused(tmp_path):
    run = train(tmp_path, "run", "data.subset=200")
    code, _, err = predict(run, "--mc-samples", "5")
    assert code == 2 and "--mc-samples needs dropout in the model" in err
    config = run / ".hydra" / "config.yaml"  # saved before a knob existed: the knob takes its default
    config.write_text("\n".join(line for line in config.read_text().splitlines() if "small_input" not in line))
    code, _, err = predict(run, "--output", tmp_path / "older.csv")
    assert code == 0, err
    (run / "preprocessing.json").unlink()  # as a run saved before predict existed
    code, _, err = predict(run)
    assert code == 2 and "has no preprocessing.json" in err
    (run / "best.pt").unlink()  # as a run killed in its first epoch
    code, _, err = predict(run)
    assert code == 2 and "has no best.pt" in err


def test_a_sweep_with_no_finished_run_is_refused(tmp_path):
    sweep = tmp_path / "sweep"  # as a sweep leaves it when each run failed
    (sweep / "0_lr-1" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("trainer:\n  early_stopping:\n    monitor: val/loss\n")
    (sweep / "0_lr-1" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=1\n")
    (sweep / "0_lr-1" / "error.json").write_text(json.dumps({"error": "diverged"}))
    code, _, err = predict(sweep)
    assert code == 2 and "no run of this sweep finished" in err


def test_the_installed_command_says_a_bad_input_in_one_line(digits_run, tmp_path):
    script = Path(sys.executable).parent / "trainrun-predict"
    result = subprocess.run([str(script), str(digits_run), str(tmp_path / "missing.csv")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: input={tmp_path / 'missing.csv'}: no such file or folder"


# ---------------------------------------------------------------------------------------------
# Export

USER_MODELS = textwrap.dedent('''
    import math
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self, input_shape, num_outputs):
            super().__init__()
            self.head = nn.Linear(math.prod(input_shape), num_outputs)

        def forward(self, x):
            return self.head(x.flatten(1))


    class Branchy(Tiny):
        """Data-dependent control flow: no exporter can trace it."""

        def forward(self, x):
            if x.sum() > 0:
                return self.head(x.flatten(1))
            return -self.head(x.flatten(1))
''')


def exported(run: Path, tmp_path: Path, formats: str = "onnx,pt2") -> tuple[Path, str]:
    code, out, err = export(run, "--format", formats, "--output", tmp_path / "export")
    assert code == 0, err
    return tmp_path / "export", out


def test_an_mlp_exports_to_onnx_and_pt2_each_verified(digits_run, tmp_path):
    import onnxruntime

    folder, out = exported(digits_run, tmp_path)
    for f in ("onnx", "pt2"):
        line = next(line for line in out.splitlines() if line.startswith(str(folder / f"model.{f}")))
        assert "verified on 64 inputs of the run's test split" in line
        assert float(line.rsplit(" ", 1)[1]) <= 1e-4
    described = json.loads((folder / "model.json").read_text())
    assert described["input"] == {"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}
    # the graph holds the normalization: raw inputs in, the same logits as the run's own model on normalized ones
    from trainrun.use.trained import open_run

    run = open_run(str(digits_run))
    x = torch.rand(5, 1, 8, 8)  # a batch size it was not traced with
    with torch.no_grad():
        eager = run.model(run.normalize(x))
    onnx = onnxruntime.InferenceSession(str(folder / "model.onnx")).run(None, {"x": x.numpy()})[0]
    assert np.abs(onnx - eager.numpy()).max() < 1e-4
    program = torch.export.load(str(folder / "model.pt2")).module()
    assert (program(x) - eager).abs().max() < 1e-4


def test_a_cnn_on_uint8_pixels_exports_with_the_pixel_scaling_inside(folder_run, tmp_path):
    """The exported graph, given raw PNG pixels decoded apart from trainrun (PIL, resized as training resized),
    gives trainrun-predict's probabilities: dropping the /255 or the normalization from the graph fails here."""
    import onnxruntime
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    run, pngs = folder_run
    folder, out = exported(run, tmp_path)
    assert json.loads((folder / "model.json").read_text())["input"]["dtype"] == "uint8"
    assert out.count("verified on") == 2
    new = tmp_path / "new"
    new.mkdir()
    for digit in ("0", "1", "7"):
        for png in sorted((pngs / digit).glob("*.png"))[-4:]:
            shutil.copy(png, new / f"{digit}_{png.name}")
    code, _, err = predict(run, new, "--output", tmp_path / "p.csv")
    assert code == 0, err
    rows = read_csv(tmp_path / "p.csv")
    assert sum(r["label"] == r["id"][0] for r in rows) >= 10  # the digits the files are: scaled as in training
    pixels = torch.stack([F.resize(torch.from_numpy(np.array(Image.open(new / r["id"])))[None], [16, 16],
                                   antialias=True) for r in rows])  # uint8, (N, 1, 16, 16)
    logits = onnxruntime.InferenceSession(str(folder / "model.onnx")).run(None, {"x": pixels.numpy()})[0]
    probabilities = torch.softmax(torch.from_numpy(logits), 1)
    names = json.loads((folder / "model.json").read_text())["class_names"]
    assert [names[i] for i in probabilities.argmax(1)] == [r["label"] for r in rows]
    assert np.allclose(probabilities.max(1).values.numpy(), [float(r["probability"]) for r in rows], atol=1e-4)


@pytest.mark.slow  # everyday tier under 10 min: 20 s of a worker here
def test_a_custom_model_exports_and_one_that_cannot_is_named(tmp_path):
    (tmp_path / "user_models.py").write_text(USER_MODELS)
    tiny = train(tmp_path, "tiny", "model=custom", "model._target_=user_models.Tiny", "data.subset=200")
    sys.path.insert(0, str(tmp_path))
    try:
        folder, out = exported(tiny, tmp_path, "pt2")
        assert "verified on" in out and (folder / "model.pt2").is_file()
        branchy = train(tmp_path, "branchy", "model=custom", "model._target_=user_models.Branchy", "data.subset=200")
        for f in ("pt2", "onnx"):  # one clean line from each exporter: no colour codes, no links, the cause named
            code, out, err = export(branchy, "--format", f, "--output", tmp_path / "never")
            assert code == 2 and f"--format={f}: Branchy cannot be exported: its control flow depends on the input's " \
                                 "values (data-dependent" in err and len(err.strip().splitlines()) == 1, err
            assert "\x1b" not in err and "http" not in err and "torch.where or torch.cond" in err
            assert not (tmp_path / "never").exists()
    finally:
        sys.path.remove(str(tmp_path))


def test_an_export_format_that_is_not_installed_names_the_extra(digits_run, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    code, _, err = export(digits_run, "--format", "onnx", "--output", tmp_path / "e")
    assert code == 2 and "--format=onnx needs onnxruntime: pip install 'trainrun[export]'" in err
    assert not (tmp_path / "e").exists()
    code, _, err = export(digits_run, "--format", "torchscript")
    assert code == 2 and "--format=torchscript: choose from onnx, pt2" in err


@pytest.mark.slow  # everyday tier under 10 min: 30 s of a worker here
def test_a_transfer_run_normalizes_with_the_pretrained_runs_statistics_unless_told(tmp_path):
    source = train(tmp_path, "source", "data.classes=[0,1,2,3,4]")
    args = ["data.classes=[5,6,7,8,9]", f"model.weights={source}"]
    target = cli(*TINY, *args, f"hydra.run.dir={tmp_path / 'target'}", cwd=tmp_path)
    assert target.returncode == 0, target.stderr[-2000:]
    header = "".join(target.stdout.replace("│", "").split())  # the panel wraps long paths anywhere
    assert "".join(f"standardize with the statistics of {source}".split()) in header
    saved = {name: json.loads((tmp_path / name / "preprocessing.json").read_text())["normalize"]
             for name in ("source", "target")}
    assert saved["target"]["mean"] == saved["source"]["mean"] and saved["target"]["source"] == str(source)
    own = cli(*TINY, *args, "data.normalize=standardize", f"hydra.run.dir={tmp_path / 'own'}", cwd=tmp_path)
    assert own.returncode == 0 and "this run's train-split statistics" in own.stdout
    assert json.loads((tmp_path / "own" / "preprocessing.json").read_text())["normalize"]["mean"] != \
        saved["source"]["mean"]  # the digits 5-9 have more ink than 0-4
    shutil.rmtree(source)  # a trained run needs only itself, not the run it started from
    code, out, err = predict(tmp_path / "target", "--output", tmp_path / "p.csv")
    assert code == 0, err
    assert json.loads((tmp_path / "p.report.json").read_text())["metrics"]["acc"] == \
        read_metrics(tmp_path / "target")["test/acc"]


@pytest.mark.slow  # everyday tier under 10 min: 12 s of a worker here
def test_a_regression_run_predicts_values_and_scores_them(tmp_path):
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    np.savez(tmp_path / "diabetes.npz", x=x[:400].astype(np.float32), y=y[:400].astype(np.float32))
    np.savez(tmp_path / "new.npz", x=x[400:].astype(np.float32), y=y[400:].astype(np.float32))
    run = train(tmp_path, "run", "data=arrays", f"data.path={tmp_path / 'diabetes.npz'}", "trainer.epochs=30",
                "optimizer.lr=0.01")
    code, out, err = predict(run, tmp_path / "new.npz", "--output", tmp_path / "p.csv")
    assert code == 0, err
    rows = read_csv(tmp_path / "p.csv")
    assert list(rows[0]) == ["id", "value", "target"] and len(rows) == len(x) - 400
    mae = json.loads((tmp_path / "p.report.json").read_text())["metrics"]["mae"]
    assert mae == pytest.approx(np.mean([abs(float(r["value"]) - float(r["target"])) for r in rows]), rel=1e-5)
    assert mae < np.mean(np.abs(y[400:] - y[:400].mean()))  # better than predicting the mean
    code, _, err = predict(run, "--top-k", "2", tmp_path / "new.npz")
    assert code == 0, err  # top-k is a classification flag; a regression run has no labels to rank


def test_a_custom_data_function_is_given_new_arguments(tmp_path):
    (tmp_path / "my_data.py").write_text(textwrap.dedent('''
        import torch

        def blobs(n=600, seed=0):
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(3, (n,), generator=g)
            return torch.randn(n, 5, generator=g) + 3 * y[:, None].float(), y
    '''))
    run = train(tmp_path, "run", "data=custom", "data._target_=my_data.blobs")
    sys.path.insert(0, str(tmp_path))
    try:
        code, out, err = predict(run, "data.params.n=1000", "--output", tmp_path / "p.csv")
    finally:
        sys.path.remove(str(tmp_path))
    assert code == 0, err
    assert len(read_csv(tmp_path / "p.csv")) == 200  # data.test_fraction=0.2 of the 1000 it now makes
    assert json.loads((tmp_path / "p.report.json").read_text())["metrics"]["acc"] > 0.9


@pytest.mark.parametrize("model_seconds, threaded", [(0.0, False), (0.009, False), (0.011, True), (0.05, True)])
def test_batches_are_read_on_a_thread_only_where_the_model_is_slower_than_the_reading(model_seconds, threaded,
                                                                                      monkeypatch):
    """On a clock the test advances (a loaded 2-core machine made real sleeps of 10-50 ms unreliable): reading a
    batch takes 10 ms, the model `model_seconds`; the first batch, read in this thread, decides."""
    import threading
    import types

    from trainrun.use import predict as module

    now = [0.0]
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    readers = []

    def batches():
        for i in range(5):
            now[0] += 0.01  # the reading of a batch
            readers.append(threading.current_thread().name)
            yield i
    seen = []
    for batch in module.read_ahead(batches()):
        now[0] += model_seconds  # the model on it
        seen.append(batch)
    assert seen == [0, 1, 2, 3, 4]
    assert readers[0] == threading.current_thread().name  # the first, read here, times the two
    assert all(name.startswith("read-ahead") for name in readers[1:]) == threaded
    assert any(name.startswith("read-ahead") for name in readers[1:]) == threaded
