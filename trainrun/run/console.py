"""What a run shows on the terminal (rich): the composed choices, live progress, a final table."""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..config import OPTION_GROUPS, values_of

REFRESH_S = 0.1


class RunConsole:
    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress: Progress | None = None
        self.live_text = ""

    def header(self, cfg, device, data, model, run_dir: Path) -> None:
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        choices = "  ".join(f"[bold]{g}[/]={getattr(cfg, g).kind}" for g in OPTION_GROUPS)
        extras = [f"[bold]loss[/]={cfg.loss.kind if cfg.loss else 'auto'}",
                  f"[bold]regularization[/]={','.join(k for k, v in values_of(cfg.regularization).items() if v) or 'none'}",
                  f"[bold]augmentation[/]={','.join(cfg.augmentation) or 'none'}"]
        split = f"{len(data.train)} train / {len(data.val)} val / {len(data.test)} test"
        body = (f"{choices}\n{'  '.join(extras)}\n"
                f"[bold]device[/]={device}  [bold]precision[/]={cfg.trainer.precision}  "
                f"[bold]lr[/]={cfg.optimizer.lr:g}  [bold]batch[/]={cfg.data.batch_size}  "
                f"[bold]epochs[/]={cfg.trainer.epochs}  [bold]seed[/]={cfg.trainer.seed}\n"
                f"{data.task}, input {tuple(data.input_shape)}, {split}; "
                f"{params:,} parameters ({trainable:,} trainable)\n[bold]data in[/] {data.home}\n"
                f"[bold]inputs[/] {statistics(data)}\n[dim]{run_dir}[/]")
        self.console.print(Panel(body, title="trainrun", title_align="left", border_style="cyan"))

    def start(self, epochs: int, steps_per_epoch: int, done: int = 0) -> None:
        self.epochs = epochs
        self.progress = Progress(
            TextColumn("[bold cyan]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=True)
        self.task = self.progress.add_task("train", total=epochs * steps_per_epoch, completed=done,
                                           epoch=done // steps_per_epoch + 1, stats="")
        self.steps, self.stats, self.shown_at = done, "", time.monotonic()
        self.progress.start()

    def step(self, loss: float | None) -> None:
        """One optimizer step; the bar takes it at most every REFRESH_S (steps can be far faster than a screen)."""
        self.steps += 1
        if loss is not None:
            self.stats = f"loss {loss:.4f} {self.live_text}"
        now = time.monotonic()
        if now - self.shown_at >= REFRESH_S:
            self.progress.update(self.task, completed=self.steps, stats=self.stats)
            self.shown_at = now

    def epoch(self, epoch: int, values: dict, improved: bool) -> None:
        shown = [f"{k} {v:.4f}" for k, v in values.items() if k.startswith(("val", "train/"))]
        self.live_text = " ".join(s for s in shown if s.startswith("val/"))
        self.progress.update(self.task, completed=self.steps, epoch=min(epoch + 1, self.epochs))
        mark = "[green]*[/]" if improved else " "
        # soft_wrap: one line per epoch however narrow the terminal or log (a SLURM log, `| tee`) is
        self.console.print(f"epoch {epoch:>3} {mark} " + "  ".join(shown) + f"  [dim]{values['time/epoch_s']:.2f}s[/]",
                           soft_wrap=True)

    def note(self, message: str, error: bool = False) -> None:
        # escaped: a list override ([conv1,bn1]) in a message is text, not rich markup
        self.console.print(f"[bold {'red' if error else 'yellow'}]{escape(message)}[/]", soft_wrap=True)  # paths stay copyable

    def stopped(self, message: str, error: bool) -> None:
        """Why the run stopped (early stopping's patience, a divergence and what to try, an interruption)."""
        self.note(message, error)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    def summary(self, metrics: dict, run_dir: Path, stop_message: str) -> None:
        table = Table(title="result", title_justify="left", show_header=True, header_style="bold")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        self.console.print(table)
        self.console.print(f"run directory: {run_dir}", soft_wrap=True)
        self.console.print(f"curves:        [bold]tensorboard --logdir {run_dir}[/]", soft_wrap=True)


class LineConsole(RunConsole):
    """A run of a sweep: no header box and no epoch lines (forty lines a run made a sweep unreadable in a
    terminal), only notes and one line when it ends; the sweep's summary follows. `logger.console=full` shows
    every run whole."""

    def __init__(self, monitor: str, console: Console | None = None):
        super().__init__(console)
        self.monitor = monitor

    def header(self, *args, **kwargs) -> None:
        pass

    def start(self, *args, **kwargs) -> None:
        pass

    def step(self, loss: float | None) -> None:
        pass

    def epoch(self, *args, **kwargs) -> None:
        pass

    def stopped(self, message: str, error: bool) -> None:
        if error:  # a divergence's advice, an interruption's resume command; the end line says the rest
            self.note(message, error)

    def summary(self, metrics: dict, run_dir: Path, stop_message: str) -> None:
        value = metrics.get(self.monitor)
        shown = f"{value:.4g}" if isinstance(value, float) else "nan" if value is None else str(value)
        self.console.print(f"run {escape(run_dir.name)}: {metrics.get('stop_reason')}, {self.monitor} {shown} at epoch "
                           f"{metrics.get('best_epoch')} of {metrics.get('epochs_run')}, "
                           f"{metrics.get('wall_time_s', 0):.1f} s", soft_wrap=True, highlight=False)


class StackDisplay:
    """A stack on a terminal: one line per run (its epoch, its best monitored value, training or how it ended),
    redrawn each epoch above the runs' end lines; gone when the stack ends, the sweep's summary follows."""

    def __init__(self, runs: list, console: Console | None = None):
        from rich.live import Live

        self.runs, self.console = runs, console or Console()
        self.live = Live(self.table(), console=self.console, transient=True, auto_refresh=False) \
            if self.console.is_terminal else None
        if self.live:
            self.live.start()

    def table(self) -> Table:
        monitor = self.runs[0].parts.stopper.monitor
        table = Table(box=None, pad_edge=False, title=f"a stack of {len(self.runs)} runs", title_justify="left")
        for column in ("run", "epoch", f"best {monitor}", "state"):
            table.add_column(column, justify="right" if column != "run" else "left")
        for run in self.runs:
            best = run.parts.stopper.best
            state = run.stop.reason if run.stop else "done" if run.completed else "training"
            table.add_row(escape(run.run_dir.name), f"{run.epoch}/{run.parts.cfg.trainer.epochs}",
                          "" if best != best else f"{best:.4g}", state)
        return table

    def update(self) -> None:
        if self.live:
            self.live.update(self.table(), refresh=True)

    def stop(self) -> None:
        if self.live:
            self.live.stop()


class SilentConsole:
    """What ranks other than 0 show: nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def statistics(data) -> str:
    """Which normalization the inputs get, and whose statistics: the header's line."""
    record = (data.fitted or {}).get("normalize", {})
    kind = record.get("kind", "none")
    if kind == "none":
        return "not normalized (data.normalize=none)"
    if "source" in record:
        return (f"{kind} with the statistics of {record['source']} (as those weights expect; "
                "data.normalize=... fits this run's own)")
    return f"{kind} with this run's train-split statistics"
