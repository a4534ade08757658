"""Why a run stops, decided in one place: a signal, a non-finite loss, the search's pruner, early stopping.

Each check returns a `Stop` (its reason, as metrics.json records it, and a message for the user) or None.
Under several processes every rank reaches the same decision at the same step (World.any / World.agree).
"""
from __future__ import annotations

import contextlib
import math
import signal
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple


class Stop(NamedTuple):
    reason: str  # interrupted | diverged | pruned | early_stopping
    message: str


@dataclass
class EarlyStopping:
    """Tracks the best value of the monitored metric; `should_stop` after `patience` evaluations
    in a row without an improvement of more than `min_delta`."""

    monitor: str
    mode: str
    patience: int
    min_delta: float
    enabled: bool = True
    best: float = math.nan
    best_epoch: int = 0
    bad_evals: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an evaluation; True when it is the best so far."""
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if self.best_epoch == 0 or better:
            self.best, self.best_epoch, self.bad_evals = value, epoch, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.enabled and self.bad_evals >= self.patience

    def reason(self) -> str:
        return (f"{self.monitor} has not improved by more than {self.min_delta:g} for {self.bad_evals} evaluations "
                f"(best {self.best:.4g} at epoch {self.best_epoch})")

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class StopRules:
    def __init__(self, stopper: EarlyStopping, stop_on_nonfinite: bool, lr: float, trial: Any, world, ui, run_dir):
        self.stopper, self.stop_on_nonfinite, self.lr, self.trial, self.world, self.ui, self.run_dir = (
            stopper, stop_on_nonfinite, lr, trial, world, ui, run_dir)
        self.signal: int | None = None

    def diverged(self, value: float, epoch: int, step: int) -> Stop:
        if step == 1:  # the first step's loss comes before any update: no learning rate made it
            return Stop("diverged", f"stopped at epoch {epoch}, step 1: the loss is {value} before any update, so "
                                    "not from the learning rate: look for NaN or infinity in the data (a Dataset's "
                                    "items), an initialization that overflows, or the precision")
        return Stop("diverged", f"stopped at epoch {epoch}, step {step}: the loss is {value} (diverged). "
                                f"Try a lower learning rate (optimizer.lr={self.lr:g} now), "
                                "gradient clipping (regularization=clip) or a normalization layer")

    def after_step(self, loss, epoch: int, step: int, *, read_loss: bool,
                   checkpoint_due: bool) -> tuple[Stop | None, bool]:
        """A signal, or a non-finite loss (read only when `read_loss`: on a GPU reading it is a host sync).
        Returns the stop and whether to checkpoint now (on a signal, or when a checkpoint is due on any rank)."""
        nonfinite = read_loss and self.stop_on_nonfinite and not math.isfinite(float(loss))
        signalled = self.signal is not None
        if self.world.size > 1:  # every rank stops, and checkpoints, at the same step
            nonfinite, signalled, checkpoint_due = self.world.any(nonfinite, signalled, checkpoint_due)
            if signalled and self.signal is None:
                self.signal = signal.SIGTERM
        if nonfinite:
            return self.diverged(float(loss), epoch, step), False
        if signalled:
            name = signal.Signals(self.signal).name
            return Stop("interrupted", f"{name}: stopped at epoch {epoch}, step {step}; checkpoint saved. "
                                       f"Resume with: trainrun trainer.resume={self.run_dir}"), True
        return None, checkpoint_due

    def after_epoch(self, values: dict, epoch: int) -> tuple[Stop | None, bool]:
        """The monitored metric: divergence, then the pruner, then early stopping. Returns the stop and
        whether this epoch is the best so far."""
        monitor = self.stopper.monitor
        if monitor not in values:  # not evaluated this epoch (trainer.eval_every)
            return None, False
        value = values[monitor]
        if not math.isfinite(value) and self.stop_on_nonfinite:
            return self.diverged(value, epoch, 0), False
        improved = self.stopper.update(value, epoch)
        prune = False
        if self.trial is not None:  # rank 0 reports; every rank stops
            self.trial.report(value, epoch)
            prune = self.trial.should_prune()
        if self.world.agree(prune):
            return Stop("pruned", f"pruned by the search at epoch {epoch}: {monitor} is not promising"), improved
        if self.world.agree(self.stopper.should_stop):
            return Stop("early_stopping", "early stopping: " + self.stopper.reason()), improved
        return None, improved

    @contextlib.contextmanager
    def catching_signals(self):
        """Ctrl-C or SIGTERM: finish the current step, checkpoint, stop. A second Ctrl-C stops at once, except
        under torchrun: its agent forwards the Ctrl-C it got too, and stops the processes itself if they hang."""
        def request_stop(signum, frame):
            if self.signal is not None:
                if signum == signal.SIGINT and self.world.size == 1:
                    raise KeyboardInterrupt
                return
            self.signal = signum
            self.ui.note("stopping after this step" + (" (Ctrl-C again to stop at once)" if self.world.size == 1 else ""))

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread (some launchers): keep the default handlers
            pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
