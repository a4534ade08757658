"""Many runs: naming and resuming a sweep's runs (sweep.py), Optuna's storage, pruner and trial (search.py),
and the table at the end of a sweep (summary.py, `trainrun-report`). The sweepers themselves are Hydra plugins
in ../../hydra_plugins/."""
