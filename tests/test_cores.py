"""Sharing the cores: a run whose threads are not set takes all of them alone and its share beside other trainrun
processes, following them as they start and end (run/cores.py)."""
from __future__ import annotations

import subprocess
import os
import sys

import torch

from trainrun.run import cores


def test_a_run_takes_its_share_of_the_cores_while_another_trainrun_process_lives(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "registry", lambda: tmp_path)
    monkeypatch.setattr(cores, "SECONDS", 0.0)
    share = cores.CoreShare()
    share.cores = 4
    before = torch.get_num_threads()
    try:
        share.adjust()
        assert torch.get_num_threads() == 4  # alone: every core
        holder = subprocess.Popen([sys.executable, "-c", (  # another process, registered as trainrun registers
            "import fcntl, sys, time; f = open(sys.argv[1], 'wb'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(60)"), str(tmp_path / "999999")], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        share.adjust()
        assert torch.get_num_threads() == 2  # beside one other: half
        holder.kill()
        holder.wait()
        share.adjust()
        assert torch.get_num_threads() == 4  # it ended: its file is removed and the cores are this run's again
        assert sorted(p.name for p in tmp_path.iterdir()) == [str(os.getpid())]
    finally:
        torch.set_num_threads(before)


def test_a_thread_count_given_is_kept(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cores.shares_cores(None, cpu, 1, deterministic=False)
    assert not cores.shares_cores(2, cpu, 1, False)  # trainer.threads, or a parallel launcher's share
    assert not cores.shares_cores(None, cpu, 2, False)  # several processes of one run: torchrun gives each its own
    assert not cores.shares_cores(None, cpu, 1, deterministic=True)  # bit for bit whatever else runs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert not cores.shares_cores(None, cpu, 1, False)
