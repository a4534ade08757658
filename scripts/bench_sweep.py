#!/usr/bin/env python
"""The same 8-run sweep with Hydra's basic launcher (one run after another) and with joblib on 2 workers.

    python scripts/bench_sweep.py

Prints both wall times and their ratio. Each run is a short MLP training on the bundled digits.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time

SWEEP = ["-m", "optimizer=sgd,momentum,adam,rmsprop", "init=xavier_uniform,kaiming_normal",
         "trainer.epochs=8", "trainer.early_stopping.enabled=false"]


def timed(*extra: str, cwd: str) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "trainrun", *SWEEP, *extra], cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"the sweep failed: {result.stderr[-800:]}")
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        basic = timed(cwd=tmp)
        parallel = timed("hydra/launcher=parallel", cwd=tmp)
    print(f"8-run sweep, basic launcher (sequential):  {basic:6.1f} s")
    print(f"8-run sweep, joblib, 2 workers:            {parallel:6.1f} s")
    print(f"speed-up: {basic / parallel:.2f}x")


if __name__ == "__main__":
    main()
