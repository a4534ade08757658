"""A finished run, opened for use: its config, its best weights in the model they were trained in, and the
preprocessing fitted on its train split (preprocessing.json). trainrun-predict and trainrun-export start here;
neither needs the training data.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..check import check
from ..config import Config, typed, upgraded
from ..errors import ConfigError, DataError
from ..registry import NORMALIZERS


@dataclass
class TrainedRun:
    run_dir: Path
    cfg: Config
    record: dict  # preprocessing.json
    model: torch.nn.Module  # in eval mode, on the CPU
    normalize: object  # data.normalize's fitted statistics (normalize.Normalizer)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.record["input_shape"])

    @property
    def classification(self) -> bool:
        return self.record["task"] == "classification"

    @property
    def class_names(self) -> list[str]:
        return self.record["class_names"] or [str(i) for i in range(self.record["num_outputs"])]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs (uint8 pixels, or features in the saved order) as the model saw them in training."""
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        return self.normalize(x)


def open_run(path: str, data_overrides: list[str] = (), loads_data: bool = False) -> TrainedRun:
    """The run at `path` (a run directory, or a sweep's: its best finished run by the sweep's objective), with
    `data.*` overrides merged into its config and checked as the command line checks a run's (its data files
    too where it `loads_data`)."""
    run_dir = Path(path).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"{path}: no such directory (expected a run's directory, e.g. outputs/<date>/<time>)")
    if (run_dir / "multirun.yaml").is_file():
        run_dir = best_run(run_dir)
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{path} is not a trainrun run (no .hydra/config.yaml)")
    if not (run_dir / "best.pt").is_file():
        raise ConfigError(f"{run_dir} has no best.pt: the run was stopped before its first epoch ended; "
                          f"finish it with trainrun trainer.resume={run_dir}")
    if not (run_dir / "preprocessing.json").is_file():
        raise ConfigError(f"{run_dir} has no preprocessing.json (trained by an older trainrun, which did not save "
                          "its input statistics): train it again to predict with it")
    foreign = [o for o in data_overrides if not o.lstrip("+~").startswith("data.")]
    if foreign:
        raise ConfigError(f"{foreign[0]}: only data.* may be given here (the model and its training are the run's)")
    try:  # onto the schema, so a key added since the run was saved takes its default; then plain again, so an
        # unknown override key is named by check() rather than raised by OmegaConf
        cfg = OmegaConf.create(OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(Config),
                                                                      upgraded(OmegaConf.to_container(
                                                                          OmegaConf.load(config_file))))))
    except OmegaConfBaseException as e:
        raise ConfigError(f"{config_file} is not a config this trainrun reads ({' '.join(str(e).split())[:150]})") \
            from None
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in data_overrides]))
    cfg.model.weights = None  # the trained weights replace what the run started from, which may be gone by now
    check(cfg, files=loads_data)
    cfg = typed(cfg)
    record = json.loads((run_dir / "preprocessing.json").read_text())
    normalize = NORMALIZERS[record["normalize"]["kind"]].builder().restored(record["normalize"])
    return TrainedRun(run_dir, cfg, record, restore_model(cfg, record, run_dir / "best.pt"), normalize)


def best_run(sweep_dir: Path) -> Path:
    """A sweep's best complete run by its objective (the monitored metric, in its direction)."""
    from ..sweeps.summary import objective, ranked
    from ..sweeps.sweep import collect

    monitor, mode = objective(sweep_dir)
    complete = [r for r in ranked(collect(sweep_dir), monitor, mode) if r.state == "complete"]
    if not complete:
        raise ConfigError(f"{sweep_dir}: no run of this sweep finished; nothing to use")
    return complete[0].run_dir


def restore_model(cfg: Config, record: dict, weights: Path) -> torch.nn.Module:
    """The run's architecture, built as in training from the saved input shape and outputs, with its best weights."""
    from ..data import Data, Split
    from ..data.normalize import Identity
    from ..options.model import build_model
    from ..run.checkpoint import load

    empty = Split(torch.zeros(0, *record["input_shape"]), torch.zeros(0, dtype=torch.int64))
    data = Data(empty, empty, empty, tuple(record["input_shape"]), record["task"], record["num_outputs"],
                Identity(None), torch.device("cpu"), class_names=record["class_names"])
    cfg.model.freeze, cfg.model.head_only = None, False  # all of it is trained now
    model, _ = build_model(cfg, data)
    model.load_state_dict(load(weights)["model"])
    return model.eval()


class Arguments(argparse.ArgumentParser):
    """trainrun-predict's and trainrun-export's flags: a bad one is said in two lines, not a usage screen."""

    def error(self, message: str):
        print(f"error: {message}\nsee {self.prog} --help", file=sys.stderr)
        sys.exit(2)

    def run(self, command: Callable[[argparse.Namespace], None], argv: list[str] | None) -> None:
        """The command on the parsed flags (anywhere among the positionals); bad input: one line, exit 2."""
        try:
            command(self.parse_intermixed_args(sys.argv[1:] if argv is None else argv))
        except (ConfigError, DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
