"""Optuna pieces shared by the sweeper plugin (hydra_plugins/trainrun_optuna) and a run being searched."""
from __future__ import annotations

import random
import time
from typing import Mapping

from ..errors import ConfigError


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
