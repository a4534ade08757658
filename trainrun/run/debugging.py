"""Debugging a run from inside its loop: `trainer.overfit_batches=N` (can the model fit a few batches at all?)
and `trainer.profile=N` (where a step's time goes), as Lightning's overfit_batches and profiler offer them.
`trainer.fast_dev_run` runs around the loop: fast_dev_run.py."""
from __future__ import annotations

from pathlib import Path

import torch

from ..native import NativeStderr

FITS_BELOW = 0.05  # a training loss this low on the batches it sees every epoch: the model can fit them
PROFILE_WARMUP = 2  # steps before the profiled ones: the first steps allocate and warm caches
KINETO_LINES = ("USDT:", "ERROR:", "WARNING:")  # the profiler's own lines on starting and stopping (and no GPU)


def overfit_verdict(metrics: dict, batches: int, samples: int, ui) -> dict:
    """What overfitting N batches showed, said and recorded: the lowest training loss reached, and whether it
    came near zero; a model that cannot fit the samples it sees every epoch has a bug."""
    loss = metrics.get("train/loss")
    fits = loss is not None and loss < FITS_BELOW
    what = f"{batches} batch{'es' if batches > 1 else ''} ({samples} samples)"
    if fits:
        ui.note(f"overfit_batches={batches}: the training loss reached {loss:.4g} (below {FITS_BELOW}): the model "
                f"can fit {what}")
    else:
        shown = "NaN" if loss is None else f"{loss:.4g}"
        ui.note(f"overfit_batches={batches}: the training loss only reached {shown} (not below {FITS_BELOW}) on "
                f"{what} it saw every epoch: a model that cannot fit them has a bug (the loss against the labels, "
                "frozen or detached layers, a learning rate too small), or needs more epochs", error=True)
    return {"overfit_batches": batches, "overfit_fits": fits}


class StepProfiler:
    """`trainer.profile=N`: torch.profiler over N training steps after PROFILE_WARMUP, then profile.json (a
    trace that Perfetto and chrome://tracing open) and profile.txt (the operators by self time) in the run
    directory. The run trains on as usual; N = 0 costs nothing."""

    def __init__(self, steps: int, run_dir: Path, ui):
        self.steps, self.run_dir, self.ui, self.profiler = steps, run_dir, ui, None
        self.stepped = 0
        if steps:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(
                activities=activities, on_trace_ready=self.write,
                schedule=torch.profiler.schedule(wait=0, warmup=PROFILE_WARMUP, active=steps, repeat=1))
            # the profiler's native lines come at its start, its steps and its stop: held back for the whole window
            self.native = NativeStderr(KINETO_LINES).__enter__()
            self.profiler.start()

    def step(self) -> None:
        if self.profiler is not None:
            self.stepped += 1
            self.profiler.step()

    def write(self, profiler) -> None:
        """The trace and the table, when the window is complete or the run ended inside it (the steps it got)."""
        profiled = min(self.steps, self.stepped - PROFILE_WARMUP)
        if profiled <= 0:  # stopped within the warm-up: stop() says so
            return
        trace, table = self.run_dir / "profile.json", self.run_dir / "profile.txt"
        profiler.export_chrome_trace(str(trace))
        table.write_text(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30) + "\n")
        short = f" (the run ended before the {self.steps} asked)" if profiled < self.steps else ""
        self.ui.note(f"profile of {profiled} steps{short}, after {PROFILE_WARMUP} of warm-up: {trace} (open in "
                     f"https://ui.perfetto.dev or chrome://tracing) and {table} (operators by self time)")
        self.stop()

    def stop(self) -> None:
        if self.profiler is not None:
            profiler, self.profiler = self.profiler, None
            profiler.stop()  # inside the window: write() gets the steps profiled so far
            self.native.__exit__(None, None, None)
            if self.stepped <= PROFILE_WARMUP:
                self.ui.note(f"trainer.profile={self.steps}: the run ended within the {PROFILE_WARMUP} warm-up steps; "
                             "nothing was profiled")
