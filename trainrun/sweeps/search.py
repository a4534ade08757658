"""Optuna pieces shared by the sweeper plugins (hydra_plugins/trainrun_optuna, trainrun_pbt) and a run being searched."""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Mapping

from ..errors import ConfigError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override


def make_pruner(cfg: Mapping):
    """The pruner that trainer.pruning (or hydra.sweeper.pruner) names, with the knobs its record lists."""
    from ..registry import PRUNERS

    return PRUNERS.create(cfg, kind=cfg["kind"] if isinstance(cfg, Mapping) else cfg.kind)


def make_storage(url: str):
    """`journal:<path>` (Optuna's journal file, safe across processes on one file system) or an RDB URL
    (sqlite:///..., postgresql+psycopg://...: many machines, one study)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            # workers starting together on a new database race to create its tables: the loser's CREATE meets
            # the winner's table (PostgreSQL: DuplicateTable, or a unique key of its catalog), and tries again
            raced = isinstance(e, IntegrityError) or "already exists" in str(e)
            if not (raced and attempt < 5):
                raise ConfigError(f"the Optuna storage {url} cannot be opened: {' '.join(str(e).split())[:160]}") \
                    from None
        time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)


def open_trial(cfg):
    """The Optuna trial this run is (trainer.pruning, filled in by the sweeper), to report to; None otherwise."""
    if cfg.trial is None:
        return None
    import optuna

    study = optuna.load_study(study_name=cfg.study, storage=make_storage(cfg.storage),
                              pruner=make_pruner(cfg))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, cfg.trial)
    return optuna.Trial(study, trial_id)


# -- the search space: Hydra's sweep grammar as Optuna distributions (the Optuna and PBT sweepers) ----------
def distribution(override: Override):
    """The Optuna distribution for a sweep override, or None for a fixed value."""
    import optuna.distributions as d
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    if not override.is_sweep_override():
        return None
    sweep = override.value()
    log_scale = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, ChoiceSweep):
        return d.CategoricalDistribution(choices(override))
    if isinstance(sweep, RangeSweep):
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return d.IntDistribution(sweep.start, sweep.stop - 1, step=sweep.step, log=log_scale)
        return d.CategoricalDistribution(choices(override))
    if isinstance(sweep, IntervalSweep):
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return d.IntDistribution(sweep.start, sweep.end, log=log_scale)
        return d.FloatDistribution(sweep.start, sweep.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can search")


def choices(override: Override) -> list:
    """A choice's values as Optuna stores them: scalars as they are, a list or a dict as its override text
    (`[256,256]`), which Hydra parses back when the trial runs (Optuna warns on anything but scalars)."""
    return [v if v is None or isinstance(v, (bool, int, float, str)) else text
            for v, text in zip(override.sweep_iterator(transformer=lambda x: x),
                               override.sweep_string_iterator())]


def search_space(params: dict, arguments: list) -> tuple[dict, list]:
    """The searched keys' distributions and the fixed overrides, from the configured space and the command
    line, which replaces it key by key (a fixed value there fixes that key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    by_key = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
              + parser.parse_overrides(arguments)}
    space, fixed = {}, []
    for override in by_key.values():
        try:
            dist = distribution(override)
        except ValueError as error:  # e.g. a log scale over negative values
            raise ConfigError(f"cannot search {override.input_line}: {' '.join(str(error).split())}") from None
        if dist is None:
            fixed.append(override.input_line)
        else:
            space[override.get_key_element()] = dist
    return space, fixed


def first_point(space: dict) -> dict:
    """A point of the space: each choice's first value, each interval's low end."""
    import optuna.distributions as d

    return {key: dist.choices[0] if isinstance(dist, d.CategoricalDistribution) else dist.low
            for key, dist in space.items()}


def probe_jobs(space: dict, fixed: list) -> list:
    """Jobs that between them take every choice of the space once (an interval at its low end): a value that
    every trial with it would fail on is refused before the search starts."""
    import optuna.distributions as d

    first = first_point(space)
    points = [first] + [{**first, key: choice} for key, dist in space.items()
                        if isinstance(dist, d.CategoricalDistribution) for choice in dist.choices[1:]]
    return [[*fixed, *(f"{k}={v}" for k, v in point.items())] for point in points]


def domain(dist):
    """For the HParams experiment: a choice's values, or an interval's (low, high)."""
    import optuna.distributions as d

    return list(dist.choices) if isinstance(dist, d.CategoricalDistribution) else (dist.low, dist.high)
