"""trainrun-compare: what differed between runs, and how each ended.

    trainrun-compare RUN_OR_SWEEP [RUN_OR_SWEEP ...] [--metric val/loss] [--output curves.png]

Each argument is a run directory or a sweep's (all its runs). Printed: the config keys whose values differ,
side by side; each run's end (stop reason, epochs, best epoch, the monitored metric at the best epoch, the test
metrics). Written: one PNG with the chosen metric's curve of every run over epochs, read from the event files
(by default `compare.png` here, or compare-2.png, ...: nothing is overwritten).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .. import runfiles
from ..errors import ConfigError, DataError

HIDDEN = ("trainer.pruning.", "hydra.")  # bookkeeping of a search, not a choice


def runs_in(path: str) -> list[Path]:
    """The runs a directory holds: itself, or a sweep's runs in their order."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"{path}: no such directory (give run or sweep directories)")
    if (directory / ".hydra" / "config.yaml").is_file():
        return [directory]
    found = sorted((p.parents[1] for p in directory.glob("*/.hydra/config.yaml")), key=lambda p: p.name)
    if not found:
        raise ConfigError(f"{path} holds no run (no .hydra/config.yaml in it or in its sub-directories)")
    return found


def flat_config(run_dir: Path) -> dict[str, str]:
    """A run's composed config as dotted keys and their values, as text."""
    config = run_dir / ".hydra" / "config.yaml"
    try:
        values = OmegaConf.to_container(OmegaConf.load(config))
    except (OmegaConfBaseException, OSError, ValueError) as e:
        raise runfiles.DamagedRun(f"{config} is not a config this trainrun reads ({' '.join(str(e).split())[:120]}); "
                                  f"{runfiles.RESTORE}") from None
    flat: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = str(node)
    walk(values if isinstance(values, dict) else {}, "")
    return flat


def differing(configs: list[dict[str, str]]) -> list[str]:
    """The keys whose values are not the same in every run (a key one run lacks differs)."""
    keys = sorted({key for config in configs for key in config if not key.startswith(HIDDEN)})
    return [key for key in keys if len({config.get(key, "(none)") for config in configs}) > 1]


def labels(runs: list[Path]) -> list[str]:
    """Each run by its directory's name, with its parent's where two names are the same."""
    names = [run.name for run in runs]
    return names if len(set(names)) == len(names) else [f"{run.parent.name}/{run.name}" for run in runs]


def end_of(run_dir: Path, metric: str) -> dict[str, str]:
    """How a run ended, from its metrics.json (a run that has not ended says so)."""
    ended = runfiles.metrics(run_dir)
    if ended is None:
        return {"stop": "not ended", "epochs": "", "best epoch": "", metric: "", "test": ""}
    tests = "  ".join(f"{k.removeprefix('test/')} {format_value(v)}" for k, v in ended.items() if k.startswith("test/"))
    return {"stop": str(ended.get("stop_reason", "")), "epochs": str(ended.get("epochs_run", "")),
            "best epoch": str(ended.get("best_epoch", "")), metric: format_value(ended.get(metric)), "test": tests}


def format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def show(runs: list[Path], configs: list[dict[str, str]], metric: str, console) -> None:
    from rich import box
    from rich.table import Table

    names = labels(runs)
    keys = differing(configs)
    table = Table(box=box.SIMPLE_HEAD, title="what differs" if keys else "no config key differs")
    table.add_column("key", overflow="fold")
    for name in names:
        table.add_column(name, overflow="fold")
    for key in keys:
        table.add_row(key, *(config.get(key, "(none)") for config in configs))
    console.print(table)
    ends = [end_of(run, metric) for run in runs]
    result = Table(box=box.SIMPLE_HEAD, title="how each ended")
    result.add_column("", overflow="fold")
    for name in names:
        result.add_column(name, overflow="fold")
    for row in ends[0]:
        result.add_row(row, *(end[row] for end in ends))
    console.print(result)


def monitored(configs: list[dict[str, str]]) -> str:
    return configs[0].get("trainer.early_stopping.monitor", "val/loss")


def curves_of(runs: list[Path], metric: str) -> dict[str, list]:
    """Each run's curve of `metric` over epochs, from its event files; a metric no run logged is refused,
    naming those they did."""
    every = {name: runfiles.epoch_curves(run) for run, name in zip(runs, labels(runs))}
    tag = runfiles.epoch_tag(metric)
    found = {name: curves[tag] for name, curves in every.items() if curves.get(tag)}
    if not found:
        logged = sorted({f"{split}/{name}" for curves in every.values() for name, _, split in
                         (t.partition("/") for t in curves)})
        raise ConfigError(f"--metric={metric}: no run logged it; they logged " + (", ".join(logged) if logged else
                          "no curves (logger.enabled=false?)"))
    return found


def plot(curves: dict[str, list], metric: str, output: Path, runs: int) -> None:
    """The metric's curve of every run that logged it, over epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, curve in curves.items():
        ax.plot([epoch for epoch, _, _ in curve], [value for _, _, value in curve], marker=".", label=name)
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} of {runs} runs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def new_file(path: Path) -> Path:
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def run_compare(args: argparse.Namespace) -> None:
    from rich.console import Console

    runs = [run for path in args.runs for run in runs_in(path)]
    if len(runs) < 2:
        raise ConfigError(f"{args.runs[0]} is one run: give two runs or more (or a sweep's directory)")
    if args.output and Path(args.output).exists():
        raise ConfigError(f"--output={args.output} exists; nothing is overwritten: give a new name")
    if args.output and Path(args.output).suffix != ".png":
        raise ConfigError(f"--output={args.output}: the figure is a PNG (give a name ending in .png)")
    configs = [flat_config(run) for run in runs]
    metric = args.metric or monitored(configs)
    if "/" not in metric:
        raise ConfigError(f"--metric={metric}: a metric as metrics.json names it, e.g. val/loss or train/acc")
    curves = curves_of(runs, metric)
    show(runs, configs, metric, Console(width=max(80, Console().width)))
    output = Path(args.output).expanduser() if args.output else new_file(Path("compare.png"))
    plot(curves, metric, output, len(runs))
    print(f"curves: {output} ({metric} of {len(curves)} of {len(runs)} runs" + ("" if len(curves) == len(runs) else
          "; the others logged no such curve") + ")")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trainrun-compare", description="Compare runs: what differed, how each ended.")
    parser.add_argument("runs", nargs="+", help="run directories or sweep directories (all their runs)")
    parser.add_argument("--metric", help="the curve to draw, as metrics.json names it (default: the monitored one)")
    parser.add_argument("--output", help="the figure: a new .png (default: compare.png here, never overwritten)")
    args = parser.parse_args(argv)
    try:
        run_compare(args)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
