"""A finished run, opened for use: its config, its best weights in the model they were trained in, and the
preprocessing fitted on its train split (preprocessing.json). trainrun-predict and trainrun-export start here;
neither needs the training data.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .. import runfiles
from ..check import check
from ..config import Config, typed, upgraded
from ..errors import ConfigError, DataError
from ..registry import NORMALIZERS
from ..runfiles import DamagedRun
from ..sweeps.summary import best_run


@dataclass
class TrainedRun:
    run_dir: Path
    cfg: Config
    record: dict  # preprocessing.json
    model: torch.nn.Module  # in eval mode, on the CPU
    normalize: object  # data.normalize's fitted statistics (normalize.Normalizer)
    notes: list[str]  # said once by predict and export: a run that did not finish, the checkpoint used

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.record["input_shape"])

    @property
    def classification(self) -> bool:
        return self.record["task"] == "classification"

    @property
    def class_names(self) -> list[str]:
        return runfiles.class_names(self.record) or [str(i) for i in range(self.record["num_outputs"])]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs (uint8 pixels, or features in the saved order) as the model saw them in training."""
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        return self.normalize(x)


def open_run(path: str, data_overrides: list[str] = (), loads_data: bool = False,
             checkpoint: str = "best") -> TrainedRun:
    """The run at `path` (a run directory, or a sweep's: its best finished run by the sweep's objective), with
    `data.*` overrides merged into its config and checked as the command line checks a run's (its data files
    too where it `loads_data`), and the weights of its `checkpoint` (best.pt, or last.pt: the last epoch's)."""
    run_dir = Path(path).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"{path}: no such directory (expected a run's directory, e.g. outputs/<date>/<time>)")
    if (run_dir / "multirun.yaml").is_file():
        run_dir = best_run(run_dir)
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{path} is not a trainrun run (no .hydra/config.yaml)")
    weights, notes = weights_file(run_dir, checkpoint)
    record = runfiles.preprocessing(run_dir)
    foreign = [o for o in data_overrides if not o.lstrip("+~").startswith("data.")]
    if foreign:
        raise ConfigError(f"{foreign[0]}: only data.* may be given here (the model and its training are the run's)")
    cfg = saved_config(config_file)
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in data_overrides]))
    cfg.model.weights = None  # the trained weights replace what the run started from, which may be gone by now
    check(cfg, files=loads_data)
    cfg = typed(cfg)
    normalize = NORMALIZERS[record["normalize"]["kind"]].builder().restored(record["normalize"])
    model, epoch = restore_model(cfg, record, weights)
    averaged = [f"last.pt holds the run's {cfg.averaging.kind} average: it is used"] \
        if checkpoint == "last" and cfg.averaging.kind != "none" else []
    return TrainedRun(run_dir, cfg, record, model, normalize, [*notes(epoch), *averaged])


def averaged_or_own(saved: dict) -> dict:
    """A checkpoint's weights: in last.pt of a run with averaging=ema|swa, the average (what that run tests and
    keeps), else the model's own."""
    average = saved.get("averaging")
    return average["model"] if isinstance(average, dict) and average.get("count") else saved["model"]


def weights_file(run_dir: Path, checkpoint: str) -> tuple[Path, Callable[[int], list[str]]]:
    """The checkpoint to use, and what to say of it once its epoch is known: a run that did not finish is said
    so; a missing file is named with what the run still has."""
    path = run_dir / f"{checkpoint}.pt"
    ended = runfiles.metrics(run_dir)
    if not path.is_file():
        other = run_dir / ("last.pt" if checkpoint == "best" else "best.pt")
        if ended is None and not other.is_file():
            raise ConfigError(f"{run_dir} has no {checkpoint}.pt: the run was stopped before its first epoch ended; "
                              f"finish it with trainrun trainer.resume={run_dir}")
        offer = f"; its {other.name} is there: add --checkpoint {other.stem}" if other.is_file() else ""
        raise ConfigError(f"{run_dir} has no {checkpoint}.pt (deleted?){offer}")
    if ended is not None:
        return path, lambda epoch: [f"weights: {path.name}, epoch {epoch}"] if checkpoint != "best" else []
    return path, lambda epoch: [f"the run did not finish (no metrics.json: killed, or still training); its {path.name} "
                                f"from epoch {epoch} is used"]


def saved_config(config_file: Path) -> DictConfig:
    """A run's .hydra/config.yaml onto the schema, so a key added since the run was saved takes its default; then
    plain again, so an unknown override key is named by check() rather than raised by OmegaConf."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(config_file))
        if not isinstance(saved, dict):
            raise DamagedRun(f"{config_file} is damaged (not a mapping of keys); {runfiles.RESTORE}")
        lacking = [group for group in ("data", "model", "trainer") if not isinstance(saved.get(group), dict)]
        if lacking:
            raise DamagedRun(f"{config_file} is damaged (it has no {', '.join(lacking)}); {runfiles.RESTORE}")
        return OmegaConf.create(OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(Config), upgraded(saved))))
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as e:
        raise DamagedRun(f"{config_file} is not a config this trainrun reads ({' '.join(str(e).split())[:150]}); "
                         f"{runfiles.RESTORE}") from None


def restore_model(cfg: Config, record: dict, weights: Path) -> tuple[torch.nn.Module, int]:
    """The run's architecture, built as in training from the saved input shape and outputs, with the weights of
    `weights`; and the epoch they are from."""
    from ..data import Data, Split
    from ..data.normalize import Identity
    from ..options.model import build_model

    empty = Split(torch.zeros(0, *record["input_shape"]), torch.zeros(0, dtype=torch.int64))
    data = Data(empty, empty, empty, tuple(record["input_shape"]), record["task"], record["num_outputs"],
                Identity(None), torch.device("cpu"), class_names=record.get("class_names"))
    cfg.model.freeze, cfg.model.head_only = None, False  # all of it is trained now
    model, _ = build_model(cfg, data)
    saved = runfiles.read_checkpoint(weights)
    if not isinstance(saved, dict) or "model" not in saved:
        raise DamagedRun(f"{weights} is damaged (not a trainrun checkpoint: no model weights); {runfiles.RESTORE}")
    try:
        model.load_state_dict(averaged_or_own(saved))
    except (RuntimeError, TypeError, AttributeError, KeyError) as e:
        raise DamagedRun(f"{weights} does not fit the run's own model ({' '.join(str(e).split())[:120]}); "
                         f"{runfiles.RESTORE}") from None
    return model.eval(), saved.get("epoch", 0)


class Arguments(argparse.ArgumentParser):
    """trainrun-predict's and trainrun-export's flags: a bad one is said in two lines, not a usage screen."""

    def add_run(self) -> None:
        """RUN and --checkpoint, which predict and export both take."""
        self.add_argument("run", help="a run directory (outputs/<date>/<time>) or a sweep's (its best run)")
        self.add_argument("--checkpoint", choices=("best", "last"), default="best",
                          help="the weights: best.pt (default: the best epoch's) or last.pt (the last epoch's)")

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
