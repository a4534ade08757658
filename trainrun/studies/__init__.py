"""Studies: a lecture's claim as one sweep (`trainrun -m study=<name>`), then a report with a verdict.

One file per study holds its rules over the measured numbers, its figures and its record (`STUDY`); what
several share is in helpers.py, the machinery (records, judging, the report) in framework.py. Rules read
layers.json's record at initialization (epoch 0) or after training, and metrics.json. A rule takes its
thresholds and the settings it reads runs at from its Claim's `given` (the rule's text is formatted from them),
finds runs by value (`pick`), and asks for each number it reads through `need`: one that it cannot read (a run
missing, a statistic that exploded to null) makes the claim `inconclusive`. Adding a study is one file here and
its name in NAMES.
"""
from __future__ import annotations

import importlib

NAMES = ("activations", "init_depth", "selu", "optimizers", "mc_dropout", "transfer", "lr_diagnosis",
         "normalization", "regularization", "gd_vs_sgd", "search", "weight_averaging")
STUDIES = {name: importlib.import_module(f"{__name__}.{name}").STUDY for name in NAMES}


def register(names_only: bool = False) -> None:
    """`study=NAME`: each record's sweep as Hydra's config group `study` (a user's own YAML extends one by its
    name); `names_only`: empty entries, enough for --help's list of the group's options."""
    from hydra.core.config_store import ConfigStore

    for name, study in STUDIES.items():
        node = {} if names_only else study.sweep.config(name)
        ConfigStore.instance().store(group="study", name=name, node=node, package="_global_", provider="trainrun")
