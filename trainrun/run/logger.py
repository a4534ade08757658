"""TensorBoard logging with torch.utils.tensorboard.SummaryWriter, into the run directory.

Every scalar is logged against the global optimizer step, so per-step and per-epoch curves share
one x-axis and train/val loss can sit on one chart (the custom-scalars layout). The values logged
together (a step's scalars, an epoch's histograms) go into one event: SummaryWriter's add_scalar and
add_histogram_raw make an event, a queue hand-off and a checksum for each value.

Tags are named so that TensorBoard, which sorts them alphabetically, opens on the curves: `acc/train`,
`acc/val`, `loss/train`, `loss/val` (or `mae/...`) come first; then `per_layer/` (with logger.layers),
`step/` (batch loss, lr, gradient norm), `summary/` (the best epoch's values and the test's, for HParams)
and `time/`. metrics.json keeps the names the rest of trainrun uses (`train/loss`).
"""
from __future__ import annotations

import dataclasses

import math
import time
import warnings
from pathlib import Path

import torch
import yaml
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from torch import nn

from ..config import LoggerConfig
from ..runfiles import epoch_tag

HISTOGRAM_SAMPLE = 1 << 16
PENDING_EVENTS = 64


def summary_tag(key: str) -> str:
    """metrics.json's end-of-run values as TensorBoard tags that say what they are: val/loss (of the best
    epoch) -> summary/val_loss_at_best_epoch; test/acc (the best weights, tested) -> summary/test_acc."""
    split, _, name = key.partition("/")
    return f"summary/{split}_{name}" + ("_at_best_epoch" if split in ("train", "val") else "")


def layer_name(param_name: str) -> str:
    return param_name.replace(".", "/")


def use_c_checksums() -> None:
    """TensorBoard (without TensorFlow) checksums every record with a pure-Python CRC32C, byte by byte, on
    a writer thread that holds the GIL the training loop needs: ~150 us for a 1.5 KB histogram record.
    google-crc32c computes the same value in C in under a microsecond."""
    import google_crc32c
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import u32
    from tensorboard.summary.writer import record_writer

    def masked_crc32c(data) -> int:
        x = google_crc32c.value(bytes(data))
        return u32(((x >> 15) | u32(x << 17)) + 0xA282EAD8)  # TFRecord's masking, as in TensorBoard's own

    record_writer.masked_crc32c = masked_crc32c


TRACED: dict = {}  # architecture -> its traced graph (TensorBoard.graph)


class TensorBoard:
    def __init__(self, cfg: LoggerConfig, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        use_c_checksums()
        self.cfg = cfg
        self.samples: dict[tuple, torch.Tensor] = {}  # histogram sample indices by tensor size
        self.pending: list = []  # events not yet handed to the writer thread
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        curves = {"loss (train vs val)": ["Multiline", ["loss/.*"]],
                  "accuracy or mean absolute error (train vs val)": ["Multiline", ["acc/.*", "mae/.*"]]}
        if getattr(cfg, "layers", False):
            curves["gradient norm per layer"] = ["Multiline", ["per_layer/grad_norm/.*"]]
        self.writer.add_custom_scalars({"curves": curves})

    # -- once ---------------------------------------------------------------------------------
    def config(self, cfg) -> None:
        """The run's config as it ran: resolved (no ${...} left), in YAML (OmegaConf's text; its own schema
        check of the typed config took 0.03-0.1 s a run, more than a small stacked run's set-up)."""
        text = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
        self.writer.add_text("config", "```yaml\n" + text + "```")

    def graph(self, model: nn.Module, example: torch.Tensor) -> str | None:
        """The model graph where it traces; returns why not otherwise. A sweep's runs of one architecture share
        one trace (its graph does not hold the weights): tracing took 45 ms a run, a third of a stacked run's
        set-up."""
        if not self.cfg.log_graph:
            return None
        from torch.utils.tensorboard._pytorch_graph import graph

        key = (repr(model), tuple(example.shape), example.dtype)
        try:
            if key not in TRACED:
                was_training = model.training
                model.eval()
                with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
                    warnings.simplefilter("ignore")
                    TRACED[key] = graph(model, example)
                model.train(was_training)
        except Exception as e:  # tracing is best effort: data-dependent control flow cannot be traced
            return str(e).splitlines()[0][:100]
        self.writer._get_file_writer().add_graph(TRACED[key])  # what SummaryWriter.add_graph writes
        return None

    def images(self, tag: str, batch: torch.Tensor) -> None:
        from torchvision.utils import make_grid

        if self.cfg.log_images and batch.dim() == 4:
            grid = make_grid(batch[:64].detach().float().cpu().clamp(0, 1), nrow=8, padding=1)
            self.writer.add_image(tag, grid, 0)

    # -- during training ------------------------------------------------------------------------
    def write(self, values: list, step: int) -> None:
        """Summary values (scalars, histograms) as one event at `step`, handed to the writer thread in batches:
        one hand-off per event would wake that thread, and take the GIL from the training loop, every step."""
        self.pending.append(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
        if len(self.pending) >= PENDING_EVENTS:
            self.hand_over()

    def hand_over(self) -> None:
        for event in self.pending:
            self.writer.file_writer.add_event(event, event.step, event.wall_time)
        self.pending = []

    def flush(self) -> None:
        """Everything logged so far, on disk."""
        self.hand_over()
        self.writer.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.write([Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()], step)

    def epoch(self, values: dict[str, float], step: int) -> None:
        """An epoch's values, by trainrun's metric names (train/loss, val/acc, time/epoch_s, epoch)."""
        self.scalars({epoch_tag(key): value for key, value in values.items()}, step)

    def grad_norms(self, model: nn.Module, step: int) -> float:
        """The global gradient norm; per layer too with logger.layers (vanishing and exploding gradients show there)."""
        named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
        if not named:
            return 0.0
        norms = torch.stack(torch._foreach_norm([g.float() for _, g in named]))  # one kernel, as clip_grad_norm_ does
        values = torch.linalg.vector_norm(norms).unsqueeze(0)
        if self.cfg.layers:
            values = torch.cat([values, norms])
        values = values.tolist()
        tags = ["step/grad_norm"] + [f"per_layer/grad_norm/{layer_name(name)}" for name, _ in named]
        self.scalars(dict(zip(tags, values)), step)
        return values[0]

    def histogram(self, tag: str, values: torch.Tensor, bins: int = 64):
        """A summary value for `values`, binned with torch.histc: a third of the cost of add_histogram's numpy.

        A tensor of more than HISTOGRAM_SAMPLE values is binned from a fixed random sample of that many,
        counts scaled to the full size (binning is the cost, ~2 ns a value); min, max, sum and sum of
        squares stay exact."""
        values = values.detach().float().flatten()
        low, high, total, squares = torch.stack([*values.aminmax(), values.sum(), values.dot(values)]).tolist()
        if not all(map(math.isfinite, (low, high, squares))):
            return None
        high = high if high > low else low + 1e-12
        binned = values if values.numel() <= HISTOGRAM_SAMPLE else values[self.sample(values.numel(), values.device)]
        counts = torch.histc(binned, bins, low, high) * (values.numel() / binned.numel())
        width = (high - low) / bins
        histogram = HistogramProto(min=low, max=high, num=values.numel(), sum=total, sum_squares=squares,
                                   bucket_limit=[low + width * (i + 1) for i in range(bins)], bucket=counts.tolist())
        return Summary.Value(tag=tag, histo=histogram)

    def sample(self, n: int, device: torch.device) -> torch.Tensor:
        """HISTOGRAM_SAMPLE random indices into n values: drawn once per size from a generator of their own
        (the run's random streams stay untouched), so each epoch's histogram samples the same positions."""
        key = (n, device)
        if key not in self.samples:
            generator = torch.Generator().manual_seed(n)
            self.samples[key] = torch.randint(n, (HISTOGRAM_SAMPLE,), generator=generator).to(device)
        return self.samples[key]

    def histograms(self, model: nn.Module, probe: torch.Tensor, step: int, epoch: int) -> None:
        """With logger.layers: weights, gradients (of the last step) and activations of each block on a fixed
        probe batch."""
        every = self.cfg.histogram_every_n_epochs
        if not self.cfg.layers or not every or epoch % every:
            return
        histograms = []
        for name, p in model.named_parameters():
            histograms.append(self.histogram(f"per_layer/weights/{layer_name(name)}", p))
            if p.grad is not None:
                histograms.append(self.histogram(f"per_layer/gradients/{layer_name(name)}", p.grad))
        outputs = {}
        hooks = [m.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
                 for name, m in model.named_children()]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(probe)
        model.train(was_training)
        for h in hooks:
            h.remove()
        for name, out in outputs.items():
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                histograms.append(self.histogram(f"per_layer/activations/{name}", out))
        self.write([h for h in histograms if h is not None], step)

    # -- at the end -----------------------------------------------------------------------------
    def hparams(self, hparams: dict, metrics: dict[str, float], step: int, in_sweep: bool) -> None:
        """The HParams dashboard: the run's choices beside its final metrics, logged as summary/<name> (see
        summary_tag). A run of a sweep writes its session only: the sweep wrote the one experiment."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        finite = {summary_tag(k): v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.scalars(finite, step)
        self.hand_over()
        experiment, session_start, session_end = hparams_summary(hparams, finite)
        for summary in (session_start, session_end) if in_sweep else (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.flush()
        self.writer.close()
