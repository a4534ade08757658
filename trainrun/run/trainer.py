"""The training run: build it, fit it, test it and report.

`train(cfg, run_dir, ui)` is the whole product without the command line. `Training.fit` is the loop and reads
top to bottom: batches are index slices of tensors already on the device, augmented and normalized as
whole batches, then one optimizer step (a closure, so L-BFGS and the rest share it). Why a run stops is
decided in stopping.py, what a checkpoint holds in checkpoint.Checkpointer, what the run is made of in
build.py.
"""
from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import checkpoint, cores, distributed, tune
from .build import Parts, build, preflight
from ..check import check, check_resume
from ..config import Config, OPTION_GROUPS, typed, values_of
from ..errors import ConfigError
from ..runfiles import read_checkpoint
from .console import SilentConsole
from ..data import Data, Split
from .debugging import StepProfiler, overfit_verdict
from .layers import LayerLog, measure
from .logger import TensorBoard
from ..options.loss import metric
from ..registry import OPTIMIZERS, SCHEDULERS
from ..sweeps.search import open_trial
from .stopping import Stop, StopRules
from ..sweeps.sweep import hparam_value
from ..data.preprocessing import write_preprocessing
from ..options.weights import pretrained_statistics

log = logging.getLogger("trainrun")
PROBE = 256  # samples of the fixed batch that per-layer statistics are measured on


def train(cfg: DictConfig, run_dir: Path, ui, overrides: dict | None = None) -> dict:
    """Build the run from `cfg`, train it, test the best weights; returns (and writes) metrics.json.

    `overrides` are the command line's key=value pairs: shown in the HParams dashboard, and checked
    against the saved run when resuming (trainer.resume: run_dir is then the run being resumed).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = overrides or {}
    world = distributed.environment()
    if not world.is_main:
        ui = SilentConsole()
    cfg, saved = resumed(cfg, run_dir, overrides, ui, world)
    if saved is not None and saved.get("finished"):
        return saved["metrics"]
    cfg = typed(cfg)
    if saved is not None:  # the command line checked what it composed; a resume merged the saved config into it
        check(cfg)
    use_threads(cfg.trainer.threads)
    # transfer: the input statistics the starting weights expect, unless the command line chose
    parts = build(cfg, world, None if "data.normalize" in overrides else pretrained_statistics(cfg.model))
    preflight(parts)
    if world.is_main:  # what predict and export need to prepare new inputs as this run's were
        write_preprocessing(run_dir / "preprocessing.json", parts.data.preprocessing())

    # a resumed run appends to its event file; purge_step drops what the stopped process logged after its checkpoint
    tb = TensorBoard(cfg.logger, run_dir, purge_step=saved["step"] + 1 if saved else None) \
        if cfg.logger.enabled and world.is_main else None
    if tb and not (saved and "model" in saved):
        tb.config(cfg)
        failure = tb.graph(parts.model, probe_batch(parts.data, 8))
        if failure:
            log.info("model graph not logged: %s", failure)
    ui.header(cfg, parts.device, parts.data, parts.model, run_dir)
    run = Training(parts, run_dir, tb, ui, world, started=started,
              trial=open_trial(cfg.trainer.pruning) if world.is_main else None)
    if saved and "model" in saved:
        run.restore(saved)
        ui.note(f"resuming {run_dir} at epoch {run.progress.epoch}, step {run.step}")
        if saved.get("threads", torch.get_num_threads()) != torch.get_num_threads():
            ui.note(f"resumed on {torch.get_num_threads()} threads, where it ran on {saved['threads']} (another launcher "
                    "or n_jobs): sums are added in another order, so results equal an uninterrupted run's up to "
                    "rounding, not bit for bit")
    if cfg.tune is not None:  # a range test instead of training
        result = tune.lr_find(run, ui, overrides)
        (run_dir / "metrics.json").write_text(json.dumps(
            {"suggested_lr": result["suggested_lr"], "stop_reason": "lr_find"}, indent=2) + "\n")
        return {"stop_reason": "lr_find", "suggested_lr": result["suggested_lr"]}
    if cfg.logger.layers and world.is_main:  # per-layer statistics at initialization, then after each epoch
        run.layer_log = LayerLog(run_dir, resumed_epoch=run.epoch if run.step else None)
        if not run.step:
            run.measure_layers(0)
    if HELD is not None:  # a stack's launcher trains it with the others (trainrun/stack), from this moment
        HELD.append(Held(run, overrides, checkpoint.rng_states()))
        return {}
    run.fit()
    return completed(run, overrides)


@dataclass
class Held:
    """A run prepared to the point where it would start training, with its RNGs as they stand there."""

    run: "Training"
    overrides: dict
    rng: dict


HELD: list[Held] | None = None  # a stack's launcher collects its runs here (stack/launch.py); None: train alone


def completed(run: "Training", overrides: dict) -> dict:
    """After the loop: every checkpoint on disk, then rank 0 tests and reports."""
    run.checkpointer.wait()
    if run.world.size > 1:
        # freed now, not at the interpreter's exit: there gloo's threads, dropping the last reference to the DDP
        # wrapper's process group, abort the process (1 in 20 runs on 2 busy cores: "terminate called ...")
        run.parts.forward = run.parts.model
        distributed.teardown(run.world)
        gc.collect()
    if not run.world.is_main:
        return {}
    return finish(run, overrides)


def use_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
        log.info("torch threads: %d", threads)


def resumed(cfg: DictConfig, run_dir: Path, overrides: dict, ui, world) -> tuple[DictConfig, dict | None]:
    """For trainer.resume: the run's own config (with what a resume may change from this command) and its
    last.pt, or {"step": 0} for a run killed before its first checkpoint (it starts over in its directory),
    or {"finished": True, "metrics": ...} for a run that has nothing left to do."""
    if not cfg.trainer.resume:
        return cfg, None
    resumed_dir = checkpoint.find_run(cfg.trainer.resume)  # run_dir too, except on ranks other than 0
    if world.is_main and resumed_dir.resolve() != run_dir.resolve():
        raise ConfigError(f"trainer.resume continues in the run's own directory ({resumed_dir}); "
                          f"leave hydra.run.dir out (it was {run_dir})")
    last = resumed_dir / "last.pt"
    if not last.is_file():  # killed before its first checkpoint: nothing to lose by starting over
        if not (resumed_dir / ".hydra" / "overrides.yaml").is_file():  # Hydra's record, written after config.yaml
            raise ConfigError(f"trainer.resume={cfg.trainer.resume}: the run was killed while it was being created; "
                              "nothing was trained: start it again")
        saved_cfg = OmegaConf.to_container(OmegaConf.load(resumed_dir / ".hydra" / "config.yaml"))
        threads = cfg.trainer.threads  # a parallel launcher's share, which Hydra's config.yaml predates
        cfg = checkpoint.resumed_config(cfg, saved_cfg, [k.lstrip("+~") for k in overrides])
        cfg.trainer.threads = cfg.trainer.threads or threads
        ui.note(f"{run_dir} was stopped before its first checkpoint; starting it over in its own directory")
        return cfg, {"step": 0}
    saved = read_checkpoint(last)
    cfg = checkpoint.resumed_config(cfg, saved["config"], [k.lstrip("+~") for k in overrides])
    check_resume(cfg, saved["config"])
    reason = saved["stop_reason"]
    longer = any((cfg.trainer[k] or math.inf) > (saved["config"]["trainer"][k] or math.inf)
                 for k in ("epochs", "max_steps"))
    if reason not in ("running", "interrupted") and (resumed_dir / "metrics.json").is_file():
        if reason == "completed" and longer:
            ui.note(f"{run_dir} completed {saved['epoch']} epochs; continuing to trainer.epochs={cfg.trainer.epochs}")
            return cfg, {**saved, "stop_reason": "running"}
        ui.note(f"{run_dir} already finished ({reason}); nothing to resume")
        return cfg, {"finished": True, "metrics": json.loads((run_dir / "metrics.json").read_text())}
    return cfg, saved


@dataclass
class EpochProgress:
    """Where the run is inside an epoch: enough to resume mid-epoch with identical epoch metrics."""

    epoch: int = 1
    steps_done: int = 0
    loss_sum: float = 0.0
    score_sum: float = 0.0
    seen: int = 0
    seconds: float = 0.0


class EpochSums:
    """The epoch's summed train loss and metric, kept on the device (a read is a host sync), and its clock."""

    def __init__(self, progress: EpochProgress, device: torch.device):
        self.progress, self.started = progress, time.perf_counter() - progress.seconds
        self.loss = torch.tensor(progress.loss_sum, device=device)
        self.score = torch.tensor(progress.score_sum, device=device)

    def add(self, loss: torch.Tensor, score: torch.Tensor, batch: list) -> int:
        """A step's mean loss and summed metric over its micro-batches; returns its number of samples."""
        n = sum(len(y) for _, y, _ in batch)
        self.loss.add_(loss, alpha=n)
        self.score += score
        self.progress.seen += n
        return n

    def keep(self) -> None:
        """Into the progress a checkpoint saves, so a resume mid-epoch ends with the same epoch metrics."""
        e = self.progress
        e.loss_sum, e.score_sum, e.seconds = float(self.loss), float(self.score), self.seconds()

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def total(self, world: distributed.World, metric: str) -> tuple[dict, int]:
        """The epoch's train metrics over every rank's shard, and the number of samples they cover."""
        loss, score, seen = world.sum(torch.stack([self.loss, self.score, torch.tensor(
            float(self.progress.seen), device=self.loss.device)])).tolist()
        return {"train/loss": loss / seen, f"train/{metric}": score / seen}, int(seen)


@dataclass
class Training:
    """The loop over what `build` made, and the counters it updates."""

    parts: Parts
    run_dir: Path
    tb: TensorBoard | None
    ui: Any
    world: distributed.World = distributed.World()
    started: float = field(default_factory=time.perf_counter)
    trial: Any = None  # the Optuna trial of a search, to report to and be pruned by
    step: int = 0
    progress: EpochProgress = field(default_factory=EpochProgress)
    stop: Stop | None = None
    earlier_seconds: float = 0.0  # wall time of the processes before a resume
    images_logged: bool = False
    completed: bool = False  # the loop ran to trainer.epochs or trainer.max_steps
    layer_log: LayerLog | None = None  # with logger.layers: layers.json
    judged: dict = field(default_factory=dict)  # the last epoch's values as early stopping judged them

    def __post_init__(self):
        p, cfg = self.parts, self.parts.cfg
        self.closure_step = OPTIMIZERS.trait(cfg.optimizer, "needs_closure")
        self.checkpointer = checkpoint.Checkpointer(
            self.run_dir, {"model": p.model, "optimizer": p.optimizer, "scheduler": p.scheduler, "scaler": p.scaler,
                           "early_stopping": p.stopper, "averaging": p.average},
            asdict(cfg), self.world, cfg.trainer.checkpoint)
        self.rules = StopRules(p.stopper, cfg.trainer.early_stopping.stop_on_nonfinite, cfg.optimizer.lr,
                               self.trial, self.world, self.ui, self.run_dir)
        self.profiler = StepProfiler(0, self.run_dir, self.ui)  # fit() starts trainer.profile's
        self.shares_cores = cores.shares_cores(cfg.trainer.threads, p.device, self.world.size,
                                               cfg.trainer.deterministic)

    @property
    def epoch(self) -> int:
        """The last epoch that ran (fully or in part)."""
        return self.progress.epoch - (self.progress.steps_done == 0)

    @property
    def stop_reason(self) -> str:
        return self.stop.reason if self.stop else "completed"

    def fit(self) -> None:
        """Epochs until trainer.epochs, trainer.max_steps or a stop (early stopping, divergence, pruning, a signal)."""
        if self.stop:  # restored from a run that had already stopped, killed before it wrote metrics.json
            return
        self.begin()
        with self.rules.catching_signals(), self.ending():
            for epoch in range(self.progress.epoch, self.parts.cfg.trainer.epochs + 1):
                if self.train_epoch(epoch) or self.out_of_steps():
                    break
            self.completed = self.stop is None

    def begin(self) -> None:
        tc = self.parts.cfg.trainer
        self.ui.start(tc.epochs, self.parts.steps_per_epoch, done=self.step)
        self.profiler = StepProfiler(tc.profile if self.world.is_main else 0, self.run_dir, self.ui)

    @contextlib.contextmanager
    def ending(self):
        """However the loop ends: the progress display stops, and the last checkpoint records how the run ended,
        so a resume knows (an interrupted run checkpointed when the signal came)."""
        try:
            yield
        finally:
            self.end()

    def end(self) -> None:
        self.ui.stop()
        self.profiler.stop()
        if self.stop is None or self.stop.reason != "interrupted":
            self.save_checkpoint()

    def out_of_steps(self) -> bool:
        return bool(self.parts.cfg.trainer.max_steps and self.step >= self.parts.cfg.trainer.max_steps)

    def train_epoch(self, epoch: int) -> Stop | None:
        """The epoch's optimizer steps from where it stands (mid-epoch after a resume), then its evaluation."""
        sums = self.start_epoch()
        for micro in self.epoch_batches(epoch):
            batch = [self.prepare(idx) for idx in micro]
            loss, score = self.optimizer_step(batch)
            stop, last_step = self.stepped(loss, score, batch, sums)
            if stop:
                return stop
            if last_step:
                break
        return self.close_epoch(epoch, sums)

    def start_epoch(self) -> EpochSums:
        if self.shares_cores:  # another trainrun process may have started or ended (run/cores.py)
            cores.SHARE.adjust()
        self.parts.model.train()
        return EpochSums(self.progress, self.parts.device)

    def epoch_batches(self, epoch: int):
        """The epoch's micro-batch groups still to train (a resume mid-epoch skips the ones trained before it:
        the same batches, in the same order)."""
        p = self.parts
        return itertools.islice(grouped(p.batches.epoch(epoch), p.cfg.trainer.grad_accum_steps),
                                self.progress.steps_done, None)

    def close_epoch(self, epoch: int, sums: EpochSums) -> Stop | None:
        train_metrics, seen = sums.total(self.world, self.parts.metric)
        self.progress = EpochProgress(epoch + 1)
        return self.end_of_epoch(epoch, train_metrics, sums.seconds(), seen)

    def stepped(self, loss, score, batch: list, sums: EpochSums) -> tuple[Stop | None, bool]:
        """After an optimizer step over `batch` (its mean loss and summed metric): the counters, the schedule,
        the stop rules, logging and a checkpoint when due; returns the stop it ended in, and whether it was the
        epoch's last step."""
        p, e = self.parts, self.progress
        self.step += 1
        if p.average is not None:
            p.average.after_step(p.model, self.step)
        self.profiler.step()
        n = sums.add(loss, score, batch)
        e.steps_done += 1
        if p.scheduler is not None and p.cfg.scheduler.interval == "step" and not self.averaging_sets_lr(e.epoch):
            p.scheduler.step()
        log_now = self.step % p.cfg.trainer.log_every_n_steps == 0 or self.step == 1  # step 1: curves start at init
        last_step = e.steps_done == p.steps_per_epoch or self.out_of_steps()
        # the epoch's end has its own checkpoint; on the CPU reading the loss costs nothing, so every step is checked
        stop, save_now = self.rules.after_step(loss, e.epoch, self.step, read_loss=log_now or p.device.type == "cpu",
                                               checkpoint_due=not last_step and self.checkpointer.due(self.step))
        if stop and stop.reason == "diverged":
            self.stopped(stop)
            return stop, True
        if self.tb:  # the lr every step (a schedule's steps show as steps)
            self.tb.scalars({"step/lr": p.optimizer.param_groups[0]["lr"]}, self.step)
        if log_now:
            self.log_step(float(loss), float(score) / n)
        self.ui.step(float(loss) if log_now else None)
        if stop:  # a signal: the checkpoint below records it
            self.stopped(stop)
        if save_now:
            sums.keep()
            self.save_checkpoint()
        return stop, last_step

    def stopped(self, stop: Stop) -> None:
        self.stop = stop
        self.ui.stopped(stop.message, error=stop.reason in ("diverged", "interrupted"))

    def prepare(self, idx):
        """One batch: an index slice of the train tensors, augmented and normalized as a whole.

        With several processes each takes its shard, and its loss is weighted by the shard's share of
        the global batch, so the averaged gradient is the one-process gradient of the whole batch."""
        data = self.parts.data
        global_size = len(idx) if isinstance(idx, torch.Tensor) else len(range(*idx.indices(len(data.train))))
        x, y = data.fetch(data.train, self.world.shard(idx))
        weight = len(y) * self.world.size / global_size
        if self.parts.augment is not None:
            x, y = self.parts.augment(x, y)
            if self.tb and not self.images_logged:
                self.tb.images("augmented_batch", x)
                self.images_logged = True
        return data.normalize(x), y, weight

    def optimizer_step(self, batch):
        """Zero grads, forward, backward over the micro-batches, clip, step; returns (mean loss, metric sum)."""
        p = self.parts
        model, opt, scaler, reg = p.forward, p.optimizer, p.scaler, p.regularizer
        result = {}

        def closure():
            opt.zero_grad(set_to_none=True)
            losses, scores = [], []
            for x, y, weight in batch:
                with p.autocast():
                    out = model(x).float()
                    loss = reg.add_penalty(p.criterion(out, y))
                    if len(batch) > 1:  # accumulated gradients: the mean over the micro-batches
                        loss = loss / len(batch)
                # the gradient uses the shard-weighted loss; the reported loss is this shard's own
                scaler.scale(loss * weight if weight != 1 else loss).backward()
                losses.append(loss.detach())
                scores.append(metric(out.detach(), y, p.data.task))
            if scaler.is_enabled():
                scaler.unscale_(opt)
            reg.clip_gradients()
            # sums that start from the first term: no extra tensor op for the usual single micro-batch
            result.update(loss=sum(losses[1:], losses[0]), score=sum(scores[1:], scores[0]))
            return result["loss"]

        if self.closure_step:
            opt.step(closure)  # L-BFGS evaluates the closure several times per step
        else:
            closure()
            scaler.step(opt)
            scaler.update()
        reg.constrain()
        return result["loss"], result["score"]

    def log_step(self, loss: float, score: float) -> None:
        if self.tb:
            self.tb.scalars({"step/loss": loss, f"step/{self.parts.metric}": score}, self.step)
            self.tb.grad_norms(self.parts.model, self.step)

    def end_of_epoch(self, epoch: int, train_metrics: dict, seconds: float, seen: int) -> Stop | None:
        """Evaluate, log, step the epoch scheduler, decide whether to stop, checkpoint when due."""
        p, tc = self.parts, self.parts.cfg.trainer
        values = {**train_metrics, "epoch": epoch, "time/epoch_s": seconds, "time/samples_per_s": seen / seconds}
        if not math.isfinite(train_metrics["train/loss"]) and tc.early_stopping.stop_on_nonfinite:
            self.stopped(self.rules.diverged(train_metrics["train/loss"], epoch, self.step))
            return self.stop
        lr_stepped = p.average is not None and p.average.after_epoch(p.model, epoch, self.train_inputs)
        if (epoch % tc.eval_every == 0 or epoch == tc.epochs) and len(p.data.val):
            val = evaluate(p.forward, p.data.val, p.data, p.criterion, p.cfg.data.eval_batch_size, p.autocast)
            values.update({f"val/{k}": v for k, v in val.items()})
            if p.average is not None and p.average.count:
                val = evaluate(p.average.module, p.data.val, p.data, p.criterion, p.cfg.data.eval_batch_size,
                               p.autocast)
                values.update({f"val_{p.cfg.averaging.kind}/{k}": v for k, v in val.items()})
        if self.tb:
            self.tb.epoch(values, self.step)
            self.tb.histograms(p.model, probe_batch(p.data, 128), self.step, epoch)
        if self.layer_log:
            self.measure_layers(epoch)
        if p.scheduler is not None and p.cfg.scheduler.interval == "epoch" and not lr_stepped:
            if not SCHEDULERS.trait(p.cfg.scheduler, "steps_on_metric"):
                p.scheduler.step()
            elif p.stopper.monitor in values:
                p.scheduler.step(values[p.stopper.monitor])
        self.judged, weights = judged, weights = self.preferred(values)
        stop, improved = self.rules.after_epoch(judged, epoch)
        if improved:  # kept in memory; best.pt is written with the next checkpoint
            metrics = {k: v for k, v in values.items() if "/" in k and not k.startswith("time/")}
            self.checkpointer.keep_best(p.model if weights == "raw" else p.average.module, epoch, metrics, weights)
        self.ui.epoch(epoch, values, improved)
        final = epoch == tc.epochs or self.out_of_steps()  # fit's end checkpoints it
        if stop:
            self.stopped(stop)
        elif self.world.agree(self.checkpointer.due(self.step, epoch) and not final):
            self.save_checkpoint()
        return stop

    def averaging_sets_lr(self, epoch: int) -> bool:
        return self.parts.average is not None and self.parts.average.sets_lr(epoch)

    def train_inputs(self):
        """The training inputs, normalized, without augmentation: what SWA recomputes batch-norm statistics on."""
        data, size = self.parts.data, self.parts.cfg.data.eval_batch_size
        slices = [slice(start, start + size) for start in range(0, len(data.train), size)]
        data.train.plan(slices)
        return (data.normalize(data.fetch(data.train, s)[0]) for s in slices)

    def preferred(self, values: dict) -> tuple[dict, str]:
        """With averaging, the better of the raw and the averaged weights on the monitored validation metric:
        the values early stopping judges (the monitored one is that better value), and whose it is
        ("raw", or the averaging's name)."""
        p = self.parts
        monitor, kind = p.stopper.monitor, p.cfg.averaging.kind
        split, _, name = monitor.partition("/")
        averaged = f"val_{kind}/{name}"
        if split != "val" or averaged not in values or monitor not in values:
            return values, "raw"
        better = values[averaged] < values[monitor] if p.stopper.mode == "min" else values[averaged] > values[monitor]
        return ({**values, monitor: values[averaged]}, kind) if better else (values, "raw")

    def measure_layers(self, epoch: int) -> None:
        """layers.json (and TensorBoard's per_layer/ tags): each block's activations and each weight's gradient
        on the probe batch."""
        data = self.parts.data
        split = data.val if len(data.val) else data.train
        x, y = data.fetch(split, slice(0, PROBE))
        stats = measure(self.parts.model, data.normalize(x), y, self.parts.criterion)
        self.layer_log.add(epoch, self.step, stats)
        if self.tb:
            self.tb.scalars({f"per_layer/activation_std/{name}": a["std"] for name, a in stats["activations"].items()
                             if a["std"] is not None}, self.step)

    def save_checkpoint(self) -> None:
        if self.tb:  # the events up to this step reach the disk before the checkpoint that covers them
            self.tb.flush()
        reason = self.stop.reason if self.stop else "completed" if self.completed else "running"
        counters = {"step": self.step, "epoch": self.epoch, "stop_reason": reason,
                    "stop_message": self.stop.message if self.stop else "",
                    "seconds": self.earlier_seconds + time.perf_counter() - self.started,
                    "threads": torch.get_num_threads(),  # a resume on another count is equal only up to rounding
                    "judged": self.judged}  # what a population ranks it by (hparams_search=pbt)
        self.checkpointer.save(counters, {"progress": asdict(self.progress)})

    def restore(self, saved: dict) -> None:
        """Continue from a last.pt: every part, the counters, this rank's progress and RNG."""
        own = self.checkpointer.restore(saved)
        self.step, self.progress = saved["step"], EpochProgress(**own["progress"])
        self.earlier_seconds = saved["seconds"]
        self.judged = saved.get("judged", {})
        if saved["stop_reason"] not in ("running", "interrupted", "completed"):
            self.stop = Stop(saved["stop_reason"], saved["stop_message"])
        self.images_logged = True  # logged once, by the first process


def grouped(indices, size):
    group = []
    for idx in indices:
        group.append(idx)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


@torch.no_grad()
def evaluate(model, split: Split, data: Data, criterion, batch_size: int, autocast) -> dict[str, float]:
    """Mean loss and accuracy (classification) or mean absolute error (regression) over a split."""
    model.eval()
    loss, score = torch.zeros((), device=data.device), torch.zeros((), device=data.device)
    split.plan([slice(start, start + batch_size) for start in range(0, len(split), batch_size)])
    for start in range(0, len(split), batch_size):
        x, y = data.fetch(split, slice(start, start + batch_size))
        x = data.normalize(x)
        with autocast():
            out = model(x).float()
        loss += criterion(out, y) * len(y)
        score += metric(out, y, data.task)
    n = max(len(split), 1)
    return {"loss": float(loss) / n, data.metric: float(score) / n}


@torch.no_grad()
def evaluate_mc_dropout(model, split: Split, data: Data, samples: int, batch_size: int) -> dict[str, float]:
    """Monte-Carlo dropout: accuracy of the mean softmax over `samples` passes with dropout on, and the mean
    predictive entropy (of that mean softmax, in nats) over the samples it gets right and those it gets wrong."""
    model.eval()
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.AlphaDropout)):
            m.train()
    correct, entropy = [], []
    for start in range(0, len(split), batch_size):
        x, y = data.fetch(split, slice(start, start + batch_size))
        x = data.normalize(x)
        probs = torch.stack([model(x).float().softmax(1) for _ in range(samples)]).mean(0)
        correct.append(probs.argmax(1) == y)
        entropy.append(-(probs * probs.clamp_min(1e-12).log()).sum(1))
    model.eval()
    correct, entropy = torch.cat(correct), torch.cat(entropy)
    mean = lambda t: float(t.mean()) if len(t) else None  # noqa: E731  (no sample of that kind)
    return {"test/mc_acc": float(correct.float().mean()) if len(correct) else 0.0,
            "test/mc_entropy_correct": mean(entropy[correct]), "test/mc_entropy_wrong": mean(entropy[~correct])}


def probe_batch(data: Data, size: int) -> torch.Tensor:
    """The first `size` validation (else train) inputs, normalized: the fixed batch for graphs and activations."""
    split = data.val if len(data.val) else data.train
    return data.normalize(data.fetch(split, slice(0, size))[0])


def finish(run: Training, overrides: dict) -> dict:
    """Test the best weights, write metrics.json (strict JSON), log the HParams, show the summary."""
    p, cfg = run.parts, run.parts.cfg
    best, weights = run.checkpointer, "raw"
    if cfg.trainer.early_stopping.restore_best and best.best_state is not None:
        p.model.load_state_dict(best.best_state)
        weights = best.best_weights
    elif p.average is not None and p.average.count:  # no best by the monitored metric: the average at the end
        p.model.load_state_dict(p.average.module.state_dict())
        weights = cfg.averaging.kind
    eval_bs = cfg.data.eval_batch_size
    test = evaluate(p.model, p.data.test, p.data, p.criterion, eval_bs, p.autocast)
    metrics = {**best.best_metrics, **{f"test/{k}": v for k, v in test.items()}}
    if cfg.regularization.mc_dropout_samples and p.data.task == "classification":
        metrics |= evaluate_mc_dropout(p.model, p.data.test, p.data, cfg.regularization.mc_dropout_samples,
                                                     eval_bs)
    if cfg.trainer.overfit_batches:
        metrics |= overfit_verdict(metrics, cfg.trainer.overfit_batches, len(p.data.train), run.ui)
    stop_reason, message = run.stop_reason, run.stop.message if run.stop else ""
    nonfinite = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if nonfinite:  # JSON has no NaN or Infinity: such values are null, and the stop reason says why
        metrics.update({k: None for k in nonfinite}, nonfinite=nonfinite)
        if stop_reason == "completed":
            stop_reason = "diverged"
            message = f"completed with non-finite {', '.join(nonfinite)} (trainer.early_stopping.stop_on_nonfinite=false)"
    if p.average is not None:  # which weights were tested: the averaging's (ema, swa) or the run's own (raw)
        metrics["test_weights"] = weights
        if not p.average.count:
            run.ui.note(f"averaging={cfg.averaging.kind} averaged nothing: the run ended at epoch {run.epoch}, before "
                        f"averaging.start_epoch={cfg.averaging.start_epoch}")
    metrics.update(best_epoch=p.stopper.best_epoch, epochs_run=run.epoch, steps=run.step, stop_reason=stop_reason,
                   wall_time_s=round(run.earlier_seconds + time.perf_counter() - run.started, 3))
    if p.device.type == "cuda":  # of this process (since it started, so a resumed run counts its own part)
        metrics["peak_cuda_memory_mib"] = round(torch.cuda.max_memory_allocated(p.device) / 2**20, 1)
    if run.tb:
        chosen = {k: hparam_value(v) for k, v in overrides.items() if not k.startswith(("trainer.resume", "trainer.pruning."))}
        run.tb.hparams({**chosen, **default_hparams(cfg, p.loss_name)},  # what was chosen first
                       {k: v for k, v in metrics.items() if "/" in k and v is not None}, run.step,
                       in_sweep=(run.run_dir.parent / "multirun.yaml").is_file())
        run.tb.close()
    if p.data.class_names:  # so that predictions (class indices) can be read back as the data's own labels
        (run.run_dir / "classes.json").write_text(json.dumps(p.data.class_names) + "\n")
    tmp = run.run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    tmp.replace(run.run_dir / "metrics.json")
    run.ui.summary(metrics, run.run_dir, message)
    return metrics


def default_hparams(cfg: Config, loss_name: str) -> dict:
    """What the HParams dashboard compares: every group's choice and the knobs most often swept."""
    groups = {g: getattr(cfg, g).kind for g in OPTION_GROUPS}
    reg = [k for k, v in values_of(cfg.regularization).items() if v]
    return {**groups, "loss": loss_name, "regularization": ",".join(reg) or "none",
            "augmentation": ",".join(cfg.augmentation) or "none", "lr": cfg.optimizer.lr,
            "batch_size": str(cfg.data.batch_size), "seed": cfg.trainer.seed}
