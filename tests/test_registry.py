"""The catalog's shape: every option is one YAML file and one record, and the two agree with the builder."""
from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import yaml

from conftest import CONF
from trainrun.registry import REGISTRIES

# groups whose options are YAML files under conf/<group>/ (augmentation files hold {name: knobs})
FILE_GROUPS = ("data", "model", "activation", "init", "norm", "optimizer", "scheduler", "loss", "augmentation")


def option_yaml(group: str, name: str) -> dict:
    values = yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}
    return values.get(name, {}) if group == "augmentation" else values


@pytest.mark.parametrize("group", FILE_GROUPS)
def test_every_yaml_option_has_a_record_and_every_record_a_yaml(group):
    files = {p.stem for p in (CONF / group).glob("*.yaml")} - ({"none"} if group == "augmentation" else set())
    assert files == set(REGISTRIES[group])


@pytest.mark.parametrize("group,name", [(g, n) for g in FILE_GROUPS for n in REGISTRIES[g]])
def test_each_knob_is_declared_once_in_the_yaml_and_taken_by_the_builder(group, name):
    record = REGISTRIES[group][name]
    values = option_yaml(group, name)
    knob_values = {k: v for k, v in values.items() if k in record.knobs}
    # the YAML gives every knob its value (null where the builder derives it, e.g. onecycle's max_lr)
    assert set(record.knobs) <= set(values), f"{group}/{name}.yaml does not set {set(record.knobs) - set(values)}"
    params = inspect.signature(record.builder()).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert takes_any or set(record.knobs) <= set(params), f"{record.build} does not take {set(record.knobs) - set(params)}"
    # a builder of ours declares no default of its own for a knob that the YAML sets: the YAML is the one place
    if record.build.startswith("trainrun."):
        own_defaults = {k for k, p in params.items() if k in knob_values and knob_values[k] is not None
                        and p.default is not p.empty}
        assert not own_defaults, f"{record.build} repeats the default of {own_defaults}"


def test_help_and_config_errors_do_not_import_torch(tmp_path):
    code = ("import sys; from trainrun.config import register; import trainrun.check, trainrun.registry, trainrun.cli; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr


def test_traits_are_typed_per_group_and_a_misspelt_one_fails():
    """Each group's traits are its frozen dataclass: a record naming a trait its group lacks fails when the
    catalog is built (at import), and so does reading one: nothing takes a silent default."""
    from dataclasses import FrozenInstanceError

    from trainrun.registry import OPTIMIZERS, OptimizerTraits, Registry, option

    with pytest.raises(TypeError, match="optimizer=sgd: OptimizerTraits has no trait needs_closur"):
        Registry("optimizer", {"sgd": option("torch.optim:SGD", "lr", needs_closur=True)}, OptimizerTraits)
    with pytest.raises(AttributeError, match="needs_closur"):
        OPTIMIZERS.trait("lbfgs", "needs_closur")
    assert OPTIMIZERS.trait("lbfgs", "needs_closure") and not OPTIMIZERS.trait("sgd", "needs_closure")
    with pytest.raises(FrozenInstanceError):
        OPTIMIZERS["sgd"].traits.needs_closure = True
    for registry in REGISTRIES.values():  # every record holds its group's typed traits
        assert all(isinstance(record.traits, registry.traits_type) for record in registry.values())
