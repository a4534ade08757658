"""`trainer.fast_dev_run`: every stage of a run once, in seconds, before a long run (Lightning's fast_dev_run):
one training step, one batch of validation and of test, the checkpoints written and read back, a prediction
through the saved run; in a scratch directory that goes."""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from ..runfiles import read_checkpoint
from ..use.inputs import split_inputs
from ..use.predict import predict
from ..use.trained import open_run
from .console import SilentConsole
from .trainer import train


def fast_dev_run(cfg, ui) -> None:
    """One training step, one batch of validation and of test, the checkpoints written and read back into the
    model, and a prediction on one batch through the saved run, each said in a line; in a temporary directory,
    removed at the end. Any stage that fails says so in one line, as a run would."""
    started = time.perf_counter()
    quick = OmegaConf.merge(cfg, {"trainer": {"epochs": 1, "max_steps": 1, "fast_dev_run": True,
                                              "checkpoint": {"save_best": True, "save_last": True}}})
    with tempfile.TemporaryDirectory(prefix="trainrun-fast-dev-run-") as scratch:
        run_dir = Path(scratch)
        (run_dir / ".hydra").mkdir()  # the record predict rebuilds the run from, as Hydra writes it for a run
        OmegaConf.save(quick, run_dir / ".hydra" / "config.yaml", resolve=True)
        metrics = train(quick, run_dir, SilentConsole())
        ui.note(f"train: {metrics['steps']} step, train/loss {metrics['train/loss']:.4g}")
        ui.note("validate: one batch, " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("val/")))
        ui.note("test: one batch, " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("test/")))
        saved = {name: read_checkpoint(run_dir / name) for name in ("last.pt", "best.pt")}
        run = open_run(str(run_dir), checkpoint="last")  # the saved config, preprocessing and weights, rebuilt
        run.model.load_state_dict(saved["best.pt"]["model"])
        ui.note(f"checkpoint: last.pt and best.pt written and read back into the model "
                f"({len(saved['last.pt']['model'])} tensors)")
        inputs = split_inputs(run)
        first = next(iter(inputs.batches()))
        predicted = predict(run, dataclasses.replace(inputs, count=len(first[0]), batches=lambda: iter([first])))
        ui.note(f"predict: {len(predicted.ids)} inputs of the test split, through the saved run")
    ui.note(f"fast_dev_run: every stage ran in {time.perf_counter() - started:.1f} s; no run directory is kept")
