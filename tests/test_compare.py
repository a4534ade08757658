"""trainrun-compare: the config keys that differ between runs (exactly those), how each ended, and one figure of
the chosen metric's curves read from the event files."""
from __future__ import annotations

import pytest

from conftest import TINY, cli


def compare(*args) -> tuple[int, str, str]:
    from test_predict import command
    from trainrun.sweeps.compare import main

    return command(main, *args)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    for name, extra in (("a", ["optimizer.lr=0.01"]), ("b", ["optimizer.lr=0.001", "trainer.seed=3"])):
        result = cli(*TINY, "logger.enabled=true", *extra, f"hydra.run.dir={base / name}", cwd=base)
        assert result.returncode == 0, result.stderr[-2000:]
    return base


def test_the_keys_that_differ_are_exactly_those_given_differently(two_runs):
    from trainrun.sweeps.compare import differing, flat_config

    configs = [flat_config(two_runs / name) for name in ("a", "b")]
    assert differing(configs) == ["optimizer.lr", "trainer.seed"]


def test_compare_prints_the_differences_and_ends_and_draws_the_curves(two_runs, tmp_path):
    import matplotlib.image

    code, out, err = compare(two_runs / "a", two_runs / "b", "--output", tmp_path / "c.png")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.split()[:3] == ["optimizer.lr", "0.01", "0.001"] for line in lines), out
    assert any(line.split()[:3] == ["trainer.seed", "0", "3"] for line in lines), out
    assert not any(line.split()[:1] == ["model.kind"] for line in lines)  # the same in both: not listed
    assert any(line.split()[:1] == ["val/loss"] for line in lines) and "completed" in out
    assert f"curves: {tmp_path / 'c.png'} (val/loss of 2 of 2 runs)" in out
    height, width, _ = matplotlib.image.imread(tmp_path / "c.png").shape
    assert height > 200 and width > 400
    code, out, err = compare(two_runs / "a", two_runs / "b", "--metric", "train/acc", "--output", tmp_path / "d.png")
    assert code == 0 and "(train/acc of 2 of 2 runs)" in out, err


@pytest.mark.parametrize("case,said", [
    ("empty", "holds no run (no .hydra/config.yaml in it or in its sub-directories)"),
    ("missing", "no such directory"),
    ("one", "is one run: give two runs or more"),
    ("existing output", "exists; nothing is overwritten"),
    ("unlogged metric", "--metric=val/nope: no run logged it; they logged "),
])
def test_bad_input_is_one_line(two_runs, tmp_path, case, said):
    (tmp_path / "empty").mkdir()
    (tmp_path / "c.png").write_text("the user's own")
    args = {"empty": [tmp_path / "empty", two_runs / "a"], "missing": [tmp_path / "nowhere", two_runs / "a"],
            "one": [two_runs / "a"], "existing output": [two_runs / "a", two_runs / "b", "--output", tmp_path / "c.png"],
            "unlogged metric": [two_runs / "a", two_runs / "b", "--metric", "val/nope", "--output", tmp_path / "n.png"]}
    code, out, err = compare(*args[case])
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "c.png").read_text() == "the user's own" and not (tmp_path / "n.png").exists()
