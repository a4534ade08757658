"""One run over two CPU processes (gloo, DistributedDataParallel) takes the steps of one process."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, cli, read_metrics

spec = importlib.util.spec_from_file_location("chaos", ROOT / "scripts" / "chaos.py")
chaos = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chaos)  # the run scripts/chaos.py kills and resumes

# 251 samples: the last global batch of 59 splits 30/29, which the shard weighting must get right
COMMON = ["data.subset=251", "data.batch_size=64", "trainer.epochs=3", "logger.enabled=false",
          "regularization.weight_decay=1e-3"]


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh
# adam in memory and sgd streamed: sgd in memory (31 s of CI's 30 minutes) adds no path of its own
@pytest.mark.parametrize("optimizer,streamed", [("adam", False), ("sgd", True)])
def test_two_gloo_processes_match_one_process(tmp_path, optimizer, streamed):
    one = cli(*COMMON, f"optimizer={optimizer}", f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    # streamed: each process gathers only its shard's rows from the memory map
    two = cli(*COMMON, f"optimizer={optimizer}", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'two'}",
              *(["data.host_memory_gb=0.0001"] if streamed else []), cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
    m1, m2 = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert m1["steps"] == m2["steps"] == 12
    for key in ("train/loss", "val/loss", "test/loss", "test/acc"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    assert two.stdout.count("╭─ trainrun") == 1  # only rank 0 prints
    assert not (tmp_path / "outputs").exists()  # and only rank 0 writes, where it was told to


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh
def test_two_processes_stopped_by_ctrl_c_resume_exactly(tmp_path):
    """Ctrl-C reaches every process of the terminal's group: each rank finishes its step, rank 0 checkpoints
    every rank's random state and partial sums, and the resumed 2-process run ends bit-identical."""
    run = [*chaos.RUN, "trainer.devices=2"]
    reference = cli(*run, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    victim = tmp_path / "victim"
    proc = subprocess.Popen([sys.executable, "-m", "trainrun", *run, f"hydra.run.dir={victim}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    chaos.wait_for_new_checkpoint(proc, victim / "last.pt", 0)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "error" not in err, err[-2000:]
    stopped = torch.load(victim / "last.pt", weights_only=True)
    assert stopped["stop_reason"] == "interrupted"
    assert len(stopped["per_rank"]) == 2
    assert f"trainrun trainer.resume={victim}" in out.replace("\n", "")
    resumed = cli(*chaos.RUN, f"trainer.resume={victim}", cwd=tmp_path)  # as printed: 2 processes again
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert chaos.compare(tmp_path / "reference", victim) == (True, True)
    assert not (tmp_path / "outputs").exists()  # the resumed run continued in its own directory


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh
def test_batch_norm_over_two_processes_learns_with_rank_0s_running_statistics(tmp_path):
    """Without SyncBatchNorm (GPU-only) each rank normalizes its shard by the shard's statistics, and DDP
    broadcasts rank 0's running statistics before every forward pass, so evaluation uses one set."""
    result = cli("data.subset=null", "norm=batch", "trainer.devices=2", "trainer.epochs=3", "logger.enabled=false",
                 f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_metrics(tmp_path / "run")["test/acc"] > 0.85
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    running_var = [v for k, v in weights.items() if k.endswith("running_var")]
    assert running_var and all(not torch.allclose(v, torch.ones_like(v)) for v in running_var)
