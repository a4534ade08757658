"""`trainrun`: the Hydra entry point, with bad input reported in one or two lines.

torch is imported only once the config has composed and validated, so `--help` and config
errors answer at once.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from . import studies
from .check import check
from .config import OPTION_GROUPS, register
from .errors import ConfigError, DataError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
SHOW_TRACEBACK = False  # --debug or HYDRA_FULL_ERROR=1

register()
# --help lists every group's options through Hydra, which copies the whole config store once per group (115
# copies); the studies' full records made that 2.4 s, more than importing torch: for help, their names suffice
studies.register(names_only=bool({"--help", "-h"} & set(sys.argv[1:])))

def register_sweeper() -> None:
    """hydra/sweeper=trainrun_grid, trainrun_optuna and trainrun_pbt. Hydra finds plugins by scanning the hydra_plugins
    namespace, which cannot see into an editable install; registering them here works either way
    (Plugins.register is idempotent). The grid sweeper also takes the place of Hydra's `basic`, the default:
    the same grammar, resumable, and a search preset (hparams_search=...) still overrides it."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    from hydra_plugins.trainrun_grid.grid_sweeper import TrainrunGridSweeper, TrainrunGridSweeperConf
    from hydra_plugins.trainrun_optuna.optuna_sweeper import TrainrunOptunaSweeper
    from hydra_plugins.trainrun_pbt.pbt_sweeper import TrainrunPbtSweeper
    from hydra_plugins.trainrun_stack.stack_launcher import TrainrunStackLauncher

    Plugins.instance().register(TrainrunGridSweeper)  # after Hydra's plugin scan, which stores its own `basic`
    Plugins.instance().register(TrainrunOptunaSweeper)
    Plugins.instance().register(TrainrunPbtSweeper)
    Plugins.instance().register(TrainrunStackLauncher)
    ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=TrainrunGridSweeperConf, provider="trainrun")


register_sweeper()


def run_dir_for(resume: str | None, new_run_dir: str) -> str:
    """hydra.run.dir: a new dated directory, or the run that trainer.resume names (it continues there)."""
    if not resume:
        return new_dir(new_run_dir)
    from .run.checkpoint import find_run

    return str(find_run(resume))


CLAIMED: dict[str, str] = {}  # Hydra may resolve the directory more than once: the same answer each time


def new_dir(wanted: str) -> str:
    """`wanted`, or `wanted-2`, `-3`, ... when a run started in the same second (in this process or another)
    has it: the directory is claimed by creating it, which only one process can do."""
    if wanted not in CLAIMED:
        for n in range(1, 1000):
            candidate = wanted if n == 1 else f"{wanted}-{n}"
            try:
                Path(candidate).mkdir(parents=True)
            except FileExistsError:
                continue
            except OSError:  # unwritable: Hydra reports it where it creates the directory
                pass
            CLAIMED[wanted] = candidate
            break
    return CLAIMED[wanted]


HOLDS_A_RUN = ("metrics.json", "last.pt", "best.pt", "events.out.tfevents.*")


def refuse_to_overwrite(args: list[str]) -> str | None:
    """A run directory given on the command line that already holds a run is never written into. (A sweep
    directory that holds a sweep is resumed by its sweeper, or refused there when the sweep differs.)"""
    values = dict(arg.split("=", 1) for arg in args if "=" in arg and not arg.startswith("-"))
    multirun = "-m" in args or "--multirun" in args
    if not multirun and values.get("hydra.run.dir") and not values.get("trainer.resume"):
        run_dir = Path(values["hydra.run.dir"]).expanduser()
        if any(next(run_dir.glob(pattern), None) for pattern in HOLDS_A_RUN):
            return (f"{run_dir} already holds a run; continue it with: trainrun trainer.resume={run_dir} "
                    "(or give another hydra.run.dir; nothing was changed)")
    return None


def studies_help() -> str:
    """--help's list of studies, from their records (trainrun/studies/: no torch)."""
    width = max(map(len, studies.STUDIES))
    return "\n".join(["Studies (trainrun -m study=NAME [study.size=full]; the report: <sweep dir>/study.md, with a verdict):",
                      *(f"  {name:<{width}} {study.summary}" for name, study in studies.STUDIES.items())])


OmegaConf.register_new_resolver("trainrun_studies", studies_help, replace=True)
OmegaConf.register_new_resolver("trainrun_run_dir", run_dir_for, replace=True)
# cached like Hydra's own `now`: a sweep's jobs (in worker processes too) get the directory the sweep claimed
OmegaConf.register_new_resolver("trainrun_new_dir", new_dir, replace=True, use_cache=True)
OmegaConf.register_new_resolver(
    "trainrun_output_subdir", lambda resume: ".hydra/resumed" if resume else ".hydra", replace=True)


@hydra.main(config_path="pkg://trainrun.conf", config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> float | None:
    """One training run (one job of a sweep). Returns its metrics and, as `objective`, the monitored one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        check(cfg)
        if cfg.trainer.threads is None:
            cfg.trainer.threads = launcher_threads(hydra_cfg.launcher)
        from .run.console import LineConsole, RunConsole
        from .run.trainer import train  # torch comes in here

        from .sweeps.sweep import holding

        task = OmegaConf.to_container(hydra_cfg.overrides.task)  # as typed: "${...}" in an override stays text
        overrides = dict(o.split("=", 1) for o in task if "=" in o and not o.startswith("hydra"))
        with holding(run_dir):  # a resumed search tells a live run from a dead one by this lock
            if cfg.trainer.fast_dev_run:  # every stage once, in a directory of its own that goes
                from .run.fast_dev_run import fast_dev_run

                fast_dev_run(cfg, RunConsole())
                remove_if_unused(run_dir)
                return None
            one_line = cfg.logger.console == "line" or (cfg.logger.console == "auto" and hydra_cfg.mode == RunMode.MULTIRUN)
            ui = LineConsole(cfg.trainer.early_stopping.monitor) if one_line else RunConsole()
            metrics = train(cfg, run_dir, ui, overrides=overrides)
    except Exception as error:
        user_error = describe(error)
        if hydra_cfg.mode == RunMode.MULTIRUN and not SHOW_TRACEBACK:
            # one failed run of a sweep must not hide the others: record it, the summary shows it
            message = user_error or f"{type(error).__name__}: {error}"
            (run_dir / "error.json").write_text(json.dumps({"error": message}) + "\n")
            log = logging.getLogger("trainrun")
            (log.error if user_error else log.exception)("run failed: %s", message)  # a traceback for bugs only
            print(f"error: run {run_dir.name} failed: {message}", file=sys.stderr)
            return None
        if user_error is None:
            raise  # a bug: its traceback
        remove_if_unused(run_dir)
        if SHOW_TRACEBACK:
            raise
        # reported here: Hydra would print its own "Error executing job" line first
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    if not metrics:  # a rank other than 0 of a distributed run: rank 0 reports
        return None
    if metrics["stop_reason"] == "interrupted":
        raise KeyboardInterrupt
    return {**metrics, "objective": metrics.get(cfg.trainer.early_stopping.monitor)}


def launcher_threads(launcher: DictConfig) -> int | None:
    """Each parallel worker's share of the cores, so N runs at once do not fight over them."""
    cores = os.cpu_count() or 1
    if "n_jobs" in launcher:  # joblib: n_jobs processes at once (-1: one per core)
        workers = launcher.n_jobs if launcher.n_jobs > 0 else cores
        return max(1, cores // workers)
    if "cpus_per_task" in launcher:  # submitit: what each task was given
        return launcher.cpus_per_task or 1
    return None


def requested_devices(args: list[str]) -> int:
    """trainer.devices from the command line, read before Hydra runs (the launch happens first); a resumed
    run takes the number it was checkpointed with."""
    values = dict(arg.split("=", 1) for arg in args if "=" in arg)
    if values.get("trainer.devices", "").isdigit():
        return int(values["trainer.devices"])
    if values.get("trainer.resume"):
        from .run.checkpoint import find_run
        from .runfiles import read_checkpoint

        try:
            return int(read_checkpoint(find_run(values["trainer.resume"]) / "last.pt")["config"]["trainer"]["devices"])
        except (ConfigError, KeyError):
            return 1  # the run itself reports what is wrong with the checkpoint, in one line
    return 1


def remove_if_unused(run_dir: Path) -> None:
    """A run refused before training leaves no directory that looks like a run: remove what Hydra just
    made there (.hydra/ and the log), and only when nothing else is in it."""
    import shutil

    made_by_hydra = {".hydra", "trainrun.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= made_by_hydra:
        shutil.rmtree(run_dir)
        cwd = Path.cwd()
        for parent in run_dir.resolve().parents:  # outputs/[multirun/]<date>/ and up, below here, when now empty
            if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
                break
            parent.rmdir()


def main() -> None:
    """Console script: run Hydra, and turn every kind of bad input into a short message and exit code 2."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    devices = requested_devices(sys.argv[1:])
    if devices > 1 and "WORLD_SIZE" not in os.environ:  # trainer.devices=N: the same command on N processes
        from .run.distributed import launch

        sys.exit(launch(devices, sys.argv[1:]))
    if int(os.environ.get("RANK", "0")) > 0:
        from .run.distributed import worker_arguments

        sys.argv = [sys.argv[0], *worker_arguments(sys.argv[1:])]
    global SHOW_TRACEBACK
    SHOW_TRACEBACK = debug or os.environ.get("HYDRA_FULL_ERROR") == "1"
    sys.argv = [sys.argv[0], *every_fold(sys.argv[1:])]
    refusal = check_command_line(sys.argv[1:]) or refuse_to_overwrite(sys.argv[1:])
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's own multi-line report
    try:
        run()
    except KeyboardInterrupt:  # the run printed how to resume; a second Ctrl-C lands here directly
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if SHOW_TRACEBACK:
            raise
        message = describe(error)
        if message is None:
            raise
        for claimed in CLAIMED.values():  # a sweep refused before it started leaves no directory
            remove_if_unused(Path(claimed))
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def every_fold(args: list[str]) -> list[str]:
    """`data.folds=K` on the command line: K runs, a sweep over data.fold (with other swept keys, every
    configuration K times); the summary gives each fold and the configurations' means over them."""
    given = [a.split("=", 1)[1] for a in args if a.startswith("data.folds=")]
    if not given or not given[-1].isdigit() or any(a.startswith(("data.fold=", "hparams_search=")) for a in args):
        return args  # a bad value, a fold chosen, or a search: check() says what it needs
    multirun = [] if {"-m", "--multirun"} & set(args) else ["-m"]
    return [*multirun, *args, f"data.fold=range(0,{int(given[-1])})"]


def check_command_line(args: list[str]) -> str | None:
    """What Hydra would answer with a page of usage or a traceback, in one line: an unknown flag, a group
    set to null or deleted (a run needs one of each), an override that does not parse."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parsed, unknown = get_args_parser().parse_known_args(args)
    if unknown:
        return f"unknown flag {unknown[0]} (see trainrun --help)"
    modes = [flag for flag, on in (("-m", parsed.multirun), ("--cfg", parsed.cfg), ("--info", parsed.info)) if on]
    if len(modes) > 1:
        return f"{' and '.join(modes)} cannot be given together: {modes[1]} shows a config without running"
    parser = OverridesParser.create()
    # loss and tune are null unless chosen: a key inside one needs its choice first (OmegaConf asserts otherwise)
    chosen = {arg.split("=", 1)[0].lstrip("~+") for arg in parsed.overrides or []}
    for arg in parsed.overrides or []:
        group, dot, _ = arg.lstrip("~+").partition(".")
        if dot and group in NULL_UNLESS_CHOSEN and group not in chosen and "=" in arg:
            return (f"{arg}: no {group} is chosen ({'it follows the data' if group == 'loss' else 'none by default'}); "
                    f"choose one first: {group}=<{', '.join(sorted(group_options(group)))}> {arg}")
    for arg in parsed.overrides or []:
        try:
            override = parser.parse_override(arg)
        except HydraException as error:
            return f"cannot parse the override {arg}: {str(error).splitlines()[0]}"
        key = override.get_key_element().lstrip("~+")
        if key in REQUIRED_GROUPS and (override.is_delete() or override.value() is None):
            return (f"{arg}: a run needs one {key} option; choose one of: "
                    f"{', '.join(sorted(group_options(key)))}")
        if key in ("study", "tune") and override.value() is None and not override.is_delete():
            return f"{arg}: no {key} is the default; leave {key}= out"
        if key == "study" and override.value() and not (modes or parsed.help or parsed.hydra_help):
            return f"{arg} is a sweep of runs: add -m (trainrun -m {' '.join(parsed.overrides)})"
    return None


REQUIRED_GROUPS = (*OPTION_GROUPS, "regularization")
NULL_UNLESS_CHOSEN = ("loss", "tune", "study")  # loss may be null: it follows the data's task


def describe(error: BaseException) -> str | None:
    """A one- or two-line description of a user error, or None for a bug (shown with its traceback)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    for link in _chain(error):
        if isinstance(link, (ConfigError, DataError)):  # also when raised inside an interpolation
            return str(link)
    if isinstance(error, OSError) and error.filename:  # e.g. a read-only or full output directory
        return f"cannot write {error.filename}: {error.strerror}"
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, choice = error.missing_cfg_file.rpartition("/")
        choices = error.options or group_options(group)  # Hydra lists them for a single choice, not for a list
        close = difflib.get_close_matches(choice, choices, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown {group or 'option'} '{choice}'{hint}; choose one of: {', '.join(sorted(choices))}"
    if isinstance(error, OverrideParseException):
        return str(error).splitlines()[0]
    cause = error.__cause__ if isinstance(error, ConfigCompositionException) and error.__cause__ else error
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        first = str(cause).splitlines()[0]
        if "not in" in first and key:  # an unknown key
            return f"unknown key '{key}'{_suggest(key)}"
        return f"{key}: {first}" if key else first
    if isinstance(error, ConfigCompositionException):
        return " ".join(str(error).split())[:300]
    return None


def group_options(group: str) -> list[str]:
    from importlib.resources import files

    folder = files("trainrun.conf") / group
    return [p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")] if folder.is_dir() else []


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _suggest(key: str) -> str:
    """The keys that the key's parent takes (from the schema), nearest first."""
    import dataclasses

    from .config import RENAMED, schema_at

    if key in RENAMED:
        return f": it is called {RENAMED[key]} now"
    *parents, leaf = key.split(".")
    schema = schema_at(parents)
    if schema is None:
        return ""
    names = [f.name for f in dataclasses.fields(schema)]
    close = difflib.get_close_matches(leaf, names, n=1)
    return (f" (did you mean {close[0]}?)" if close else "") + f"; {'.'.join(parents)} takes: {', '.join(names)}"


if __name__ == "__main__":
    main()
