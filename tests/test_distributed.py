"""One run over two CPU processes (gloo, DistributedDataParallel) takes the steps of one process."""
from __future__ import annotations

import pytest
import torch

from conftest import cli, read_metrics

# 251 samples: the last global batch of 59 splits 30/29, which the shard weighting must get right
COMMON = ["data.subset=251", "data.batch_size=64", "trainer.epochs=3", "logger.enabled=false",
          "regularization.weight_decay=1e-3"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_gloo_processes_match_one_process(tmp_path, optimizer):
    one = cli(*COMMON, f"optimizer={optimizer}", f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = cli(*COMMON, f"optimizer={optimizer}", "trainer.devices=2", f"hydra.run.dir={tmp_path / 'two'}", cwd=tmp_path)
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
