"""The CUDA path: device placement, mixed precision, compile, channels_last, host-memory data, no host sync
inside a step, NCCL. These need a GPU, so they are skipped elsewhere (run `pytest tests/test_cuda.py` on one)."""
from __future__ import annotations

import logging

import pytest
import torch

from conftest import cli, read_metrics, train_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_cuda_and_reports_peak_memory(tmp_path):
    metrics = train_run(tmp_path, ["trainer.device=auto", "trainer.epochs=3", "data.subset=null"])
    assert metrics["peak_cuda_memory_mib"] > 0 and metrics["test/acc"] > 0.9


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_mixed_precision_learns_and_fp16_keeps_a_grad_scaler(tmp_path, precision):
    metrics = train_run(tmp_path, [f"trainer.precision={precision}", "trainer.epochs=5", "data.subset=null"])
    assert metrics["test/acc"] > 0.9
    scaler = torch.load(tmp_path / "last.pt", weights_only=True)["scaler"]
    assert bool(scaler) == (precision == "16-mixed")  # a disabled GradScaler has no state


def test_data_in_pinned_host_memory_train_as_on_the_device(tmp_path, caplog):
    on_device = train_run(tmp_path / "device", ["trainer.deterministic=true"])
    with caplog.at_level(logging.INFO, logger="trainrun"):
        on_host = train_run(tmp_path / "host", ["trainer.deterministic=true", "data.device_memory_gb=0"])
    assert "copied from pinned host memory" in caplog.text
    assert on_host["test/loss"] == pytest.approx(on_device["test/loss"], rel=1e-5)


def test_compile_and_channels_last_train_the_same_cnn(tmp_path):
    eager = train_run(tmp_path / "eager", ["model=cnn", "trainer.epochs=3"])
    fast = train_run(tmp_path / "fast", ["model=cnn", "trainer.epochs=3", "trainer.compile=true",
                                         "trainer.channels_last=true"])
    assert fast["test/acc"] == pytest.approx(eager["test/acc"], abs=0.03)


def test_a_step_never_waits_for_the_gpu(tmp_path, monkeypatch):
    """Batch preparation (augmentation included) and the optimizer step queue work without a host sync."""
    from trainrun.run import trainer

    def guarded(method):
        def run(self, *args):
            torch.cuda.set_sync_debug_mode("error")  # any synchronizing call raises
            try:
                return method(self, *args)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return run

    for name in ("prepare", "optimizer_step"):
        monkeypatch.setattr(trainer.Run, name, guarded(getattr(trainer.Run, name)))
    metrics = train_run(tmp_path, ["model=cnn", "augmentation=[crop,flip,noise]", "trainer.epochs=1"])
    assert metrics["stop_reason"] == "completed"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_nccl_processes_match_one(tmp_path):
    common = ["data.subset=256", "data.batch_size=64", "trainer.epochs=3", "logger.enabled=false"]
    one = cli(*common, f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    two = cli(*common, "trainer.devices=2", f"hydra.run.dir={tmp_path / 'two'}", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert read_metrics(tmp_path / "two")["test/loss"] == pytest.approx(read_metrics(tmp_path / "one")["test/loss"],
                                                                         rel=1e-3)
