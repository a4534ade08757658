"""A composed job run as Hydra's `run_job` runs a launcher's job: in its directory, with its .hydra/ record, its
logging, Hydra's callbacks and `hydra.job.env_set`, so the run is the same as through Hydra's launchers (a test
holds their records equal). Not run_job itself: it deep-copies the config three times and sets Hydra's config
twice, ~50 of its ~95 ms a job here, where the caller's configs are already their own copies."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def run_composed(config: DictConfig, task_cfg: DictConfig, callbacks, task_function):
    """`config`: the job's composed config; `task_cfg`: another copy of it (its `hydra` node is removed here)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobReturn, JobRuntime, JobStatus, _flush_loggers, _save_config, configure_log, env_override
    from omegaconf import open_dict, read_write

    with open_dict(task_cfg):
        del task_cfg["hydra"]
    output_dir = os.path.abspath(os.path.join(config.hydra.sweep.dir, str(config.hydra.sweep.subdir)))
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = output_dir
    hydra, old_cwd = HydraConfig.instance(), os.getcwd()
    previous, chdir = hydra.cfg, bool(config.hydra.job.chdir)
    hydra.set_config(config)
    result = JobReturn(overrides=OmegaConf.to_container(config.hydra.overrides.task), working_dir=output_dir)
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if chdir:
            os.chdir(output_dir)
        else:
            result.working_dir = old_cwd
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            record = Path(output_dir) / config.hydra.output_subdir
            _save_config(task_cfg, "config.yaml", record)
            _save_config(hydra.cfg, "hydra.yaml", record)
            _save_config(config.hydra.overrides.task, "overrides.yaml", record)
        with env_override(config.hydra.job.env_set):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                result.return_value, result.status = task_function(task_cfg), JobStatus.COMPLETED
            except Exception as error:
                result.return_value, result.status = error, JobStatus.FAILED
        result.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        callbacks.on_job_end(config=config, job_return=result)
    finally:
        hydra.cfg = previous
        if chdir:
            os.chdir(old_cwd)
    return result  # its cfg and hydra_cfg unset: the caller reads the outcome only; the configs are the .hydra/
