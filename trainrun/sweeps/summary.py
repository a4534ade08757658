"""The summary of a sweep: every run's overrides, state and metrics, sorted by the objective.

Printed at the end of every `trainrun -m ...` (a Hydra callback) and written beside the runs as
summary.csv and summary.md; `trainrun-report <sweep dir>` shows it again later. Reads only what the
runs wrote (.hydra/overrides.yaml, metrics.json, error.json), so it needs no torch.
"""
from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import runfiles
from ..config import direction
from ..errors import ConfigError
from ..registry import lazy
from .sweep import RunResult, collect, run_id


def varying(results: list[RunResult]) -> list[str]:
    """The override keys whose values differ between the runs, in the order the runs give them."""
    keys: dict[str, set] = {}
    for r in results:
        for o in r.overrides:
            keys.setdefault(o.split("=", 1)[0], set())
    values = [dict(o.split("=", 1) for o in r.overrides if "=" in o) for r in results]
    return [k for k in keys if len({v.get(k) for v in values}) > 1]


def objective(sweep_dir: Path) -> tuple[str, str]:
    """The monitored metric and its direction, from the sweep's config."""
    cfg = OmegaConf.load(sweep_dir / "multirun.yaml") if (sweep_dir / "multirun.yaml").is_file() else OmegaConf.create()
    monitor = OmegaConf.select(cfg, "trainer.early_stopping.monitor", default="val/loss")
    mode = OmegaConf.select(cfg, "trainer.early_stopping.mode", default="auto")
    return monitor, direction(monitor, mode)


def ranked(results: list[RunResult], monitor: str, mode: str) -> list[RunResult]:
    """Complete runs best first, then the diverged, interrupted and failed ones."""
    def key(r: RunResult):
        v = r.value(monitor)
        return (r.state != "complete", math.isnan(v), -v if mode == "max" else v)
    return sorted(results, key=key)


def test_metric(results: list[RunResult]) -> str:
    return "test/acc" if any("test/acc" in r.metrics for r in results) else "test/mae"


def rows(results: list[RunResult], monitor: str, mode: str) -> list[dict]:
    """A row per run, best first: its varying keys as columns (key: value), its state and metrics."""
    test, keys = test_metric(results), varying(results)
    out = []
    for i, r in enumerate(ranked(results, monitor, mode)):
        chosen = dict(o.split("=", 1) for o in r.overrides if "=" in o)
        out.append({"rank": i + 1, "best": i == 0 and r.state == "complete", "run": r.run_dir.name,
                    **{k: chosen.get(k, "") for k in keys},
                    "overrides": r.label, "state": r.state, "best_epoch": r.metrics.get("best_epoch", ""),
                    monitor: r.value(monitor), test: r.value(test),
                    "wall_time_s": r.metrics.get("wall_time_s", ""), "error": r.error})
    return out


REPEATS = ("trainer.seed=", "data.fold=")  # what repeats a configuration: its mean and spread are over these


def seed_groups(results: list[RunResult], monitor: str, mode: str = "min") -> list[dict]:
    """Mean and spread of every metric per configuration, where a configuration ran several times (seeds, or the
    folds of data.folds), best first by the monitored metric's mean."""
    shared = set.intersection(*(set(r.overrides) for r in results)) if results else set()
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        label = " ".join(o for o in r.overrides if o not in shared and not o.startswith(REPEATS))
        groups.setdefault(label or "(defaults)", []).append(r)
    test = test_metric(results)
    measured = sorted({k for r in results for k, v in r.metrics.items() if k.startswith(("train/", "val/", "test/"))
                       and isinstance(v, (int, float)) and k not in (monitor, test)})
    out = []
    for label, runs in groups.items():
        done = [r for r in runs if r.state == "complete"]
        if len(runs) < 2:
            continue
        row = {"configuration": label, "runs": len(runs), "complete": len(done)}
        for key in (monitor, test, *measured):
            values = [r.value(key) for r in done if not math.isnan(r.value(key))]
            row[f"{key} mean"] = statistics.fmean(values) if values else math.nan
            row[f"{key} std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        out.append(row)
    key = f"{monitor} mean"
    return sorted(out, key=lambda row: (math.isnan(row[key]), -row[key] if mode == "max" else row[key]))


def _fmt_value(text: str) -> str:
    """An override's value for reading: a float to four significant digits, anything else as written."""
    try:
        return f"{float(text):.4g}" if "." in text or "e" in text.lower() else text
    except ValueError:
        return text


def _fmt(value) -> str:
    """For reading: floats to four significant digits (summary.csv keeps them whole)."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def write(sweep_dir: Path, table: list[dict], seeds: list[dict]) -> None:
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    lines = ["| " + " | ".join(table[0]) + " |", "|" + " --- |" * len(table[0])]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row.values()) + " |" for row in table]
    if seeds:
        lines += ["", "| " + " | ".join(seeds[0]) + " |", "|" + " --- |" * len(seeds[0])]
        lines += ["| " + " | ".join(_fmt(v) for v in row.values()) + " |" for row in seeds]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")


def show(sweep_dir: Path, console: Console | None = None) -> list[RunResult]:
    """Print the sweep's table (and seed statistics), write summary.csv and summary.md; returns the runs."""
    console = console or Console()
    results = collect(sweep_dir)
    if not results:
        console.print(f"[yellow]no runs under {sweep_dir}[/]")
        return results
    monitor, mode = objective(sweep_dir)
    table, seeds = rows(results, monitor, mode), seed_groups(results, monitor, mode)
    write(sweep_dir, table, seeds)
    shared = set.intersection(*(set(r.overrides) for r in results))
    title = (f"sweep {sweep_dir}: {len(results)} runs, sorted by {monitor} ({mode})"
             + (f"\nall with: {' '.join(sorted(shared))}" if shared else ""))
    console.print(escape(title), soft_wrap=True)  # the title whole, however narrow the terminal
    view = fitted_table(table, columns(table, ranked(results, monitor, mode), results, monitor), console.width)
    console.print(view)
    for row in table:
        if row["error"]:
            console.print(f"[red]run {row['run']} failed:[/] {row['error']}")
    if seeds:  # the monitored and test metrics here; summary.md has every metric's
        test = test_metric(results)
        spread = Table(title="per configuration, over seeds or folds (mean ± std), best first", title_justify="left",
                       header_style="bold", box=box.SIMPLE_HEAD)
        for column in ("configuration", "runs", monitor, test):
            spread.add_column(column, overflow="fold", justify="left" if column == "configuration" else "right")
        for row in seeds:
            spread.add_row(escape(row["configuration"]), f"{row['complete']}/{row['runs']}",
                           *(f"{_fmt(row[f'{k} mean'])} ± {_fmt(row[f'{k} std'])}" for k in (monitor, test)))
        console.print(spread)
    console.print(f"summary: {sweep_dir / 'summary.csv'} and summary.md")
    return results


STYLES = {"complete": "", "pruned": "dim", "diverged": "yellow", "interrupted": "yellow", "failed": "red",
          "damaged": "red"}
STATE_WORDS = {"complete": "done", "interrupted": "stopped"}  # short: the table fits an 80-column terminal
DROPPED_FIRST = ("time s", "best\nepoch")  # where the terminal is still too narrow (summary.md keeps them all)


def columns(table: list[dict], ranked_results: list[RunResult], results: list[RunResult],
            monitor: str) -> list[tuple[str, list[str], str]]:
    """The terminal table's columns as (header, cells, justify): the varying keys by their last part (a key in
    the header, its value in the cell: an override column wrapped every run over two lines at 80 columns), the
    metric names over two lines, floats to four significant digits."""
    test, keys = test_metric(results), varying(results)

    def over_two_lines(name: str) -> str:
        return name.replace("/", "/\n", 1)
    return [("rank", [f"★ {row['rank']}" if row["best"] else str(row["rank"]) for row in table], "right"),
            ("run", [run_id(r.run_dir.name) for r in ranked_results], "left"),
            *((key.rsplit(".", 1)[-1], [_fmt_value(row[key]) for row in table], "left") for key in keys),
            ("state", [STATE_WORDS.get(row["state"], row["state"]) for row in table], "left"),
            ("best\nepoch", [_fmt(row["best_epoch"]) for row in table], "right"),
            (over_two_lines(monitor), [_fmt(row[monitor]) for row in table], "right"),
            (over_two_lines(test), [_fmt(row[test]) for row in table], "right"),
            ("time s", [_fmt(row["wall_time_s"]) for row in table], "right")]


def fitted_table(table: list[dict], cells: list[tuple[str, list[str], str]], width: int) -> Table:
    """The table without cutting a name or a value: columns as wide as their widest line, and where the
    terminal is narrower than that, the time and then the best epoch left out (summary.md keeps them all)."""
    def need(column) -> int:
        header, values, _ = column
        return max(len(line) for text in [header, *values] for line in text.split("\n")) + 1
    for dropped in DROPPED_FIRST:
        if sum(map(need, cells)) <= width:
            break
        cells = [column for column in cells if column[0] != dropped]
    view = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in cells:
        view.add_column(column[0], justify=column[2], no_wrap=True, min_width=need(column) - 1)
    for i, row in enumerate(table):
        view.add_row(*(escape(values[i]) for _, values, _ in cells),
                     style="bold green" if row["best"] else STYLES[row["state"]])
    return view


def best_run(sweep_dir: Path) -> Path:
    """A sweep's best complete run by its objective (the monitored metric, in its direction). A run whose
    metrics.json is damaged could be the best: the choice is refused, naming it."""
    monitor, mode = objective(sweep_dir)
    results = collect(sweep_dir)
    damaged = [r for r in results if r.state == "damaged"]
    if damaged:
        raise runfiles.DamagedRun(f"{sweep_dir}: {len(damaged)} of {len(results)} runs cannot be ranked, so the best run is "
                         f"unknown: {damaged[0].error}; or give the run directory to use")
    complete = [r for r in ranked(results, monitor, mode) if r.state == "complete"]
    if not complete:
        raise ConfigError(f"{sweep_dir}: no run of this sweep finished; nothing to use")
    return complete[0].run_dir


class SweepSummary(Callback):
    """Hydra callback: the summary at the end of every multirun, then each report the sweep's config adds
    (`reports`: "module:function" paths taking the sweep directory; a study adds its own); a sweep with a
    failed run exits 1."""

    def __init__(self, reports: list[str] = ()):
        self.reports = list(reports)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        results = show(sweep_dir)
        for report in self.reports:
            lazy(report)(sweep_dir)
        failed = [r for r in results if r.state == "failed"]
        if failed:
            print(f"error: {len(failed)} of {len(results)} runs failed (see the table above)", file=sys.stderr)
            sys.exit(1)


def added_reports(sweep_dir: Path) -> list[str]:
    """The reports a finished sweep's config added to its summary (multirun.yaml's record of it)."""
    record = sweep_dir / "multirun.yaml"
    reports = OmegaConf.select(OmegaConf.load(record), "hydra.callbacks.sweep_summary.reports") if record.is_file() else None
    return list(reports or ())


def main() -> None:
    """`trainrun-report <sweep dir>`: the summary of a finished (or running) sweep, again."""
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: trainrun-report outputs/multirun/<date>/<time>", file=sys.stderr)
        sys.exit(2)
    sweep_dir = Path(sys.argv[1])
    if not sweep_dir.is_dir():
        print(f"error: {sweep_dir} is not a directory", file=sys.stderr)
        sys.exit(2)
    show(sweep_dir)
    for report in added_reports(sweep_dir):
        lazy(report)(sweep_dir)
