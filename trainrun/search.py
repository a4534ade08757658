"""Optuna pieces shared by the sweeper plugin (hydra_plugins/trainrun_optuna) and a run being searched."""
from __future__ import annotations


def make_pruner(kind: str, n_startup_trials: int = 2, n_warmup_steps: int = 1, min_resource: int = 1):
    import optuna.pruners as p

    return {
        "median": lambda: p.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps),
        "successive_halving": lambda: p.SuccessiveHalvingPruner(min_resource=min_resource),
        "hyperband": lambda: p.HyperbandPruner(min_resource=min_resource),
        "none": p.NopPruner,
    }[kind]()


def make_storage(url: str):
    """`journal:<path>` (Optuna's journal file, safe across processes on one file system) or an RDB URL."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return url


def open_trial(cfg):
    """The Optuna trial this run is (trainer.pruning, filled in by the sweeper), to report to; None otherwise."""
    if cfg.trial is None:
        return None
    import optuna

    study = optuna.load_study(study_name=cfg.study, storage=make_storage(cfg.storage),
                              pruner=make_pruner(cfg.kind, cfg.n_startup_trials, cfg.n_warmup_steps, cfg.min_resource))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, cfg.trial)
    return optuna.Trial(study, trial_id)
