"""Studies: a lecture's claim as one sweep (`trainrun -m study=<name>`), then a report with the figures a
lecture would show and a verdict computed from the measured numbers.

A study is one record (studies/<name>.py, its STUDY): its sweep (the stages, a value per `study.size` where the sizes differ, the
options and settings its runs start from, over conf/study_base.yaml, which every study shares), its protocol (the source, the conditions under which the source makes the claim, each
measured, what is measured, the data and seeds), its claims, each a rule over the runs' metrics.json,
layers.json and curves that says `holds`, `does not hold` or `inconclusive`, and its figures. A claim whose
conditions were not met is inconclusive: its numbers are shown, not judged. The report is written at the end
of the sweep, and again by `trainrun-report <sweep dir>`: study.md and the figures as PNG in the sweep directory.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from omegaconf import OmegaConf

from ..runfiles import epoch_curves
from ..sweeps.sweep import collect, run_id, stage_params

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass
class FinishedRun:
    """What one run of a study left: its swept choices, metrics.json, layers.json's records, the val curve."""

    name: str
    choices: dict
    metrics: dict
    layers: list
    curves: dict  # TensorBoard tag -> [(epoch, seconds since the run's first event, value)]
    preprocessing: dict = field(default_factory=dict)  # preprocessing.json: what was fitted, and from where

    @property
    def stage(self) -> str:
        """The study stage that ran it ("" outside stages): `digits-sgd` of `digits-sgd-0_scheduler-none`."""
        return run_id(self.name).rpartition("-")[0]

    @property
    def val_loss(self) -> list:
        return [(epoch, value) for epoch, _, value in self.curves.get("loss/val", [])]

    def at_init(self) -> dict:
        return self.layers[0] if self.layers else {"activations": {}, "grad_norms": {}}


class Inconclusive(Exception):
    """A rule cannot read a number it needs: a run is missing, or a statistic exploded to null."""


def need(value, what: str):
    """`value`, unless it is missing (None or empty): then the rule is inconclusive, saying what is missing."""
    if value is None or (isinstance(value, (list, tuple, dict, set)) and not value):
        raise Inconclusive(f"{what} is missing")
    return value


def seed_of(run: FinishedRun) -> str:
    return run.choices.get("trainer.seed", "0")


def paired(ours: dict, theirs: dict, what: str) -> tuple[float, float, int]:
    """(mean, standard error, seeds) of ours[seed] - theirs[seed] over the seeds both have: the same seed draws
    the same data and initialization, so the pairing removes what the seeds share. A side that diverged (inf)
    makes the error infinite: no difference is then beyond it."""
    seeds = sorted(set(ours) & set(theirs), key=str)
    need(seeds[1:], f"a second seed with {what} (the rule pairs seeds)")
    change = [ours[s] - theirs[s] for s in seeds]
    if not all(map(math.isfinite, change)):
        return statistics.fmean(change), math.inf, len(change)
    return statistics.fmean(change), statistics.stdev(change) / math.sqrt(len(change)), len(change)


def judged(check: Callable, runs: list, given: Mapping) -> tuple[str, str]:
    """(verdict, the numbers it read) of a rule, inconclusive where it could not read them."""
    try:
        return check(runs, **given)
    except Inconclusive as why:
        return INCONCLUSIVE, str(why)


@dataclass(frozen=True)
class Claim:
    text: str
    rule: str  # the rule as the report states it; its {fields} are filled from `given`
    check: Callable[..., tuple[str, str]]  # (runs, **given) -> (verdict, the numbers it read)
    given: Mapping[str, Any] = field(default_factory=dict)  # the rule's thresholds and the settings it reads
    scope: str = ""  # a protocol's condition: it gates only the claims whose text starts with this ("": all)

    @property
    def stated(self) -> str:
        return self.rule.format(**self.given)

    def verdict(self, runs: list) -> tuple[str, str]:
        return judged(self.check, runs, self.given)


@dataclass(frozen=True)
class Protocol:
    """A study's design from its source, committed before the results it produces (afterwards only bugs are
    fixed, each listed in `fixes`)."""

    note: str  # the lecture note it comes from (../shared/seeds/)
    paper: str  # the paper the note rests on
    measurement: str  # what the source measures, and what the study measures in its place
    data: str  # per size, and why the conditions can hold on it
    seeds: str = "one seed: the claim is about a deterministic quantity"  # how many, and why
    conditions: tuple = ()  # Claims: the regime the source makes its claim in, measured on the same runs
    fixes: tuple = ()  # bugs fixed after the protocol's first results, one line each


@dataclass(frozen=True)
class Stage:
    """One sweep of a study, run after the ones before it. Each key takes a value or a sweep in Hydra's grammar
    (`a,b`, `tag(log, interval(1e-3, 10))`), or {size: that} where the sizes differ (a size it lacks leaves
    the key out); `{stage.key}` reads an earlier stage's result (`{find.suggested_lr*0.1}`)."""

    name: str
    params: Mapping[str, Any]
    samples: int | None = None  # random draws per point of the choices: the intervals are sampled


@dataclass(frozen=True)
class Sweep:
    """What `trainrun -m study=NAME` composes: Hydra's config group `study`, stored from this record."""

    epochs: Mapping[str, int]  # per study.size
    stages: tuple
    options: Mapping[str, str] = field(default_factory=dict)  # a group's option where not the default (optimizer: sgd)
    settings: Mapping[str, Any] = field(default_factory=dict)  # dotted keys every run of the study sets

    def config(self, name: str) -> dict:
        """The study's config (package _global_): the shared base, its options, its settings and its stages."""
        settings = OmegaConf.create()
        for key, value in self.settings.items():
            OmegaConf.update(settings, key, value)
        stages = [{"name": s.name, "params": dict(s.params), **({"samples": s.samples} if s.samples else {})}
                  for s in self.stages]
        return {"defaults": ["/study_base", *({f"override /{group}": option} for group, option in self.options.items())],
                "study": {"name": name, "epochs": dict(self.epochs), "stages": stages},
                **OmegaConf.to_container(settings)}


@dataclass(frozen=True)
class Study:
    summary: str  # one line for `trainrun --help`
    claim: str  # one sentence, for the report's first line
    sweep: Sweep
    protocol: Protocol
    claims: tuple
    figures: Callable[[list, Path], list]  # runs, sweep dir -> the PNG files written

    def verdicts(self, runs: list) -> tuple[list, list]:
        """([(condition, met?, numbers)], [(claim, verdict, numbers)]): a claim is judged only when every
        condition was met; otherwise it is inconclusive, its numbers still shown."""
        conditions = [(c, *c.verdict(runs)) for c in self.protocol.conditions]
        claims = []
        for claim in self.claims:
            verdict, numbers = claim.verdict(runs)
            unmet = [c.text for c, met, _ in conditions if met != HOLDS and claim.text.startswith(c.scope)]
            if unmet and verdict != INCONCLUSIVE:
                verdict, numbers = INCONCLUSIVE, f"{numbers} (not judged: condition not met: {'; '.join(unmet)})"
            claims.append((claim, verdict, numbers))
        return conditions, claims


def load_runs(sweep_dir: Path) -> list[FinishedRun]:
    """The sweep's runs that finished (sweep.collect reads them), with their layers.json and curves."""
    runs = []
    for result in collect(sweep_dir):
        if not result.metrics:
            continue  # failed, or killed before its metrics.json
        run_dir = result.run_dir
        choices = dict(o.split("=", 1) for o in result.overrides if "=" in o)
        layers = json.loads((run_dir / "layers.json").read_text())["records"] if (run_dir / "layers.json").is_file() else []
        fitted = run_dir / "preprocessing.json"
        runs.append(FinishedRun(run_dir.name, choices, result.metrics, layers, epoch_curves(run_dir),
                                json.loads(fitted.read_text()) if fitted.is_file() else {}))
    return runs


def hidden(layers: dict) -> list[str]:
    """The hidden blocks' names, input to output (fc1, fc2, ...), from a layers.json record."""
    return [name for name in layers if name.startswith("fc")]


def hidden_weights(grad_norms: dict) -> list[str]:
    return [name for name in grad_norms if name.startswith("fc")]


def same(text: str | None, value) -> bool:
    """Whether an override's text (`1.0`, `1`, `True`) gives `value`: numbers compare as numbers."""
    if text is None:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return math.isclose(float(text), value, rel_tol=1e-9)
        except ValueError:
            return False
    return text.lower() == str(value).lower()


def pick(runs: list[FinishedRun], **choices) -> list[FinishedRun]:
    """The runs whose swept choices have these values (compared as values: lr 1 is lr 1.0)."""
    return [r for r in runs if all(same(r.choices.get(k), v) for k, v in choices.items())]


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


FIGURES_RUN = "study_figures"  # beside the runs: `tensorboard --logdir <sweep dir>` shows the figures too


def to_tensorboard(figures: list[Path], log_dir: Path) -> None:
    """The report's figures in TensorBoard's Images tab (tag `study/<figure>`), replaced by each report."""
    from torch.utils.tensorboard import SummaryWriter
    from torchvision.io import ImageReadMode, decode_png, read_file

    for old in log_dir.glob("events.out.tfevents.*"):
        old.unlink()
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for figure in figures:
            writer.add_image(f"study/{figure.stem}", decode_png(read_file(str(figure)), ImageReadMode.RGB), 0)


def cell(text: str) -> str:
    return text.replace("|", "\\|")  # a rule may say |mean|


def protocol_lines(protocol: Protocol, conditions: list) -> list[str]:
    """The report's Protocol section: the source, the measurement, the data and seeds, each condition met or not."""
    lines = ["## Protocol", "", f"- Lecture note: {protocol.note}.", f"- Source: {protocol.paper}.",
             f"- Measurement: {protocol.measurement}", f"- Data: {protocol.data}", f"- Seeds: {protocol.seeds}", "",
             "Conditions under which the source makes the claim, measured on these runs (a claim is judged only "
             "when all are met):", ""]
    if conditions:
        met = {HOLDS: "yes", FAILS: "no", INCONCLUSIVE: "unknown"}
        lines += ["| condition | rule | measured | met |", "| --- | --- | --- | --- |"]
        lines += [f"| {cell(c.text)} | {cell(c.stated)} | {cell(numbers)} | **{met[v]}** |" for c, v, numbers in conditions]
    else:
        lines += ["none beyond the settings below."]
    return lines + ["", "Fixed after the first results: " + ("; ".join(protocol.fixes) if protocol.fixes else "nothing")
                    + ".", ""]


def write_study(sweep_dir: Path, name: str, study: Study) -> str:
    """Write study.md and the figures of the study `name` (its record: `study`); returns the verdict line."""
    runs = load_runs(sweep_dir)
    config = OmegaConf.load(sweep_dir / "multirun.yaml")
    size = OmegaConf.select(config, "study.size")
    stages = OmegaConf.select(config, "study.stages")
    params = OmegaConf.select(config, "hydra.sweeper.params")
    stages = OmegaConf.to_container(stages) if stages else [{"params": OmegaConf.to_container(params) if params else {}}]
    stages = [{**stage, "params": stage_params(stage, size)} for stage in stages]
    listed = lambda values: ", ".join(f"`{k}={v}`" for k, v in values.items())  # noqa: E731
    swept = "; ".join((f"stage {stage['name']}: " if stage.get("name") else "") + listed(stage["params"])
                      + (f" ({stage['samples']} random draws per point)" if stage.get("samples") else "")
                      for stage in stages)
    varied = {key for stage in stages for key in stage["params"]}
    fixed = [k for k in ("data.kind", "trainer.epochs", "trainer.seed", "optimizer.kind", "optimizer.lr")
             if k not in varied and k.removesuffix(".kind") not in varied]  # `data=digits` sets data.kind
    conditions, results = study.verdicts(runs)
    figures = study.figures(runs, sweep_dir) if runs else []
    to_tensorboard(figures, sweep_dir / FIGURES_RUN)
    counts = {v: sum(r[1] == v for r in results) for v in (HOLDS, FAILS, INCONCLUSIVE)}
    unmet = sum(verdict != HOLDS for _, verdict, _ in conditions)
    verdict = (f"study {name}: {counts[HOLDS]} of {len(results)} claims hold"
               + (f", {counts[FAILS]} do not" if counts[FAILS] else "")
               + (f", {counts[INCONCLUSIVE]} inconclusive" if counts[INCONCLUSIVE] else "")
               + (f" ({unmet} of {len(conditions)} conditions not met)" if unmet else "")
               + f" (size {size}, {len(runs)} runs)")
    lines = [f"# Study: {name}", "", f"**Claim.** {study.claim}", "", *protocol_lines(study.protocol, conditions)]
    lines += ["## Settings", "", f"Size `{size}`; the sweep: {swept}; {len(runs)} runs. "
              + "Fixed: " + ", ".join(f"`{k}={OmegaConf.select(config, k)}`" for k in fixed),
              "", "## Verdicts", "", "| claim | rule | measured | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {cell(c.text)} | {cell(c.stated)} | {cell(numbers)} | **{v}** |" for c, v, numbers in results]
    lines += ["", "## Runs", "", "| run | test metric | best epoch | stop |", "| --- | --- | --- | --- |"]
    for r in runs:
        test = r.metrics.get("test/acc", r.metrics.get("test/mae"))
        lines.append(f"| {r.name} | {fmt(test)} | {r.metrics.get('best_epoch')} | {r.metrics.get('stop_reason')} |")
    lines += ["", "## Figures", "", f"Also in TensorBoard (Images, run `{FIGURES_RUN}`): `tensorboard --logdir {sweep_dir}`.", ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    lines += ["", f"**Verdict:** {verdict}.", ""]
    (sweep_dir / "study.md").write_text("\n".join(lines))
    return verdict


def study_report(sweep_dir: Path) -> None:
    """A study's sweep ends with its report (study.md, figures) and the verdict line: the summary calls this
    after its table, as conf/study_base.yaml asks."""
    from . import STUDIES

    name = OmegaConf.select(OmegaConf.load(sweep_dir / "multirun.yaml"), "study.name")
    print(write_study(sweep_dir, name, STUDIES[name]))
    print(f"report: {sweep_dir / 'study.md'}")
