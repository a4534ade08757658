"""Data past data.host_memory_gb are memory-mapped from disk and gathered ahead; a user's torch Dataset streams
through a DataLoader. Both train exactly as the same data in memory do."""
from __future__ import annotations

import ctypes
import importlib.util
import json
import sys
import textwrap

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, cli, make_config, train_run

spec = importlib.util.spec_from_file_location("chaos", ROOT / "scripts" / "chaos.py")
chaos = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chaos)

TINY_BUDGET = "data.host_memory_gb=0.0001"  # digits (0.4 MB) is then past it


def same_metrics(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k != "wall_time_s"} == {k: v for k, v in b.items() if k != "wall_time_s"}


@pytest.mark.parametrize("extra", [[], ["data.sampler=replacement", "trainer.grad_accum_steps=2"],
                                   ["augmentation=[crop]", "model=cnn"], ["data=least_squares", "data.n_samples=400"]])
def test_streamed_from_disk_trains_exactly_as_in_memory(tmp_path, extra):
    args = ["trainer.deterministic=true", *extra]
    in_memory = train_run(tmp_path / "memory", args)
    streamed = train_run(tmp_path / "disk", [*args, TINY_BUDGET])
    assert same_metrics(in_memory, streamed)
    from trainrun.data import load
    from trainrun.data.stream import DiskSplit

    cfg = make_config([*args, TINY_BUDGET])  # where the streamed run's data lived: rows of a map on disk
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=not cfg.augmentation)
    assert data.home.startswith("disk, memory-mapped") and all(isinstance(s, DiskSplit) for s in (data.train, data.test))


@pytest.mark.slow  # two processes; the in-process tests check Data.home
def test_the_header_says_where_the_data_live(tmp_path):
    disk = cli("trainer.epochs=1", "data.subset=200", TINY_BUDGET, f"hydra.run.dir={tmp_path / 'd'}", cwd=tmp_path)
    assert disk.returncode == 0, disk.stderr
    assert "data in disk, memory-mapped" in " ".join(disk.stdout.split())
    memory = cli("trainer.epochs=1", "data.subset=200", f"hydra.run.dir={tmp_path / 'm'}", cwd=tmp_path)
    assert "data in cpu memory" in memory.stdout
    assert not any((tmp_path / "data" / "stream").iterdir())  # the spilled copy is unlinked once mapped


def rss_anon_mib() -> float:
    """Live anonymous memory: freed blocks glibc keeps for reuse are handed back first (they are not data)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status RssAnon on this system")


def test_a_memory_mapped_npy_larger_than_the_budget_stays_out_of_anonymous_memory(tmp_path):
    from trainrun.data import load

    n, features = 60_000, 512  # 117 MiB of float32 inputs
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(n, features))
    for start in range(0, n, 10_000):
        x[start:start + 10_000] = np.random.default_rng(start).standard_normal((10_000, features))
    x.flush()
    del x
    np.save(tmp_path / "y.npy", np.arange(n) % 10)
    cfg = make_config(["data=arrays", f"data.path={tmp_path / 'x.npy'}", f"data.targets={tmp_path / 'y.npy'}",
                       "data.host_memory_gb=0.03"])
    before = rss_anon_mib()
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    batches = [torch.randperm(len(data.train))[i:i + 256] for i in range(0, 256 * 40, 256)]
    data.train.plan(batches)
    for idx in batches:
        x, _ = data.fetch(data.train, idx)
        assert x.shape == (256, features)
    grew = rss_anon_mib() - before
    assert "disk" in data.home
    assert grew < 40, f"anonymous memory grew {grew:.0f} MiB while streaming 117 MiB"


def test_a_folders_cache_is_memory_mapped_and_streams(tmp_path):
    from torchvision.io import write_png

    for label in range(2):
        (tmp_path / "imgs" / f"c{label}").mkdir(parents=True)
        for i in range(20):
            write_png(torch.full((1, 8, 8), 40 + 150 * label, dtype=torch.uint8), str(tmp_path / "imgs" / f"c{label}" / f"{i}.png"))
    args = ["data=folder", f"data.root={tmp_path / 'imgs'}", "trainer.deterministic=true", "data.subset=null"]
    budget = "data.host_memory_gb=0.000001"  # 1 KB: the 40 images (2.5 KB) are past it
    first = train_run(tmp_path / "first", args)  # decodes and caches
    streamed = train_run(tmp_path / "second", [*args, budget])  # reads the cache's pages
    assert same_metrics(first, streamed)
    assert streamed["test/acc"] == 1.0
    # and it is the cache file's own pages that are mapped: not a copy spilled to $TRAINRUN_DATA/stream
    from trainrun.data import load
    from trainrun.data.stream import DiskSplit

    cfg = make_config([*args, budget])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    assert isinstance(data.train, DiskSplit) and "disk, memory-mapped" in data.home
    maps = Path("/proc/self/maps").read_text().splitlines()
    cached = [line for line in maps if "folder-cache" in line]
    assert cached and not any("(deleted)" in line for line in cached)
    assert not any("spill-" in line for line in maps)


@pytest.mark.slow  # 10-20 s: a kill and a resume
def test_a_streamed_run_killed_mid_epoch_resumes_bit_identically(tmp_path):
    reference = chaos.trainrun(f"hydra.run.dir={tmp_path / 'reference'}")
    assert reference.wait() == 0, reference.stderr.read()
    victim = chaos.trainrun(TINY_BUDGET, f"hydra.run.dir={tmp_path / 'victim'}")
    chaos.wait_for_new_checkpoint(victim, tmp_path / "victim" / "last.pt", 0)
    victim.kill()
    victim.wait()
    resumed = chaos.trainrun(TINY_BUDGET, f"trainer.resume={tmp_path / 'victim'}")
    assert resumed.wait() == 0, resumed.stderr.read()
    assert chaos.compare(tmp_path / "reference", tmp_path / "victim") == (True, True)


USER_DATASETS = '''
    import torch
    from torch.utils.data import Dataset
    from sklearn.datasets import load_digits


    class Digits(Dataset):
        """Digits as (uint8 image, label) pairs, one at a time, as a user's Dataset reads files."""
        def __init__(self, rows=None, named=True):
            d = load_digits()
            self.x = torch.tensor(d.images * 15, dtype=torch.uint8).unsqueeze(1)
            self.y = d.target.tolist()
            self.rows = list(range(len(self.y))) if rows is None else rows
            if named:
                self.classes = [str(c) for c in range(10)]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.x[self.rows[i]], self.y[self.rows[i]]


    def one():
        return Digits()


    def split():
        return Digits(list(range(1400))), Digits(list(range(1400, 1797)))


    def named_splits():
        return {"train": Digits(list(range(1200))), "val": Digits(list(range(1200, 1400))),
                "test": Digits(list(range(1400, 1797)))}


    def unnamed():
        return Digits(named=False)


    def bad_keys():
        return {"training": Digits()}
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_datasets.py").write_text(textwrap.dedent(USER_DATASETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_datasets"
    sys.modules.pop("user_datasets", None)


def test_a_torch_dataset_streams_through_worker_processes_and_learns(tmp_path, user_module):
    args = ["data=custom", f"data._target_={user_module}.one", "trainer.deterministic=true", "trainer.epochs=3"]
    in_process = train_run(tmp_path / "w0", [*args, "data.num_workers=0"], tiny=False)
    workers = train_run(tmp_path / "w2", [*args, "data.num_workers=2"], tiny=False)
    assert workers["test/acc"] > 0.9
    assert same_metrics(in_process, workers)  # the same batches, whichever process loaded them
    assert json.loads((tmp_path / "w2" / "classes.json").read_text()) == [str(c) for c in range(10)]


PIDS = """
import os
import torch
from torch.utils.data import Dataset


class ReaderPid(Dataset):
    classes = ["a", "b"]

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.tensor([float(os.getpid())]), i % 2


def make(seed):
    return ReaderPid()
"""


def test_a_torch_datasets_items_are_read_in_the_workers_not_the_training_process(tmp_path, monkeypatch):
    import os

    from trainrun.data import load

    (tmp_path / "pids.py").write_text(PIDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = make_config(["data=custom", "data._target_=pids.make", "data.num_workers=2", "data.normalize=none"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=False)
    batches = [slice(0, 16), slice(16, 32), slice(32, 48)]
    data.train.plan(batches)
    readers = {int(v) for idx in batches for v in data.train.take(idx)[0].flatten().tolist()}
    assert os.getpid() not in readers and len(readers) == 2  # both workers, never this process
    sys.modules.pop("pids", None)


@pytest.mark.parametrize("function,sizes", [("split", (1260, 140, 397)), ("named_splits", (1200, 200, 397))])
def test_a_dataset_per_split_is_taken_as_given(tmp_path, user_module, function, sizes):
    from trainrun.data import load

    cfg = make_config(["data=custom", f"data._target_={user_module}.{function}", "data.num_workers=0"])
    data = load(cfg.data, 0, torch.device("cpu"), prenormalize=True)
    assert (len(data.train), len(data.val), len(data.test)) == sizes
    assert data.input_shape == (1, 8, 8) and data.num_outputs == 10 and "torch Dataset" in data.home


@pytest.mark.parametrize("function,extra,message", [
    ("unnamed", [], "has neither .classes nor .targets: set data.num_classes"),
    ("bad_keys", [], "expected keys train (and val, test), got training"),
])
@pytest.mark.slow  # everyday tier under 10 min: 16 s of a worker here
def test_bad_datasets_are_one_line(tmp_path, user_module, function, extra, message):
    proc = cli("data=custom", f"data._target_={user_module}.{function}", *extra, f"hydra.run.dir={tmp_path / 'r'}",
               cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_a_dataset_without_class_names_runs_with_num_classes(tmp_path, user_module):
    metrics = train_run(tmp_path, ["data=custom", f"data._target_={user_module}.unnamed", "data.num_classes=10",
                                   "data.num_workers=0"])
    assert metrics["test/acc"] > 0.5
