"""What trainrun's sweepers share: the sweep directory's record, the runs' names, what each run left behind,
and the one HParams experiment of a sweep.

A sweep is resumed by repeating its command: the sweepers (hydra_plugins/) compare the command's task
overrides with the sweep directory's multirun.yaml, keep every finished run as it is, resume the interrupted
ones from their checkpoints and start the rest. No torch here: a refusal answers at once.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import ConfigError
from .. import runfiles

NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9._-]+")  # what stays valid in a path and in trainer.resume=<dir>
NAME_LENGTH = 100


def run_name(number: int, values: dict[str, str], keys: list[str]) -> str:
    """`<number>_<key>-<value>_...` over the swept `keys` (`3_optimizer-adam_lr-0.01`), so a TensorBoard legend
    says what varies. A key is shortened to its last part where that stays unambiguous among `keys`."""
    last = Counter(key.lstrip("+~").rsplit(".", 1)[-1] for key in keys)
    parts = [str(number)]
    for key in keys:
        short = key.lstrip("+~").rsplit(".", 1)[-1]
        value = str(values.get(key, ""))
        value = NOT_IN_A_NAME.sub("-", value.rsplit("/", 1)[-1] if "/" in value else value).strip("-")  # a path: its file
        parts.append(f"{short if last[short] == 1 else key.lstrip('+~')}-{value}")
    return NOT_IN_A_NAME.sub("-", "_".join(parts))[:NAME_LENGTH]


def run_names(jobs: list[list[str]], swept: list[str]) -> list[str]:
    """The name of each job of a grid, numbered in the grid's order."""
    return [run_name(number, dict(o.split("=", 1) for o in job), swept) for number, job in enumerate(jobs)]


def run_id(name: str) -> str:
    """What a run's name starts with: its number, after its study stage's name if any (`7`, `grid-7`)."""
    return name.split("_", 1)[0]


def run_order(run_dir: Path) -> tuple:
    """Runs in the order they were planned: by stage, then number (`grid-2` before `grid-10`)."""
    stage, _, number = run_id(run_dir.name).rpartition("-")
    return (stage, int(number), "") if number.isdigit() else (stage, 1 << 30, run_dir.name)


def resuming(sweep_dir: Path, task_overrides: list[str]) -> bool:
    """True when `sweep_dir` holds this sweep already (the command was repeated); False when it is new or
    empty. Refuses (ConfigError) a directory that holds something else, or another sweep: its first
    override that differs is named. Task overrides are compared as a set: their order does not matter."""
    record = sweep_dir / "multirun.yaml"
    if not record.is_file():
        if sweep_dir.is_dir() and any(sweep_dir.iterdir()):
            raise ConfigError(f"hydra.sweep.dir={sweep_dir} holds no trainrun sweep (no multirun.yaml); "
                              "give a new or empty directory (nothing was changed)")
        return False
    try:
        saved = OmegaConf.load(record)
        name, task = OmegaConf.select(saved, "hydra.job.name"), OmegaConf.select(saved, "hydra.overrides.task")
    except Exception as e:  # unparsable YAML, or not a mapping
        raise ConfigError(f"{record} is unreadable ({' '.join(str(e).split())[:100]}); "
                          "give another hydra.sweep.dir (nothing was changed)") from None
    if name != "trainrun" or task is None:
        raise ConfigError(f"{record} is not a trainrun sweep's record; give another hydra.sweep.dir "
                          "(nothing was changed)")
    before, now = set(map(str, task)), set(task_overrides)
    if before != now:
        added, dropped = sorted(now - before), sorted(before - now)
        key = lambda o: o.split("=", 1)[0]  # noqa: E731
        differs = (f"{added[0]} here, {next((d for d in dropped if key(d) == key(added[0])), 'not set')} there"
                   if added else f"{dropped[0]} there, not set here")
        raise ConfigError(f"hydra.sweep.dir={sweep_dir} holds a different sweep: {differs}; repeat its command "
                          "to resume it, or give another hydra.sweep.dir (nothing was changed)")
    return True


FINISHED, INTERRUPTED, NEW = "finished", "interrupted", "new"


def run_state(run_dir: Path) -> str:
    """finished: it wrote metrics.json (completed, stopped early, diverged or pruned) or error.json (failed:
    kept as failed, delete the directory to run it again); interrupted: it has a checkpoint, or was killed
    before its first one (trainer.resume then starts it over in its own directory); new: never started."""
    if ended(run_dir) or (run_dir / "error.json").is_file():
        return FINISHED
    if (run_dir / "last.pt").is_file() or (run_dir / ".hydra" / "overrides.yaml").is_file():
        return INTERRUPTED
    return NEW


def ended(run_dir: Path) -> bool:
    """Whether the run wrote metrics.json, and not because Ctrl-C or SIGTERM stopped it (a resume continues
    that one from its checkpoint)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("stop_reason") != "interrupted"
    except (ValueError, AttributeError):  # damaged: the summary reports it, nothing resumes it
        return True


def found_line(states: list[str]) -> str:
    counts = Counter(states)
    return (f"{counts[FINISHED]} finished, {counts[INTERRUPTED]} interrupted (resuming), "
            f"{counts[NEW]} to run")


@contextlib.contextmanager
def holding(run_dir: Path):
    """Held by the process that trains in `run_dir`, released when it ends, however it ends (the kernel drops a
    dead process's locks): how a resumed search tells a trial whose process died from one still running."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # another process holds it (a resume of a live run is refused elsewhere)
    try:
        yield
    finally:
        os.close(fd)


def held(run_dir: Path) -> bool:
    """Whether a live process trains in `run_dir` now."""
    if not run_dir.is_dir():
        return False
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def claim(sweep_dir: Path) -> None:
    """Make the sweep directory, or say in one line why it cannot be."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        probe = sweep_dir / ".trainrun-write-check"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write the sweep directory {sweep_dir}: {e.strerror or e}") from None


def stage_params(stage: dict, size: str | None) -> dict[str, str]:
    """A study stage's overrides at `study.size`: a value given per size (`{small: digits, full: mnist1d}`) is
    that size's; a size it does not name leaves the key out."""
    out = {}
    for key, value in stage["params"].items():
        if isinstance(value, dict):
            if size not in value:
                continue
            value = value[size]
        out[key] = str(value)
    return out


STAGE_RESULT = re.compile(r"\{(\w+)\.([\w./]+?)(?:\*([0-9.eE+-]+))?\}")


def fill(text: str, stages: dict) -> str:
    """A study stage's value with an earlier stage's results in: `{find.suggested_lr*0.1}` (a value of that
    stage's first run's metrics.json, times 0.1) or `{pretrain.dir}` (its run directory)."""
    def result(match) -> str:
        stage, key, factor = match.groups()
        if stage not in stages:
            raise ConfigError(f"study stage value {match.group(0)}: no earlier stage named {stage}")
        run_dir = stages[stage]
        if key == "dir":
            return str(run_dir)
        metrics = run_dir / "metrics.json"
        value = json.loads(metrics.read_text()).get(key) if metrics.is_file() else None
        if value is None:
            raise ConfigError(f"study stage {stage} gave no {key} ({run_dir}): the next stage cannot start")
        return f"{float(value) * float(factor):.4g}" if factor else str(value)

    return STAGE_RESULT.sub(result, text)


def hparam_value(text: str):
    """An override's value as HParams compares it: a number, a boolean, or the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


# the end-of-run values every run logs (logger.summary_tag): the best epoch's, and the best weights' on test
SUMMARY_METRICS = [("summary/test_acc", "test accuracy"), ("summary/test_mae", "test mean absolute error"),
                   ("summary/test_loss", "test loss"), ("summary/val_loss_at_best_epoch", "val loss, best epoch"),
                   ("summary/val_acc_at_best_epoch", "val accuracy, best epoch"),
                   ("summary/val_mae_at_best_epoch", "val mean absolute error, best epoch")]


def write_experiment(sweep_dir: Path, space: dict) -> None:
    """The sweep's one HParams experiment, in an event file of the sweep directory: the swept keys (and
    only those: what is constant is not compared), with their domains: the values of a grid or a choice,
    a [low, high] pair of an interval. Each run then writes its session alone (logger.hparams)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    params = []
    for key, domain in space.items():
        if domain is None:  # not known when the sweep starts (a study stage's value from an earlier stage)
            params.append(hp.HParam(key))
            continue
        if isinstance(domain, tuple):  # an interval
            low, high = domain
            kind = hp.IntInterval if isinstance(low, int) and isinstance(high, int) else hp.RealInterval
            params.append(hp.HParam(key, kind(low, high)))
            continue
        values = [hparam_value(str(v)) for v in domain]
        if len({type(v) for v in values}) > 1:  # mixed: compared as text
            values = [str(v) for v in domain]
        params.append(hp.HParam(key, hp.Discrete(sorted(set(values), key=str))))
    metrics = [hp.Metric(tag, display_name=name) for tag, name in SUMMARY_METRICS]
    writer = EventFileWriter(str(sweep_dir))  # TensorBoard's own: the sweeper need not import torch (~3 s)
    writer.add_event(Event(wall_time=time.time(), summary=hp.hparams_config_pb(params, metrics)))
    writer.close()


# ---------------------------------------------------------------------------------------------
# A sweep's runs as they ended: the one reader of their files (the summary and the studies read these)

@dataclass
class RunResult:
    run_dir: Path
    overrides: list[str]
    state: str  # complete | pruned | diverged | interrupted | failed | damaged (its metrics.json unreadable)
    metrics: dict = field(default_factory=dict)
    error: str = ""

    def value(self, key: str) -> float:
        v = self.metrics.get(key)
        return v if isinstance(v, (int, float)) and math.isfinite(v) else math.nan

    @property
    def label(self) -> str:
        return " ".join(self.overrides) or "(defaults)"


def run_result(run_dir: Path, overrides: list[str]) -> RunResult:
    """What one run of a sweep left: its error.json (failed), or its metrics.json (ended), or neither (killed)."""
    if (run_dir / "error.json").is_file():
        error = runfiles.read_json(run_dir / "error.json", ("error",))["error"]
        return RunResult(run_dir, overrides, "failed", error=str(error))
    ended = runfiles.metrics(run_dir)
    if ended is None:
        return RunResult(run_dir, overrides, "failed", error="no metrics.json (killed?)")
    state = {"diverged": "diverged", "interrupted": "interrupted", "pruned": "pruned"}.get(
        ended.get("stop_reason"), "complete")
    return RunResult(run_dir, overrides, state, ended)


def collect(sweep_dir: Path) -> list[RunResult]:
    results = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=lambda p: run_order(p.parents[1])):
        run_dir = overrides_file.parents[1]
        # trainer.pruning.* is the search's bookkeeping (storage, trial number), not a choice
        overrides = [str(o) for o in OmegaConf.load(overrides_file) if not str(o).startswith("trainer.pruning.")]
        try:
            results.append(run_result(run_dir, overrides))
        except runfiles.DamagedRun as damaged:
            results.append(RunResult(run_dir, overrides, "damaged", error=str(damaged)))
    return results
