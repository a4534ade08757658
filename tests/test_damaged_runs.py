"""A trained run used as users really have it: run files damaged on disk, inputs as they come, weights from the
wrong place. Every case is one or two lines and exit 2 with no traceback, or it works and says what it did:
nothing overwritten, nothing dropped without a word."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY as TINY_DIGITS, cli, make_config
from test_predict import digits_run, folder_run, predict, read_csv, table_run, train  # noqa: F401  (fixtures)
from trainrun.errors import ConfigError

pyarrow = pytest.importorskip("pyarrow")


def copy_of(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def one_line(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    return err


def not_json(path: Path) -> None:
    path.write_text("{not json" if path.suffix == ".json" else "a: [unclosed")


def empty_object(path: Path) -> None:
    if path.suffix == ".pt":
        torch.save({}, path)
    else:
        path.write_text("{}")


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def missing(path: Path) -> None:
    path.unlink()


DAMAGES = {"not JSON": not_json, "empty object": empty_object, "cut": cut, "missing": missing}
# what predict and export say of each file damaged each way
SAID = {
    ("preprocessing.json", "not JSON"): "preprocessing.json is damaged (not JSON",
    ("preprocessing.json", "empty object"): "preprocessing.json is damaged (it has no task, num_outputs",
    ("preprocessing.json", "cut"): "preprocessing.json is damaged (not JSON",
    ("preprocessing.json", "missing"): "has no preprocessing.json",
    (".hydra/config.yaml", "not JSON"): "config.yaml is not a config this trainrun reads",
    (".hydra/config.yaml", "empty object"): "config.yaml is damaged (it has no data, model, trainer)",
    (".hydra/config.yaml", "cut"): "config.yaml is",
    (".hydra/config.yaml", "missing"): "is not a trainrun run (no .hydra/config.yaml)",
    ("best.pt", "not JSON"): "best.pt is unreadable (truncated or corrupt: not a PyTorch file)",
    ("best.pt", "empty object"): "best.pt is damaged (not a trainrun checkpoint: no model weights)",
    ("best.pt", "cut"): "best.pt is unreadable (truncated or corrupt: PytorchStreamReader",
    ("best.pt", "missing"): "has no best.pt (deleted?); its last.pt is there: add --checkpoint last",
    ("metrics.json", "not JSON"): "metrics.json is damaged (not JSON",
    ("metrics.json", "empty object"): None,  # a run's metrics are read only to say whether it finished
    ("metrics.json", "cut"): "metrics.json is damaged (not JSON",
    ("metrics.json", "missing"): None,  # a killed run: used, and said (below)
}


def command(surface: str, run: Path, tmp_path: Path) -> tuple[int, str, str]:
    from test_predict import export

    if surface == "predict":
        return predict(run, "--output", tmp_path / "p.csv")
    return export(run, "--format", "pt2", "--output", tmp_path / "export")


@pytest.mark.parametrize("surface", ["predict", "export"])
@pytest.mark.parametrize("file,damage", list(SAID))
def test_a_damaged_run_file_is_named_in_one_line(digits_run, tmp_path, surface, file, damage):
    run = copy_of(digits_run, tmp_path)
    DAMAGES[damage](run / file)
    code, out, err = command(surface, run, tmp_path)
    if SAID[(file, damage)] is None:
        assert code == 0, err
        return
    assert SAID[(file, damage)] in one_line(code, err)
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "export").exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=st.sampled_from(["preprocessing.json", ".hydra/config.yaml", "best.pt", "metrics.json"]),
       content=st.binary(max_size=300), surface=st.sampled_from(["predict", "export", "weights"]))
def test_any_bytes_in_a_run_file_are_refused_in_one_line_or_read(digits_run, tmp_path_factory, file, content, surface):
    """Whatever a run file holds instead of what the run wrote, each command names it in one line or works."""
    tmp = tmp_path_factory.mktemp("drawn")
    run = copy_of(digits_run, tmp)
    (run / file).write_bytes(content)
    if surface == "weights":
        try:
            weights_into_default_mlp(run)
        except ConfigError as e:
            assert "\n" not in str(e) and (Path(file).name in str(e) or "model.weights" in str(e)), e
        return
    code, out, err = command(surface, run, tmp)
    if code != 0:
        assert Path(file).name in one_line(code, err)


def weights_into_default_mlp(weights) -> set[str]:
    from trainrun.data import load
    from trainrun.options.model import build_model

    cfg = make_config([f"model.weights={weights}"])
    _, reused = build_model(cfg, load(cfg.data, 0, torch.device("cpu"), prenormalize=True))
    return reused


@pytest.mark.parametrize("file,damage,said", [
    ("preprocessing.json", "not JSON", "preprocessing.json is damaged (not JSON"),
    ("preprocessing.json", "empty object", "preprocessing.json is damaged (it has no task"),
    ("preprocessing.json", "cut", "preprocessing.json is damaged (not JSON"),
    ("best.pt", "not JSON", "best.pt is unreadable (truncated or corrupt: not a PyTorch file)"),
    ("best.pt", "empty object", "best.pt holds no tensor, not weights"),
    ("best.pt", "cut", "best.pt is unreadable (truncated or corrupt"),
])
def test_a_damaged_run_given_as_model_weights_is_named(digits_run, tmp_path, file, damage, said):
    run = copy_of(digits_run, tmp_path)
    DAMAGES[damage](run / file)
    with pytest.raises(ConfigError) as refused:
        weights_into_default_mlp(run)
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_model_weights_from_a_run_whose_best_pt_is_gone_uses_its_last_pt(digits_run, tmp_path):
    run = copy_of(digits_run, tmp_path)
    (run / "best.pt").unlink()
    assert len(weights_into_default_mlp(run)) == 6


def test_a_run_killed_before_the_end_is_used_and_said(digits_run, tmp_path):
    run = copy_of(digits_run, tmp_path)
    (run / "metrics.json").unlink()  # killed: no metrics.json, its best.pt of the best epoch so far
    epoch = torch.load(run / "best.pt", weights_only=True)["epoch"]
    code, out, err = predict(run, "--output", tmp_path / "p.csv")
    assert code == 0, err
    assert f"note: the run did not finish (no metrics.json: killed, or still training); its best.pt from epoch {epoch} " \
           "is used" in out
    code, out, err = predict(copy_of(digits_run, tmp_path, "whole"), "--checkpoint", "last", "--output", tmp_path / "q.csv")
    assert code == 0 and "note: weights: last.pt, epoch 2" in out, err


def test_a_sweep_with_a_damaged_metrics_json_refuses_to_choose_its_best(digits_run, tmp_path):
    sweep = tmp_path / "sweep"
    for name in ("0_lr-0.1", "1_lr-0.01"):
        copy_of(digits_run, sweep, name)
        (sweep / name / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={name.split('-')[1]}\n")
    (sweep / "multirun.yaml").write_text("trainer:\n  early_stopping:\n    monitor: val/loss\n")
    code, out, err = predict(sweep, "--output", tmp_path / "p.csv")
    assert code == 0 and "run: " + str(sweep / "0_lr-0.1") in out, err
    cut(sweep / "1_lr-0.01" / "metrics.json")
    err = one_line(*predict(sweep, "--output", tmp_path / "q.csv")[::2])
    assert "1 of 2 runs cannot be ranked, so the best run is unknown" in err and "1_lr-0.01/metrics.json is damaged" in err


@pytest.mark.parametrize("companion", ["p.csv", "p.report.md", "p.report.json", "p.confusion.png"])
def test_no_file_predict_would_write_is_overwritten(digits_run, tmp_path, companion):
    (tmp_path / companion).write_text("the user's own")
    err = one_line(*predict(digits_run, "--output", tmp_path / "p.csv")[::2])
    assert f"{tmp_path / companion} exists; nothing is overwritten" in err
    assert (tmp_path / companion).read_text() == "the user's own"
    assert sorted(p.name for p in tmp_path.iterdir()) == [companion]


def test_the_default_output_takes_a_name_none_of_whose_files_exists(digits_run, tmp_path):
    run = copy_of(digits_run, tmp_path)
    (run / "predictions").mkdir()
    (run / "predictions" / "test.confusion.png").write_text("an earlier evaluation's")
    code, out, err = predict(run)
    assert code == 0 and f"predictions: {run / 'predictions' / 'test-2.csv'}" in out.replace(" predictions:", "predictions:"), out
    assert (run / "predictions" / "test.confusion.png").read_text() == "an earlier evaluation's"


def test_a_folder_says_what_it_left_out_and_why(folder_run, tmp_path):
    run, pngs = folder_run
    new = tmp_path / "new"
    for digit in ("0", "7"):
        (new / digit).mkdir(parents=True)
        shutil.copy(sorted((pngs / digit).glob("*.png"))[-1], new / digit / "a.png")
    shutil.copy(sorted((pngs / "1").glob("*.png"))[-1], new / "stray.png")
    (new / "notes.txt").write_text("where these came from")
    code, out, err = predict(run, new, "--output", tmp_path / "p.csv")
    assert code == 0, err
    assert f"note: left out 1 images at the top of {new} (stray.png): its class sub-folders label the images" in out
    assert f"note: left out 1 files of {new} that are not images by their suffix" in out
    assert [r["id"] for r in read_csv(tmp_path / "p.csv")] == ["0/a.png", "7/a.png"]


def test_a_damaged_png_is_named_with_libpngs_words_and_nothing_leaks(folder_run, tmp_path, capfd):
    run, pngs = folder_run
    new = tmp_path / "new"
    new.mkdir()
    good = sorted((pngs / "0").glob("*.png"))[-1]
    shutil.copy(good, new / "a.png")
    raw = bytearray(good.read_bytes())
    raw[16] ^= 0xFF  # inside IHDR: its CRC no longer matches
    (new / "b.png").write_bytes(bytes(raw))
    err = one_line(*predict(run, new, "--output", tmp_path / "p.csv")[::2])
    assert f"{new / 'b.png'} is not a readable image (IHDR: CRC error)" in err
    code, out, err = predict(run, new, "--on-bad-file", "skip", "--output", tmp_path / "q.csv")
    assert code == 0 and "skipped 1 unreadable files" in out, err
    assert "libpng" not in capfd.readouterr().err


@pytest.mark.parametrize("rule,expected", [
    ("error", "new.csv: row 3 has no value in column alcohol, and this run refuses missing values (data.missing=error)"),
    ("drop", "note: left out 2 rows with missing values (data.missing=drop): rows 3, 7"),
    ("mean", "note: filled 2 missing cells with the training values (data.missing=mean), in rows 3, 7"),
])
def test_missing_table_cells_follow_the_runs_own_rule(table_run, tmp_path, rule, expected):
    import pyarrow.csv

    trained, frame = table_run
    run = copy_of(trained, tmp_path)
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("missing: error", f"missing: {rule}"))
    rows = frame.slice(0, 10).to_pydict()
    rows["alcohol"][3] = float("nan")  # NaN in one row, an empty cell in another
    rows["malic_acid"][7] = None
    pyarrow.csv.write_csv(pyarrow.table(rows), tmp_path / "new.csv")
    code, out, err = predict(run, tmp_path / "new.csv", "--output", tmp_path / "p.csv")
    if rule == "error":
        assert expected in one_line(code, err)
        return
    assert code == 0 and expected in out, err
    ids = [r["id"] for r in read_csv(tmp_path / "p.csv")]
    assert ids == ([str(i) for i in range(10) if i not in (3, 7)] if rule == "drop" else [str(i) for i in range(10)])


def test_inputs_as_users_name_and_hold_them(digits_run, tmp_path):
    x = torch.rand(7, 1, 8, 8)
    torch.save(x, tmp_path / "plain.pt")  # a tensor alone: the inputs
    code, out, err = predict(digits_run, tmp_path / "plain.pt", "--output", tmp_path / "p.csv")
    assert code == 0 and len(read_csv(tmp_path / "p.csv")) == 7, err
    np.save(tmp_path / "batch=2.npy", x.numpy())  # a path that exists is a path, not a data.* override
    code, out, err = predict(digits_run, tmp_path / "batch=2.npy", "--output", tmp_path / "q.csv")
    assert code == 0 and len(read_csv(tmp_path / "q.csv")) == 7, err
    torch.save([1, 2], tmp_path / "list.pt")
    assert "list.pt holds a list; give a tensor of inputs, or a dict with x" in one_line(
        *predict(digits_run, tmp_path / "list.pt")[::2])


def test_model_json_says_how_the_digits_inputs_are_scaled(digits_run, tmp_path):
    from test_predict import export

    code, out, err = export(digits_run, "--format", "pt2", "--output", tmp_path / "e")
    assert code == 0, err
    described = json.loads((tmp_path / "e" / "model.json").read_text())
    assert described["inside_the_graph"][0] == "float32 inputs, 8x8 pixel values 0-16 divided by 16: float32 in [0, 1], " \
                                               "0 the background"


@pytest.mark.parametrize("tensor", ["fc1.linear.weight", "fc2.linear.bias", "head.weight"])
def test_weights_that_fit_except_one_tensor_load_only_when_it_is_the_head(digits_run, tmp_path, tensor, caplog):
    state = torch.load(digits_run / "best.pt", weights_only=True)["model"]
    state[tensor] = torch.zeros(3, *state[tensor].shape[1:])
    if tensor == "head.weight":
        state["head.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pt")
    if tensor != "head.weight":
        with pytest.raises(ConfigError, match=rf"model.weights: {tensor} is \(3,.*\) there and .* here \(another width\?\); "
                                              r"only the output layer may differ"):
            weights_into_default_mlp(tmp_path / "w.pt")
        return
    reused = weights_into_default_mlp(tmp_path / "w.pt")
    assert reused == set(state) - {"head.weight", "head.bias"}
    assert "the output layer head has another size here; it is replaced" in caplog.text


def test_model_weights_names_what_a_directory_lacks_and_takes_a_sweep(digits_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="this directory holds no run"):
        weights_into_default_mlp(tmp_path / "empty")
    killed = tmp_path / "killed"
    (killed / ".hydra").mkdir(parents=True)
    shutil.copy(digits_run / ".hydra" / "config.yaml", killed / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError, match=r"this run has no best.pt or last.pt yet \(stopped before its first epoch"):
        weights_into_default_mlp(killed)
    sweep = tmp_path / "sweep"
    copy_of(digits_run, sweep, "0_lr-0.1")
    (sweep / "0_lr-0.1" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.1\n")
    (sweep / "multirun.yaml").write_text("trainer:\n  early_stopping:\n    monitor: val/loss\n")
    assert len(weights_into_default_mlp(sweep)) == 6  # its best run's best.pt


def test_the_head_follows_the_classes_even_when_their_count_matches(tmp_path):
    first, second, same = tmp_path / "first", tmp_path / "second", tmp_path / "same"
    result = cli(*TINY_DIGITS, "data.classes=[0,1,2,3,4]", f"hydra.run.dir={first}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((first / "preprocessing.json").read_text())["class_names"] == ["0", "1", "2", "3", "4"]
    result = cli(*TINY_DIGITS, "data.classes=[5,6,7,8,9]", "trainer.epochs=1", f"model.weights={first}",
                 f"hydra.run.dir={second}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    said = " ".join(result.stdout.split())
    assert "the output layer head was trained on the classes 0, 1, 2, 3, 4, this run's are 5, 6, 7, 8, 9; it is " \
           "replaced" in said
    result = cli(*TINY_DIGITS, "data.classes=[0,1,2,3,4]", "trainer.epochs=1", f"model.weights={first}",
                 f"hydra.run.dir={same}", cwd=tmp_path)
    assert result.returncode == 0 and "it is replaced" not in result.stdout, result.stdout
