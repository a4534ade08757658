"""scripts/bench.py runs end to end: the three pipelines on one workload, and a table of what it measured."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import MNIST_DIR, ROOT


@pytest.mark.slow  # 10-20 s alone: left out of the everyday suite, run by ./scripts/test.sh
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="the benchmark expects ../shared/data/mnist")
def test_bench_measures_trainrun_the_bare_loop_and_the_tutorial_side_by_side():
    result = subprocess.run([sys.executable, "scripts/bench.py", "--workloads", "digits", "--rounds", "1",
                             "--epochs", "2", "--no-startup"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()
            if re.match(r"\s+(trainrun|bare|bare_fused|tutorial)\s", line)}
    assert set(rows) == {"trainrun", "bare", "bare_fused", "tutorial"}
    for name, (low, median, high, images_per_s, acc, rss, cuda, vs_bare, vs_tutorial) in rows.items():
        assert 0 < float(low) <= float(median) <= float(high), name
        # the median is printed to 1 ms and images/s to a whole number, which at ~1,000 images/s is ~0.7 ms of an epoch
        assert abs(1438 / float(images_per_s) - float(median)) <= 0.0005 + 1438 * 0.5 / float(images_per_s) ** 2 + 1e-9
        assert float(acc) > 0.8 and float(rss) > 100, name  # every pipeline learned the digits
    assert float(rows["bare"][7]) == 1.0 and float(rows["tutorial"][8]) == 1.0
