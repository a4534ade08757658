"""check.py is the one home of every refusal: drawn from the schema and the option records, an invalid value
of any key is refused by `check` with a line that names that key; the run and both sweepers call it, so a
sweep that would fail is refused before its directory exists."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY, cli, make_config
from trainrun.check import check
from trainrun.config import declared_fields, leaf_types, schema_at
from trainrun.errors import ConfigError
from trainrun.registry import AUGMENTATIONS, REGISTRIES

GROUPS = ["data", "model", "activation", "init", "norm", "optimizer", "scheduler", "loss"]
FIELDS = {".".join(path): (f, hint) for path, f, hint in declared_fields()}
AUGMENT_FIELDS = {path[0]: (f, hint) for path, f, hint in declared_fields(schema_at(["augmentation", "any"]))}


def show(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return str(value)


def bounded(rng) -> bool:
    return rng is not None and any(b is not None for b in (rng.ge, rng.gt, rng.le, rng.lt))


@st.composite
def outside(draw, rng, integer: bool):
    """A number outside `rng`: below its lower bound or above its upper one (an open bound itself too), or
    not finite."""
    ways = []
    if rng.ge is not None or rng.gt is not None:
        low = rng.ge if rng.ge is not None else rng.gt
        ways += [low - draw(st.integers(1, 10))] + ([rng.gt] if rng.gt is not None else [])
    if rng.le is not None or rng.lt is not None:
        high = rng.le if rng.le is not None else rng.lt
        ways += [high + draw(st.integers(1, 10))] + ([rng.lt] if rng.lt is not None else [])
    if not integer:
        ways += [math.nan, math.inf]
    value = draw(st.sampled_from(ways))
    return int(value) if integer and math.isfinite(value) and float(value).is_integer() else value


@st.composite
def invalid_value(draw, f, hint):
    """A value the declared range refuses."""
    rng = f.metadata["range"]
    integer = int in leaf_types(hint)
    if rng.length:  # a list of fixed length: too short or too long, or one element outside
        if draw(st.booleans()) or not bounded(rng):
            return [1] * draw(st.sampled_from([rng.length - 1, rng.length + 1]))
        inside = rng.ge if rng.ge is not None else rng.le if rng.le is not None else 0.5
        values = [inside] * rng.length
        values[draw(st.integers(0, rng.length - 1))] = draw(outside(rng, integer))
        return values
    if list in {getattr(t, "__origin__", t) for t in leaf_types(hint)} and bounded(rng):
        return [draw(outside(rng, integer))]
    if bounded(rng):
        return draw(outside(rng, integer))
    return "bogus_" + draw(st.sampled_from("xyz"))  # a choice that is not one


def option_taking(group: str, knob: str) -> str | None:
    takers = [kind for kind, record in REGISTRIES[group].items() if knob in record.knobs]
    return takers[0] if takers else None


@st.composite
def one_invalid_key(draw):
    """(overrides, the key that must be named): one drawn key of the schema (a group's setting, or a knob with
    an option that takes it, or an augmentation's knob) given a value outside its range."""
    where = draw(st.sampled_from(["schema", "augmentation"]))
    if where == "augmentation":
        name = draw(st.sampled_from(sorted(AUGMENTATIONS)))
        knobs = AUGMENTATIONS[name].knobs
        knob = draw(st.sampled_from(knobs))
        f, hint = AUGMENT_FIELDS[knob]
        value = draw(invalid_value(f, hint)) if knob not in AUGMENTATIONS[name].ranges else \
            draw(st.sampled_from([[0.5, 1.5], [0.0, 0.5], [0.3, 2.0]]))  # a narrower range than the schema's
        return [f"augmentation=[{name}]", f"augmentation.{name}.{knob}={show(value)}"], f"augmentation.{name}.{knob}"
    keys = [k for k, (f, _) in FIELDS.items() if f.metadata.get("range") is not None and not k.startswith("study.")]
    key = draw(st.sampled_from(sorted(keys)))
    f, hint = FIELDS[key]
    group, knob = key.split(".", 1)[0], key.rsplit(".", 1)[1]
    overrides = {"loss": ["loss=mse"], "tune": ["tune=lr_find"]}.get(group, [])  # null unless chosen
    if f.metadata.get("per_option"):
        kind = option_taking(group, knob)
        if kind is None:
            return [f"{key}={show(draw(invalid_value(f, hint)))}"], key
        overrides = [f"{group}={kind}"]
    return [*overrides, f"{key}={show(draw(invalid_value(f, hint)))}"], key


def refused_naming(overrides: list[str], key: str) -> None:
    try:
        cfg = make_config(overrides)
    except ConfigError as error:
        assert key in str(error), (overrides, str(error))
        return
    except Exception as error:  # OmegaConf's own type check while composing: it names the key too
        assert key in str(error), (overrides, repr(error))
        return
    check(cfg)  # make_config ran it already: again, to be sure nothing passes
    pytest.fail(f"{overrides} was accepted")


@pytest.mark.slow  # everyday tier under 10 min: 28 s of a worker here
@settings(deadline=None, max_examples=60)
@given(one_invalid_key())
def test_an_invalid_value_of_any_key_is_refused_naming_that_key(drawn):
    refused_naming(*drawn)


FREEZE = st.one_of(st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not float(v).is_integer()),
                   st.integers(max_value=-1), st.just("true"), st.just("[conv1,1]"))


@settings(deadline=None, max_examples=12)
@given(FREEZE)
def test_model_freeze_of_a_wrong_type_or_sign_is_refused(value):
    refused_naming([f"model.freeze={value}"], "model.freeze")


@settings(deadline=None, max_examples=5)
@given(st.integers(0, 10**6))
def test_a_pruning_trial_without_its_storage_is_refused(trial):
    refused_naming([f"trainer.pruning.trial={trial}"], "trainer.pruning.storage")


@settings(deadline=None, max_examples=10)
@given(name=st.sampled_from(sorted(n for n, r in AUGMENTATIONS.items() if r.ordered)), low=st.floats(0.05, 0.9),
       gap=st.floats(0.01, 0.09))
def test_a_low_high_knob_given_high_first_is_refused(name, low, gap):
    knob = AUGMENTATIONS[name].ordered[0]
    refused_naming([f"augmentation=[{name}]", f"augmentation.{name}.{knob}=[{low + gap},{low}]"],
                   f"augmentation.{name}.{knob}")


@settings(deadline=None, max_examples=8)
@given(kind=st.sampled_from(["table", "arrays", "folder"]), name=st.text("abcdef", min_size=1, max_size=8))
def test_a_users_file_that_does_not_exist_is_refused_by_check(tmp_path_factory, kind, name):
    missing = tmp_path_factory.getbasetemp() / "nowhere" / name
    key = {"table": "data.path", "arrays": "data.path", "folder": "data.root"}[kind]
    extra = ["data.target=y"] if kind == "table" else []
    refused_naming([f"data={kind}", f"{key}={missing}", *extra], key)


@pytest.mark.parametrize("arg", ["loss.delta=2", "tune.max_lr=1", "study.size=full"])
def test_a_key_of_a_group_that_is_null_unless_chosen_needs_its_choice_first(tmp_path, arg):
    result = cli(arg, cwd=tmp_path)
    group = arg.split(".")[0]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith(f"error: {arg}: no {group} is chosen") and f"choose one first: {group}=" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_file_where_a_folder_is_needed_is_refused(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"")
    refused_naming(["data=folder", f"data.root={tmp_path / 'photo.png'}"], "data.root")


# ------------------------------------------------------------------------------------------------
# The sweepers call the same check, before their directory exists

def test_a_grid_sweep_over_files_where_one_is_missing_is_refused_before_it_starts(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    sweep = tmp_path / "sweep"
    result = cli("-m", "data=table", "data.target=y", f"data.path={tmp_path / 'a.csv'},{tmp_path / 'b.csv'}",
                 *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"data.path={tmp_path / 'b.csv'}: no such file" in result.stderr
    assert not sweep.exists()


def test_a_study_at_full_size_without_mnist_under_data_root_is_refused_before_it_starts(tmp_path):
    """A shipped dataset's files are found (or downloaded) before the sweep starts, not by each of its runs."""
    sweep = tmp_path / "sweep"
    result = cli("-m", "study=optimizers", "study.size=full", f"data.root={tmp_path / 'nowhere'}",
                 f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: data=mnist data.test_set_only=true: t10k-images-idx3-ubyte(.gz) and "
                                    "t10k-labels-idx1-ubyte(.gz) not found under"), result.stderr[-2000:]
    assert not sweep.exists()


def test_a_study_without_stages_is_refused_before_it_starts(tmp_path):
    """It once ran one default run and its report failed on it."""
    sweep = tmp_path / "sweep"
    result = cli("-m", "study=activations", "study.stages=[]", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == "error: study.stages is empty: study activations needs at least one stage"
    assert not sweep.exists()


def test_a_grid_sweep_over_roots_where_one_lacks_the_dataset_is_refused_before_it_starts(tmp_path):
    found, empty = tmp_path / "found", tmp_path / "empty"
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # only looked for: nothing runs
        (found / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        (found / "MNIST" / "raw" / name).write_bytes(b"")
    empty.mkdir()
    sweep = tmp_path / "sweep"
    result = cli("-m", "data=mnist", "data.test_set_only=true", f"data.root={found},{empty}", *TINY,
                 f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"not found under {empty} or {empty / 'MNIST' / 'raw'}" in result.stderr, result.stderr[-2000:]
    assert not sweep.exists()


def test_an_optuna_search_that_every_trial_would_fail_is_refused_before_it_starts(tmp_path):
    sweep = tmp_path / "search"
    result = cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "optimizer=lbfgs", "tune=lr_find",
                 *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "tune=lr_find: optimizer=lbfgs" in result.stderr  # a tune rule: the runs' own check, up front
    assert not sweep.exists()


def test_an_optuna_search_with_one_bad_choice_is_refused_before_it_starts(tmp_path):
    sweep = tmp_path / "search"
    result = cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "model.hidden=choice([64],[64,0])",
                 *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "model.hidden=[64, 0] is invalid" in result.stderr
    assert not sweep.exists()


NARROWED = sorted((name, knob) for name, record in AUGMENTATIONS.items() for knob in record.ranges)


@settings(deadline=None, max_examples=10)
@given(which=st.sampled_from(NARROWED), excess=st.floats(0.01, 5.0))
def test_a_knob_outside_its_options_narrower_range_is_refused(which, excess):
    """erase's scale is a fraction of the image: above 1 it is refused, though the schema's scale (affine's
    zoom) allows up to 10."""
    name, knob = which
    narrow = AUGMENTATIONS[name].ranges[knob]
    value = min(narrow.le + excess, AUGMENT_FIELDS[knob][0].metadata["range"].le)
    refused_naming([f"augmentation=[{name}]", f"augmentation.{name}.{knob}=[0.1,{value}]"], f"augmentation.{name}.{knob}")


# ------------------------------------------------------------------------------------------------
# What needs the loaded data or the user's files and code: one line naming what is wrong in them

@pytest.mark.slow  # everyday tier under 10 min: 22 s of a worker here
def test_a_checkpoint_of_another_architecture_is_refused_naming_the_first_mismatch(tmp_path):
    first = cli("model=mlp", *TINY, f"hydra.run.dir={tmp_path / 'mlp'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    other = cli("model=cnn", f"model.weights={tmp_path / 'mlp'}", *TINY, f"hydra.run.dir={tmp_path / 'cnn'}",
                cwd=tmp_path)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.startswith("error: model.weights: it has no tensor conv1.") and "another architecture" in other.stderr
    assert not (tmp_path / "cnn").exists()
    fewer = cli("data.classes=[0,1,2]", f"model.weights={tmp_path / 'mlp'}", *TINY,
                f"hydra.run.dir={tmp_path / 'three'}", cwd=tmp_path)
    assert fewer.returncode == 0, fewer.stderr[-2000:]
    said = " ".join(fewer.stdout.split())
    assert "the output layer head has another size here; it is replaced" in said
    assert "loaded 4 of the model's 6 tensors" in said  # fc1 and fc2, weights and biases; not the head


def test_a_freeze_that_leaves_nothing_to_train_is_refused(tmp_path):
    result = cli("model=mlp", "model.freeze=3", *TINY, cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "outputs").exists()
    assert "model.freeze=3 freezes every layer (fc1, fc2, head): nothing is left to train" in result.stderr


USER_CODE = '''
import numpy as np
import torch
from torch.utils.data import Dataset


class Records(Dataset):
    classes = ["a", "b"]

    def __init__(self, n, broken=None):
        self.n, self.broken = n, broken

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.broken:
            raise ValueError(f"record {i} is corrupt")
        return torch.full((4,), float(i % 2)), i % 2


def broken(seed):
    return Records(80, broken=37)


def empty(seed):
    return Records(80), Records(0)


def uneven(seed):
    return np.zeros((50, 4)), np.arange(50) % 2, np.zeros((10, 5)), np.arange(10) % 2
'''


@pytest.mark.parametrize("target,message", [
    ("broken", "data: item 37 of the Records raised ValueError: record 37 is corrupt ({file}:{line})"),
    ("empty", "data._target_: the test Records it returned is empty"),
    ("uneven", "each x_test row has shape (5,), each x row (4,)"),
])
@pytest.mark.slow  # everyday tier under 10 min: 16 s of a worker here
def test_the_users_own_data_that_fail_are_named_in_one_line(tmp_path, target, message):
    (tmp_path / "records.py").write_text(USER_CODE)
    result = cli("data=custom", f"data._target_=records.{target}", "data.num_workers=1", *TINY, cwd=tmp_path,
                 env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1
    line = next(n for n, text in enumerate(USER_CODE.split("\n"), 1) if "raise ValueError" in text)
    assert message.format(file=tmp_path / "records.py", line=line) in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_table_emptied_by_missing_drop_says_so(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,,0\n,2,1\n3,,0\n")
    result = cli("data=table", f"data.path={tmp_path / 't.csv'}", "data.target=y", "data.missing=drop", *TINY,
                 cwd=tmp_path)
    assert result.returncode == 2
    assert "data.missing=drop dropped every row of t.csv (3): each has a missing value in a, b" in result.stderr


# ------------------------------------------------------------------------------------------------
# The user's own data, drawn: which item fails and how, which split is empty, which shapes disagree

class FailingRecords:
    """A map-style Dataset whose item `broken` raises `error` (a torch Dataset by its protocol)."""

    classes = ["a", "b"]

    def __init__(self, n: int, broken: int, error: str):
        self.n, self.broken, self.error = n, broken, error

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import torch

        if i == self.broken:
            raise {"ValueError": ValueError, "KeyError": KeyError, "OSError": OSError,
                   "ZeroDivisionError": ZeroDivisionError}[self.error](f"record {i}")
        return torch.full((3,), float(i)), i % 2


def failing_records(seed, n, broken, error, empty_test=False):
    from torch.utils.data import Dataset

    records = type("FailingRecords", (FailingRecords, Dataset), {})  # a torch Dataset, as trainrun asks
    return (records(n, broken, error), records(0 if empty_test else 8, -1, error))


def arrays_of(seed, n, width, test_width):
    import numpy as np

    return np.zeros((n, width)), np.arange(n) % 2, np.zeros((6, test_width)), np.arange(6) % 2


@settings(deadline=None, max_examples=12)
@given(n=st.integers(8, 40), data=st.data(), error=st.sampled_from(["ValueError", "KeyError", "OSError", "ZeroDivisionError"]))
def test_a_failing_item_anywhere_in_a_users_dataset_is_named(n, data, error):
    import torch

    from trainrun.data import load
    from trainrun.errors import DataError

    broken = data.draw(st.integers(0, n - 1))
    cfg = make_config(["data=custom", "data._target_=test_check.failing_records", "data.num_workers=0",
                       f"+data.params.n={n}", f"+data.params.broken={broken}", f"+data.params.error={error}",
                       "data.normalize=none"])
    with pytest.raises(DataError) as refused:
        loaded = load(cfg.data, 0, torch.device("cpu"), prenormalize=False)
        for split in (loaded.train, loaded.val, loaded.test):
            split.take(slice(0, len(split)))
    message = str(refused.value)
    assert f"data: item {broken} of the FailingRecords raised {error}:" in message and "record" in message
    assert "test_check.py:" in message and "\n" not in message


@settings(deadline=None, max_examples=6)
@given(n=st.integers(8, 40))
def test_an_empty_split_of_a_users_datasets_is_named(n):
    import torch

    from trainrun.data import load
    from trainrun.errors import DataError

    cfg = make_config(["data=custom", "data._target_=test_check.failing_records", "data.num_workers=0",
                       f"+data.params.n={n}", "+data.params.broken=-1", "+data.params.error=ValueError",
                       "+data.params.empty_test=true"])
    with pytest.raises(DataError, match="the test FailingRecords it returned is empty"):
        load(cfg.data, 0, torch.device("cpu"), prenormalize=False)


@settings(deadline=None, max_examples=10)
@given(n=st.integers(4, 40), width=st.integers(1, 6), other=st.integers(1, 6))
def test_test_inputs_of_another_shape_are_named(n, width, other):
    import torch

    from trainrun.data import load
    from trainrun.errors import DataError

    cfg = make_config(["data=custom", "data._target_=test_check.arrays_of",
                       f"+data.params.n={n}", f"+data.params.width={width}", f"+data.params.test_width={width + other}"])
    with pytest.raises(DataError, match=rf"each x_test row has shape \({width + other},\), each x row \({width},\)"):
        load(cfg.data, 0, torch.device("cpu"), prenormalize=False)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), width=st.integers(1, 5), chunk=st.integers(1, 64),
       bad=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 4), st.sampled_from([math.nan, math.inf, -math.inf])),
                    max_size=4))
def test_check_finite_names_the_first_row_holding_nan_or_infinity_whatever_the_chunking(rows, width, chunk, bad):
    """Drawn: inputs of any size, NaN or infinities anywhere (or none), scanned in chunks of any size: the error
    names the first bad row, its first bad feature and what it holds; finite inputs and integers pass."""
    import torch

    from trainrun import check as rules
    from trainrun.errors import DataError

    x = torch.randn(rows, width, dtype=torch.float64)
    bad = [(r, c, v) for r, c, v in bad if r < rows and c < width]
    for r, c, v in bad:
        x[r, c] = v
    names = [f"f{i}" for i in range(width)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rules, "FINITE_CHUNK", chunk)
        if not bad:
            rules.check_finite(x, "x", names=names)
            rules.check_finite(x.long(), "x")
            return
        first = min((r, c) for r, c, _ in bad)
        held = "NaN" if math.isnan(x[first]) else "infinity"
        with pytest.raises(DataError, match=rf"^x: row {first[0] + 7} holds {held} in column f{first[1]}; "):
            rules.check_finite(x, "x", first_row=7, names=names)


# What only building or loading can refuse, raised where it is built (check.py's docstring says the same);
# every other rule lives in check.py. A new refusal in a builder fails this list until it is moved to check.py
# (config-only, or data-only: check_data) or added here with the reason only building can tell.
BUILD_TIME = {
    "pooled conv blocks shrink": "the conv stack's arithmetic on the loaded input shape",
    "model=torchvision tak": "torchvision's registry of models, imported",
    "model.small_input=true": "the built torchvision model's stem",
    "which failed here": "fetching a library's weights",
    "model=timm needs timm": "timm, imported", "is not a timm model": "timm's registry, imported",
    "model.head_only and model.new_head": "the built model's last layer",
    "model.weights": "the weights file, read", "safetensors file": "the weights file, read",
    "cannot read weights": "the weights file, read",
    "model.freeze": "the built model's layer names",
    "norm.num_groups": "a custom model's layer widths (a built-in model's: check.py)",
    "norm=instance needs a conv model": "a custom model's dense layers (a built-in model's: check.py)",
    "_target_=": "the user's code, called",
    "would set the learning rate": "the schedule stepped over the run's length in steps (the data's size)",
    "no CUDA device": "the machine", "MPS is not available": "the machine",
    "expected {data.num_outputs} outputs": "the built model's output, on a batch",
}


def test_every_refusal_left_in_a_builder_is_one_only_building_can_make():
    import re

    from conftest import ROOT

    sources = [*(ROOT / "trainrun" / "options").glob("*.py"), ROOT / "trainrun" / "run" / "build.py"]
    raised = [m.group(1) for path in sources
              for m in re.finditer(r"raise (?:ConfigError|DataError)\(\s*f?\"([^\"]*)", path.read_text())]
    assert len(raised) >= len(BUILD_TIME)
    unexplained = [text for text in raised if not any(known in text for known in BUILD_TIME)]
    assert not unexplained, f"config-only refusals belong in check.py: {unexplained}"


@pytest.mark.parametrize("sweep,named", [
    (["model=resnet", "model.depth=20,9", "data=synthetic_images"], "model.depth=9 is invalid: expected 6n+2"),
    (["model=resnet", "data=synthetic_images", "norm=group", "norm.num_groups=4,3"],
     "norm.num_groups=3 must divide every normalized layer's width"),
    (["norm=batch,instance"], "norm=instance needs a conv model"),
    (["model=cnn", "model.channels=[4,6]", "norm=group", "norm.num_groups=2,4"], "norm.num_groups=4 must divide"),
    (["model=mlp,polynomial"], "model=polynomial takes inputs of shape (1,)"),
])
def test_a_rule_once_in_a_builder_refuses_a_two_run_sweep_before_its_directory_exists(tmp_path, sweep, named):
    """Once raised while building run 1 or 2 (a ResNet's depth 6n+2 failed run 2 after run 1 trained)."""
    result = cli("-m", *sweep, *TINY, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "outputs").exists()
