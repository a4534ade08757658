"""The training run: build every choice from the config, train with early stopping, test, write metrics.

`train(cfg, run_dir, ui)` is the whole product without the command line; the loop in `fit` reads
top to bottom: batches are index slices of tensors already on the device, augmented and normalized
as whole batches, then one optimizer step (a closure, so L-BFGS and the rest share it).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import checkpoint, distributed
from .augmentation import make_augmentation
from .checkpoint import CheckpointError
from .config import ConfigError
from .console import SilentConsole
from .data import Batches, Data, Split, load
from .logger import TensorBoard
from .loss import make_loss, metric
from .model import build_model
from .optimizer import make_optimizer
from .regularization import Regularizer
from .registry import OPTIMIZERS, PRECISIONS, SCHEDULERS
from .scheduler import make_scheduler, plan_for
from .search import open_trial

log = logging.getLogger("trainrun")


# ------------------------------------------------------------------------------------------------
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


def monitor_mode(cfg: DictConfig) -> str:
    if cfg.mode != "auto":
        return cfg.mode
    return "max" if cfg.monitor.endswith("acc") else "min"


# ------------------------------------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # both ways: the runs of a sweep share one process, and one run's choice must not leak into the next
    torch.use_deterministic_algorithms(deterministic)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available; use trainer.device=cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device=mps but MPS is not available here; use trainer.device=cpu or auto")
    return torch.device(name)


@torch.no_grad()
def evaluate(model, split: Split, data: Data, criterion, batch_size: int, autocast) -> dict[str, float]:
    """Mean loss and accuracy (classification) or mean absolute error (regression) over a split."""
    model.eval()
    loss, score = torch.zeros((), device=data.device), torch.zeros((), device=data.device)
    for start in range(0, len(split), batch_size):
        x, y = data.fetch(split, slice(start, start + batch_size))
        x = data.normalize(x)
        with autocast():
            out = model(x).float()
        loss += criterion(out, y) * len(y)
        score += metric(out, y, data.task)
    n = max(len(split), 1)
    return {"loss": float(loss) / n, metric_name(data): float(score) / n}


@torch.no_grad()
def evaluate_mc_dropout(model, split: Split, data: Data, samples: int, batch_size: int) -> float:
    """Monte-Carlo dropout: accuracy of the mean softmax over `samples` passes with dropout on."""
    model.eval()
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.AlphaDropout)):
            m.train()
    correct = 0
    for start in range(0, len(split), batch_size):
        x, y = data.fetch(split, slice(start, start + batch_size))
        x = data.normalize(x)
        probs = torch.stack([model(x).float().softmax(1) for _ in range(samples)]).mean(0)
        correct += int((probs.argmax(1) == y).sum())
    model.eval()
    return correct / max(len(split), 1)


def probe_batch(data: Data, size: int) -> torch.Tensor:
    """The first `size` validation (else train) inputs, normalized: the fixed batch for graphs and activations."""
    split = data.val if len(data.val) else data.train
    return data.normalize(data.fetch(split, slice(0, size))[0])


def metric_name(data: Data) -> str:
    return "acc" if data.task == "classification" else "mae"


# ------------------------------------------------------------------------------------------------
def train(cfg: DictConfig, run_dir: Path, ui, overrides: dict | None = None) -> dict:
    """Build the run from `cfg`, train it, test the best weights; returns (and writes) metrics.json.

    `overrides` are the command line's key=value pairs: shown in the HParams dashboard, and checked
    against the saved run when resuming (trainer.resume: run_dir is then the run being resumed).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = overrides or {}
    saved = None
    world = distributed.environment()
    if not world.is_main:
        ui = SilentConsole()
    if cfg.trainer.resume:
        resumed_dir = checkpoint.find_run(cfg.trainer.resume)  # run_dir too, except on ranks other than 0
        saved = checkpoint.load(resumed_dir / "last.pt")
        cfg = checkpoint.resumed_config(cfg, saved["config"], [k.lstrip("+~") for k in overrides])
        if saved["stop_reason"] not in ("running", "interrupted") and (resumed_dir / "metrics.json").is_file():
            ui.note(f"{run_dir} already finished ({saved['stop_reason']}); nothing to resume")
            return json.loads((run_dir / "metrics.json").read_text())
    tc = cfg.trainer
    if tc.threads:
        torch.set_num_threads(tc.threads)
        log.info("torch threads: %d", tc.threads)
    seed_everything(tc.seed, tc.deterministic)
    device = distributed.setup(world, pick_device(tc.device))
    data = load(cfg.data, tc.seed, device, prenormalize=not cfg.augmentation)
    model, reused = build_model(cfg, data)
    model.to(device)
    if tc.channels_last and data.is_image:
        model.to(memory_format=torch.channels_last)
        data.memory_format = torch.channels_last
    augment = make_augmentation(cfg.augmentation, data)
    criterion, loss_name = make_loss(cfg.loss, data.task, data.num_classes, cfg.regularization.label_smoothing)
    optimizer = make_optimizer(cfg.optimizer, model, reused)
    batch_size = len(data.train) if cfg.data.batch_size == "full" else cfg.data.batch_size
    batches = Batches(len(data.train), batch_size, cfg.data.sampler, tc.seed, data.train.x.device)
    steps_per_epoch = math.ceil(len(batches) / tc.grad_accum_steps)
    es_cfg = tc.early_stopping
    stopper = EarlyStopping(es_cfg.monitor, monitor_mode(es_cfg), es_cfg.patience, es_cfg.min_delta, es_cfg.enabled)
    known = {f"{split}/{name}" for split in ("train", "val") for name in ("loss", metric_name(data))}
    if stopper.monitor not in known:
        raise ConfigError(f"trainer.early_stopping.monitor={stopper.monitor} is not a metric of this run; "
                          f"choose one of: {', '.join(sorted(known))}")
    if stopper.monitor.startswith("val/") and len(data.val) == 0:
        raise ConfigError(f"trainer.early_stopping.monitor={stopper.monitor} needs a validation split: "
                          "set data.val_fraction > 0, or monitor train/loss")
    scheduler = make_scheduler(cfg.scheduler, optimizer, plan_for(cfg.scheduler, tc.epochs, steps_per_epoch, tc.max_steps, stopper.mode))
    precision = PRECISIONS[tc.precision].traits
    if precision.get("grad_scaler") and device.type == "cpu":
        log.warning(f"trainer.precision={tc.precision} on CPU is slow and rarely helps; bf16 is the CPU choice")
    dtype = getattr(torch, precision["autocast"]) if "autocast" in precision else None
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=precision.get("grad_scaler", False))
    forward = model
    if world.size > 1:
        forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        torch.manual_seed(tc.seed + world.rank)  # dropout and augmentation draw differently on each rank
    if tc.compile:
        forward = torch.compile(forward)

    # a resumed run appends to its event file; purge_step drops what the stopped process logged after its checkpoint
    tb = TensorBoard(cfg.logger, run_dir, purge_step=saved["step"] + 1 if saved else None) \
        if cfg.logger.enabled and world.is_main else None
    if tb and not saved:
        tb.config(cfg)
        failure = tb.graph(model, probe_batch(data, 8))
        if failure:
            log.info("model graph not logged: %s", failure)
    ui.header(cfg, device, data, model, run_dir)

    run = Run(cfg, run_dir, data, model, forward, optimizer, scheduler, scaler, batches, augment, criterion,
              Regularizer(cfg.regularization, model), stopper, autocast, tb, ui, steps_per_epoch, world, started=started,
              trial=open_trial(tc.pruning) if world.is_main else None)
    if saved:
        run.restore(saved)
        ui.note(f"resuming {run_dir} at epoch {run.progress.epoch}, step {run.step}")
    if run.stop_reason == "running":
        run.fit()
        run.finish()
    distributed.teardown(world)
    if not world.is_main:  # rank 0 tests and reports
        return {}

    # ---- test the best weights, write metrics.json
    if tc.early_stopping.restore_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    eval_bs = cfg.data.eval_batch_size
    test = evaluate(model, data.test, data, criterion, eval_bs, autocast)
    metrics = {**run.best_metrics, **{f"test/{k}": v for k, v in test.items()}}
    if cfg.regularization.mc_dropout_samples and data.task == "classification":
        metrics["test/mc_acc"] = evaluate_mc_dropout(model, data.test, data, cfg.regularization.mc_dropout_samples, eval_bs)
    metrics.update(best_epoch=run.stopper.best_epoch, epochs_run=run.epoch, steps=run.step, stop_reason=run.stop_reason,
                   wall_time_s=round(run.earlier_seconds + time.perf_counter() - run.started, 3))
    if device.type == "cuda":  # of this process (since it started, so a resumed run counts its own part)
        metrics["peak_cuda_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if tb:
        tb.hparams({**default_hparams(cfg, loss_name), **overrides},
                   {k: v for k, v in metrics.items() if "/" in k}, run.step)
        tb.close()
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(run_dir / "metrics.json")
    ui.summary(metrics, run_dir, run.stop_message)
    return metrics


def default_hparams(cfg: DictConfig, loss_name: str) -> dict:
    """What the HParams dashboard compares: every group's choice and the knobs most often swept."""
    groups = {g: cfg[g].kind for g in ("data", "model", "activation", "init", "norm", "optimizer", "scheduler")}
    reg = [k for k, v in cfg.regularization.items() if v]
    return {**groups, "loss": loss_name, "regularization": ",".join(reg) or "none",
            "augmentation": ",".join(cfg.augmentation) or "none", "lr": cfg.optimizer.lr,
            "batch_size": str(cfg.data.batch_size), "seed": cfg.trainer.seed}


@dataclass
class EpochProgress:
    """Where the run is inside an epoch: enough to resume mid-epoch with identical epoch metrics."""

    epoch: int = 1
    steps_done: int = 0
    loss_sum: float = 0.0
    score_sum: float = 0.0
    seen: int = 0
    seconds: float = 0.0


@dataclass
class Run:
    """One training run: what `train` built, the loop over it, and the state the loop updates."""

    cfg: DictConfig
    run_dir: Path
    data: Data
    model: torch.nn.Module
    forward: torch.nn.Module  # the model, or its torch.compile'd version
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    batches: Batches
    augment: Any
    criterion: Any
    regularizer: Regularizer
    stopper: EarlyStopping
    autocast: Any
    tb: TensorBoard | None
    ui: Any
    steps_per_epoch: int
    world: distributed.World = distributed.World()
    step: int = 0
    progress: EpochProgress = field(default_factory=EpochProgress)
    stop_reason: str = "running"
    stop_message: str = ""
    stop_signal: int | None = None
    best_state: dict | None = None
    best_written: int = 0  # the epoch whose weights best.pt holds
    last_checkpoint: float = field(default_factory=time.perf_counter)
    best_metrics: dict = field(default_factory=dict)
    earlier_seconds: float = 0.0  # wall time of the processes before a resume
    started: float = field(default_factory=time.perf_counter)
    writer: checkpoint.BackgroundWriter = field(default_factory=checkpoint.BackgroundWriter)
    images_logged: bool = False
    trial: Any = None  # the Optuna trial of a search, to report to and be pruned by

    def __post_init__(self):
        self.closure_step = OPTIMIZERS.trait(self.cfg.optimizer.kind, "needs_closure")
        self.config_dict = OmegaConf.to_container(self.cfg, resolve=True)  # saved with every checkpoint
        ckpt = self.cfg.trainer.checkpoint  # plain values: checkpoint_due runs every step
        self.checkpoint_every = (ckpt.every_n_epochs or 0, ckpt.every_n_steps or 0, ckpt.every_n_seconds or 0)

    @property
    def metric(self) -> str:
        return metric_name(self.data)

    @property
    def epoch(self) -> int:
        """The last epoch that ran (fully or in part)."""
        return self.progress.epoch - (self.progress.steps_done == 0)

    def fit(self) -> None:
        tc = self.cfg.trainer
        # plain values for the step loop: reading an OmegaConf node costs microseconds each time
        epochs, accum, log_every, max_steps = tc.epochs, tc.grad_accum_steps, tc.log_every_n_steps, tc.max_steps
        stop_on_nonfinite = tc.early_stopping.stop_on_nonfinite
        step_scheduler = self.scheduler if self.cfg.scheduler.interval == "step" else None
        on_cpu = self.data.device.type == "cpu"
        self.ui.start(epochs, self.steps_per_epoch, done=self.step)
        with self.signals_stop_gracefully():
            for epoch in range(self.progress.epoch, epochs + 1):
                p = self.progress
                epoch_start = time.perf_counter() - p.seconds
                loss_sum = torch.tensor(p.loss_sum, device=self.data.device)
                score_sum = torch.tensor(p.score_sum, device=self.data.device)
                self.model.train()
                for i, micro in enumerate(self.grouped(self.batches.epoch(epoch), accum)):
                    if i < p.steps_done:
                        continue  # trained before a resume: the same batches, in the same order
                    batch = [self.prepare(idx) for idx in micro]
                    loss, score = self.optimizer_step(batch)
                    self.step += 1
                    n = sum(len(y) for _, y, _ in batch)
                    loss_sum.add_(loss, alpha=n)
                    score_sum += score
                    p.seen += n
                    p.steps_done += 1
                    if step_scheduler is not None:
                        step_scheduler.step()
                    log_now = self.step % log_every == 0 or self.step == 1  # step 1: the curves start at init
                    # reading the loss is a host sync: every step on CPU (free there), on log steps on a GPU
                    nonfinite = (log_now or on_cpu) and stop_on_nonfinite and not math.isfinite(float(loss))
                    last_step = p.steps_done == self.steps_per_epoch or (max_steps and self.step >= max_steps)
                    checkpoint_due = not last_step and self.checkpoint_due()  # the epoch's end has its own
                    if self.world.size > 1:  # every rank stops, and checkpoints, at the same step
                        nonfinite, stop_anywhere, checkpoint_due = self.world.any(
                            nonfinite, self.stop_signal is not None, checkpoint_due)
                        if stop_anywhere and self.stop_signal is None:
                            self.stop_signal = signal.SIGTERM
                    if nonfinite:
                        return self.diverged(float(loss))
                    if self.tb:  # the lr every step (a schedule's steps show as steps)
                        self.tb.scalars({"lr": self.optimizer.param_groups[0]["lr"]}, self.step)
                    if log_now:
                        self.log_step(float(loss), float(score) / n)
                    self.ui.step(float(loss) if log_now else None)
                    stopping = self.stop_signal is not None
                    if stopping or checkpoint_due:
                        if stopping:
                            self.interrupted()
                        p.loss_sum, p.score_sum = float(loss_sum), float(score_sum)
                        p.seconds = time.perf_counter() - epoch_start
                        self.save_checkpoint()
                    if stopping:
                        return
                    if last_step:
                        break
                loss_sum, score_sum, seen = self.world.sum(torch.stack([loss_sum, score_sum, torch.tensor(
                    float(p.seen), device=loss_sum.device)])).tolist()  # over every rank's shard
                train_metrics = {"train/loss": loss_sum / seen, f"train/{self.metric}": score_sum / seen}
                if not math.isfinite(train_metrics["train/loss"]) and stop_on_nonfinite:
                    return self.diverged(train_metrics["train/loss"])
                self.progress = EpochProgress(epoch + 1)
                if self.end_of_epoch(epoch, train_metrics, time.perf_counter() - epoch_start, int(seen)):
                    return
                if max_steps and self.step >= max_steps:
                    break
            self.stop_reason = "completed"

    def checkpoint_due(self, epoch_ended: int = 0) -> bool:
        """A periodic checkpoint: at the end of every n-th epoch, every n-th step, or n seconds after the last."""
        epochs, steps, seconds = self.checkpoint_every
        return bool((epoch_ended and epochs and epoch_ended % epochs == 0) or (steps and self.step % steps == 0)
                    or (seconds and time.perf_counter() - self.last_checkpoint >= seconds))

    @contextlib.contextmanager
    def signals_stop_gracefully(self):
        """Ctrl-C or SIGTERM: finish the current step, checkpoint, stop. A second Ctrl-C stops at once, except
        under torchrun: its agent forwards the Ctrl-C it got too, and stops the processes itself if they hang."""
        def request_stop(signum, frame):
            if self.stop_signal is not None:
                if signum == signal.SIGINT and self.world.size == 1:
                    raise KeyboardInterrupt
                return
            self.stop_signal = signum
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
            self.ui.stop()

    @staticmethod
    def grouped(indices, size):
        group = []
        for idx in indices:
            group.append(idx)
            if len(group) == size:
                yield group
                group = []
        if group:
            yield group

    def prepare(self, idx):
        """One batch: an index slice of the train tensors, augmented and normalized as a whole.

        With several processes each takes its shard, and its loss is weighted by the shard's share of
        the global batch, so the averaged gradient is the one-process gradient of the whole batch."""
        global_size = len(idx) if isinstance(idx, torch.Tensor) else len(range(*idx.indices(len(self.data.train))))
        x, y = self.data.fetch(self.data.train, self.world.shard(idx))
        weight = len(y) * self.world.size / global_size
        if self.augment is not None:
            x, y = self.augment(x, y)
            if self.tb and not self.images_logged:
                self.tb.images("augmented_batch", x)
                self.images_logged = True
        return self.data.normalize(x), y, weight

    def optimizer_step(self, batch):
        """Zero grads, forward, backward over the micro-batches, clip, step; returns (mean loss, metric sum)."""
        model, opt, scaler, reg = self.forward, self.optimizer, self.scaler, self.regularizer
        result = {}

        def closure():
            opt.zero_grad(set_to_none=True)
            losses, scores = [], []
            for x, y, weight in batch:
                with self.autocast():
                    out = model(x).float()
                    loss = reg.add_penalty(self.criterion(out, y))
                    if len(batch) > 1:  # accumulated gradients: the mean over the micro-batches
                        loss = loss / len(batch)
                # the gradient uses the shard-weighted loss; the reported loss is this shard's own
                scaler.scale(loss * weight if weight != 1 else loss).backward()
                losses.append(loss.detach())
                scores.append(metric(out.detach(), y, self.data.task))
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
            self.tb.scalars({"train/batch_loss": loss, f"train/batch_{self.metric}": score}, self.step)
            self.tb.grad_norms(self.model, self.step)

    def end_of_epoch(self, epoch: int, train_metrics: dict, seconds: float, seen: int) -> bool:
        """Evaluate, log, step the epoch scheduler, checkpoint; True when early stopping says stop."""
        tc = self.cfg.trainer
        values = {**train_metrics, "epoch": epoch, "time/epoch_s": seconds, "time/samples_per_s": seen / seconds}
        evaluated = epoch % tc.eval_every == 0 or epoch == tc.epochs
        if evaluated and len(self.data.val):
            val = evaluate(self.forward, self.data.val, self.data, self.criterion, self.cfg.data.eval_batch_size, self.autocast)
            values.update({f"val/{k}": v for k, v in val.items()})
        if self.tb:
            self.tb.scalars(values, self.step)
            self.tb.histograms(self.model, probe_batch(self.data, 128), self.step, epoch)
        if self.scheduler is not None and self.cfg.scheduler.interval == "epoch":
            if SCHEDULERS.trait(self.cfg.scheduler.kind, "steps_on_metric"):
                if self.stopper.monitor in values:
                    self.scheduler.step(values[self.stopper.monitor])
            else:
                self.scheduler.step()
        improved = False
        if self.stopper.monitor in values:
            monitored = values[self.stopper.monitor]
            if not math.isfinite(monitored) and tc.early_stopping.stop_on_nonfinite:
                self.diverged(monitored)
                return True
            improved = self.stopper.update(monitored, epoch)
        if improved:  # kept in memory; best.pt is written with the next checkpoint
            self.best_metrics = {k: v for k, v in values.items() if "/" in k and not k.startswith("time/")}
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.ui.epoch(epoch, values, improved)
        prune = False
        if self.trial is not None and self.stopper.monitor in values:  # rank 0 reports; every rank stops
            self.trial.report(values[self.stopper.monitor], epoch)
            prune = self.trial.should_prune()
        if self.world.agree(prune):
            self.stop_reason = "pruned"
            self.stop_message = f"pruned by the search at epoch {epoch}: {self.stopper.monitor} is not promising"
            self.ui.note(self.stop_message)
            return True
        if self.world.agree(self.stopper.should_stop):
            self.stop_reason, self.stop_message = "early_stopping", "early stopping: " + self.stopper.reason()
            self.ui.note(self.stop_message)
            return True
        final = epoch == tc.epochs or (tc.max_steps and self.step >= tc.max_steps)  # finish() checkpoints it
        if self.world.agree(self.checkpoint_due(epoch) and not final):
            self.save_checkpoint()
        return False


    def diverged(self, value: float) -> None:
        self.stop_reason = "diverged"
        self.stop_message = (f"stopped at epoch {self.progress.epoch}, step {self.step}: the loss is {value} (diverged). "
                             f"Try a lower learning rate (optimizer.lr={self.cfg.optimizer.lr:g} now), "
                             "gradient clipping (regularization=clip) or a normalization layer")
        self.ui.note(self.stop_message, error=True)

    def interrupted(self) -> None:
        name = signal.Signals(self.stop_signal).name
        self.stop_reason = "interrupted"
        self.stop_message = (f"{name}: stopped at epoch {self.progress.epoch}, step {self.step}; checkpoint saved. "
                             f"Resume with: trainrun trainer.resume={self.run_dir}")
        self.ui.note(self.stop_message, error=True)

    def finish(self) -> None:
        """After the loop: the last checkpoint records how the run ended, so a resume knows it is done."""
        if self.stop_reason != "interrupted":
            self.save_checkpoint()
        self.writer.wait()

    def save_checkpoint(self) -> None:
        """Snapshot the state now; best.pt (when it changed) and last.pt are written in the background (rank 0).

        best.pt goes first: a crash between the two then never leaves a last.pt whose early stopping
        knows a better epoch than the weights in best.pt."""
        self.last_checkpoint = time.perf_counter()
        ckpt = self.cfg.trainer.checkpoint
        # each rank's own random state and partial epoch sums, so that every rank resumes exactly (a collective:
        # every rank checkpoints at the same step)
        ranks = self.world.gather({"rng": checkpoint.rng_states(), "progress": asdict(self.progress)})
        if not self.world.is_main:
            return
        if ckpt.save_best and self.best_state is not None and self.best_written != self.stopper.best_epoch:
            # the weights and what they scored; last.pt has the rest. best_state is never changed in place.
            self.writer.save({"model": self.best_state, "epoch": self.stopper.best_epoch, "metrics": self.best_metrics,
                              "config": self.config_dict}, self.run_dir / "best.pt", copy=False)
            self.best_written = self.stopper.best_epoch
        if not ckpt.save_last:
            return
        if self.tb:  # the events up to this step reach the disk before the checkpoint that covers them
            self.tb.flush()
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(), "step": self.step, "progress": [r["progress"] for r in ranks],
            "epoch": self.epoch, "early_stopping": asdict(self.stopper), "best_metrics": self.best_metrics,
            "stop_reason": self.stop_reason, "stop_message": self.stop_message,
            "seconds": self.earlier_seconds + time.perf_counter() - self.started,
            "rng": [r["rng"] for r in ranks], "config": self.config_dict,
        }
        self.writer.save(state, self.run_dir / "last.pt")

    def restore(self, saved: dict) -> None:
        """Continue from a last.pt: weights, optimizer, schedule, early stopping, position, RNGs."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.step, self.progress = saved["step"], EpochProgress(**self.world.own(saved["progress"]))
        self.stopper = EarlyStopping(**saved["early_stopping"])
        self.best_metrics, self.earlier_seconds = saved["best_metrics"], saved["seconds"]
        self.stop_reason = saved["stop_reason"] if saved["stop_reason"] != "interrupted" else "running"
        self.stop_message = saved["stop_message"] if self.stop_reason != "running" else ""
        best = self.run_dir / "best.pt"
        if best.is_file():
            saved_best = checkpoint.load(best)
            self.best_state, self.best_written = saved_best["model"], saved_best["epoch"]
        self.images_logged = True  # logged once, by the first process
        checkpoint.set_rng_states(self.world.own(saved["rng"]))
