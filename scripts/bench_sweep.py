#!/usr/bin/env python
"""Sweeps side by side, in one sitting: stacks, launchers, worker utilization of a search, resuming a killed grid.

    python scripts/bench_sweep.py [--only stacks|studies|launchers|search|grid|pbt|memory|floor] [--trials 24] [--epochs 30] [--grid 16]

0. The issue's 16- and 64-run grids of the default digits MLP (20 epochs, early stopping on) stacked (the
   default launcher), one run at a time (hydra/launcher=basic) and on joblib's 2 workers (hydra/launcher=parallel):
   the whole command's wall time, and the stacked training phase's FLOP rate against torch.mm's.

1. The same 8-run grid with the basic launcher (one run after another) and with joblib on 2 workers.
2. A 24-trial Optuna search with median pruning on digits, 2 workers on the 2 cores: Hydra-style batches
   (hydra.sweeper.in_flight=false with the joblib launcher: n_jobs trials launched, the next batch when all
   have ended) against trials in flight (the default), early stopping off (pruning alone cuts trials short).
   Reports the command's wall time and worker utilization = sum of the trial durations / (workers x the
   search's span, from the first trial's start to the last one's end: the process start-up before any trial,
   ~3 s here, is the same for both); a trial lasts from the moment its job starts in a worker (Hydra writes its
   .hydra/config.yaml) to the moment it ends (its metrics.json is written); and how busy the workers were
   training = the runs' own wall_time_s / (workers x the span by Optuna's timestamps).
3. A 16-run grid sweep killed (SIGKILL to its process group) after half its runs, then resumed by repeating
   its command: total wall time against the same sweep uninterrupted, and how many finished runs were redone.
4. Population-based training (hparams_search=pbt, 16 members, 20 epochs) against the 16-run stacked grid of
   the same epochs: the command's and the training phase's time.
5. Memory: one run alone and the 16-run stacked grid (lr x 4, weight_decay x 4) on an 80 MB array file of
   one's own (200,000 x 100 float32, generated), 1 epoch: each command's peak resident memory and wall time.
6. The floor: a stacked step of 16 and of 64 default MLPs with nothing but its math (baddbmm forward and
   backward, one fused Adam step): its time and the share of torch.mm's peak it could reach; and a run's step
   in core-milliseconds alone on one thread against stacked on every core.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def trainrun(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainrun", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - started


def utilization(sweep: Path, workers: int) -> tuple[float, float, dict]:
    """(sum of the trial durations / (workers x span), the span in seconds, how the trials ended)."""
    spans, states = [], {}
    for metrics in sweep.glob("*/metrics.json"):
        spans.append(((metrics.parent / ".hydra" / "config.yaml").stat().st_mtime_ns / 1e9,
                      metrics.stat().st_mtime_ns / 1e9))
        reason = json.loads(metrics.read_text())["stop_reason"]
        states[reason] = states.get(reason, 0) + 1
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    return sum(end - start for start, end in spans) / (workers * span), span, states


def busy(sweep: Path, workers: int) -> tuple[float, str]:
    """The sum of the runs' own wall_time_s (metrics.json) over workers x the search's span by Optuna's
    timestamps (the first trial's start to the last one's end): the share of the span workers spent training.
    And where the rest went: before the first job started (the workers' start-up), Hydra's job set-up before
    each run's clock starts (its .hydra/config.yaml to its train start), after each run (metrics.json to
    Optuna's end of the trial), the last trial running alone, and the rest (between two trials of a worker:
    the trial's set-up before its .hydra/config.yaml is written, the result's way back, the next one's way there)."""
    import optuna

    from trainrun.sweeps.search import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="trainrun", storage=make_storage(f"journal:{sweep / 'optuna.journal'}")).trials
    first, last = min(t.datetime_start for t in trials).timestamp(), max(t.datetime_complete for t in trials).timestamp()
    runs = [(t, Path(t.user_attrs["run_dir"])) for t in trials]
    job_start = {t.number: (d / ".hydra" / "config.yaml").stat().st_mtime for t, d in runs}
    ended = {t.number: (d / "metrics.json").stat().st_mtime for t, d in runs}
    trained = {t.number: json.loads((d / "metrics.json").read_text())["wall_time_s"] for t, d in runs}
    startup = workers * (min(job_start.values()) - first)
    before = sum(ended[n] - trained[n] - job_start[n] for n in ended)
    after = sum(t.datetime_complete.timestamp() - ended[t.number] for t, _ in runs)
    total = workers * (last - first)
    ends = sorted(t.datetime_complete.timestamp() for t, _ in runs)
    alone = (workers - 1) * (ends[-1] - ends[-2])  # the last trial running while the other workers have none left
    rest = total - sum(trained.values()) - startup - before - after - alone
    return sum(trained.values()) / total, (f"worker-seconds: span {total:.1f}, training {sum(trained.values()):.1f}, "
                                           f"start-up {startup:.1f}, job set-up {before:.1f}, after runs {after:.1f}, "
                                           f"the last trial alone {alone:.1f}, between trials {rest:.1f}")


def matmul_peak() -> float:
    """fp32 GFLOP/s of torch.mm on 2048x2048 matrices: the machine's practical peak."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    started, n = time.perf_counter(), 10
    for _ in range(n):
        torch.mm(a, b)
    return n * 2 * 2048**3 / (time.perf_counter() - started) / 1e9


def step_floor(runs: int, batch: int = 64, widths: tuple = (64, 256, 256, 10)) -> tuple[float, float, float]:
    """A stacked step of `runs` default MLPs with nothing but its math: (forward and backward ms, fused Adam ms,
    the multiply-add FLOPs of forward and backward)."""
    import torch

    weights = [torch.randn(runs, a, b, requires_grad=True) for a, b in zip(widths, widths[1:])]
    biases = [torch.zeros(runs, 1, b, requires_grad=True) for b in widths[1:]]
    x, y = torch.randn(runs, batch, widths[0]), torch.randint(0, widths[-1], (runs * batch,))
    adam = torch.optim.Adam([*weights, *biases], lr=1e-3, fused=True)

    def forward_backward():
        h = x
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b, h, w)
            h = h.relu() if i < len(weights) - 1 else h
        torch.nn.functional.cross_entropy(h.flatten(0, 1), y).backward()

    def timed(step, n=30) -> float:
        step()
        started = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - started) / n * 1e3

    flops = 2 * runs * batch * sum(a * b * (3 if i else 2) for i, (a, b) in enumerate(zip(widths, widths[1:])))
    return timed(forward_backward), timed(adam.step), flops


def floor() -> None:
    """What the stacked grids' training phase could reach on this machine: the step's math alone; and what a
    run's step costs in core-milliseconds stacked on every core against alone on one (a worker's share)."""
    import torch

    peak, cores = matmul_peak(), torch.get_num_threads()
    per_run = {}
    for runs in (16, 64):
        math_ms, adam_ms, flops = step_floor(runs)
        rate = flops / ((math_ms + adam_ms) / 1e3) / 1e9
        per_run[runs] = cores * (math_ms + adam_ms) / runs
        print(f"{runs} stacked MLPs, a step's math alone: forward and backward {math_ms:.2f} ms, fused Adam "
              f"{adam_ms:.2f} ms: {rate:.0f} GFLOP/s = {rate / peak:.0%} of torch.mm's {peak:.0f} GFLOP/s at best")
    torch.set_num_threads(1)
    alone = sum(step_floor(1)[:2])
    torch.set_num_threads(cores)
    print(f"a run's step in core-ms: alone on 1 thread {alone:.2f}, stacked on {cores}: "
          + ", ".join(f"{per_run[r]:.2f} in {r}" for r in per_run)
          + f" (at best {alone / min(per_run.values()):.1f}x a worker's per core)")


def training_flops(sweep: Path) -> float:
    """FLOPs the sweep's MLPs trained: 6 x (the weights' multiply-adds) per sample (forward 2, backward 4)."""
    import torch

    total = 0.0
    for metrics in sweep.glob("*/metrics.json"):
        run = metrics.parent
        config = (run / ".hydra" / "config.yaml").read_text()
        batch = int(next(line.split(":")[1] for line in config.splitlines() if line.strip().startswith("batch_size:")))
        weights = torch.load(run / "best.pt", weights_only=True)["model"]
        macs = sum(w.numel() for name, w in weights.items() if name.endswith("weight") and w.dim() == 2)
        total += 6 * macs * batch * json.loads(metrics.read_text())["steps"]
    return total


def stacked_seconds(output: str) -> float:
    """The stacks' training time, from the launcher's line for each stack."""
    return sum(float(line.split(" trained in ")[1].split(" s")[0]) for line in output.splitlines()
               if line.startswith("stacked: ") and " trained in " in line)


def stacks(tmp: Path) -> None:
    """The issue's grids, stacked against one run at a time and against joblib's 2 workers."""
    peak = matmul_peak()
    grids = {16: ["optimizer.lr=0.0003,0.001,0.003,0.01", "trainer.seed=0,1,2,3"],
             64: ["optimizer.lr=0.0003,0.001,0.003,0.01", "optimizer.weight_decay=0,0.0001,0.001,0.01",
                  "trainer.seed=0,1,2,3"]}
    for runs, grid in grids.items():
        common = ["-m", *grid, "trainer.epochs=20"]
        times = {}
        for label, extra in (("stack", []), ("basic", ["hydra/launcher=basic"]), ("joblib", ["hydra/launcher=parallel"])):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "trainrun", *common, *extra,
                                   f"hydra.sweep.dir={tmp / f'{label}{runs}'}"], cwd=tmp, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            times[label] = time.perf_counter() - started
            if label == "stack":
                training = stacked_seconds(done.stdout)
                flops = training_flops(tmp / f"stack{runs}")
        print(f"{runs}-run grid (digits MLP, 20 epochs, early stopping on): stacked {times['stack']:.1f} s, basic "
              f"{times['basic']:.1f} s ({times['basic'] / times['stack']:.2f}x), joblib on 2 workers "
              f"{times['joblib']:.1f} s ({times['joblib'] / times['stack']:.2f}x)")
        print(f"  stacked training phase: {flops / 1e9:.0f} GFLOP in {training:.2f} s = {flops / training / 1e9:.0f} "
              f"GFLOP/s, {flops / training / 1e9 / peak:.0%} of the fp32 matmul peak ({peak:.0f} GFLOP/s, torch.mm 2048^2)")


def peak_memory(args: list[str], cwd: Path) -> tuple[float, float]:
    """A trainrun command's wall time and peak resident memory (GiB), from a process of its own (whose only
    child it is)."""
    probe = ("import resource, subprocess, sys, time\n"
             "started = time.perf_counter()\n"
             "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.exit(done.stderr[-2000:]) if done.returncode else None\n"
             "print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "trainrun", *args], cwd=cwd,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    wall, kib = done.stdout.split()
    return float(wall), float(kib) / 2**20


def memory(tmp: Path) -> None:
    """A stack's runs share the data they load alike: 16 runs against one, on one's own 80 MB of arrays."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 100), dtype=np.float32)
    np.savez(tmp / "big.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    common = ["data=arrays", f"data.path={tmp / 'big.npz'}", "data.batch_size=4096", "trainer.epochs=1",
              "model.hidden=[64]", "logger.enabled=false"]
    one = peak_memory([*common, f"hydra.run.dir={tmp / 'one'}"], tmp)
    stack = peak_memory(["-m", *common, "optimizer.lr=0.001,0.002,0.003,0.004",
                         "regularization.weight_decay=0,0.0001,0.001,0.01", f"hydra.sweep.dir={tmp / 'stack'}"], tmp)
    print(f"memory, 80 MB of arrays (200,000 x 100), 1 epoch: one run {one[1]:.2f} GiB peak ({one[0]:.1f} s), the "
          f"16-run stack {stack[1]:.2f} GiB ({stack[0]:.1f} s): {stack[1] / one[1]:.2f}x one run's memory")


def studies(tmp: Path, names: list[str], size: str) -> None:
    """Studies stacked (the default launcher) against one run at a time: the command's time, the same verdicts."""
    for name in names:
        times, verdicts = {}, {}
        for label, extra in (("stack", []), ("basic", ["hydra/launcher=basic"])):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "trainrun", "-m", f"study={name}", f"study.size={size}", *extra,
                                   f"hydra.sweep.dir={tmp / f'{name}-{label}'}"], cwd=tmp, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            times[label] = time.perf_counter() - started
            verdicts[label] = next(line for line in done.stdout.splitlines() if line.startswith(f"study {name}:"))
        same = "the same verdicts" if verdicts["stack"] == verdicts["basic"] else f"verdicts DIFFER: {verdicts}"
        print(f"study {name} ({size}): stacked {times['stack']:.1f} s, one run at a time {times['basic']:.1f} s "
              f"({times['basic'] / times['stack']:.2f}x), {same}")


def launchers(tmp: Path) -> None:
    common = ["-m", "optimizer=sgd,momentum,adam,rmsprop", "init=xavier_uniform,kaiming_normal", "trainer.epochs=8",
              "trainer.early_stopping.enabled=false", "logger.enabled=false"]
    basic = trainrun([*common, f"hydra.sweep.dir={tmp / 'basic'}"], tmp)
    parallel = trainrun([*common, "hydra/launcher=parallel", f"hydra.sweep.dir={tmp / 'parallel'}"], tmp)
    print(f"8-run grid: basic launcher (sequential) {basic:.1f} s, joblib on 2 workers {parallel:.1f} s "
          f"({basic / parallel:.2f}x)")


def search(tmp: Path, trials: int, epochs: int) -> None:
    common = ["-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.n_jobs=2",
              f"trainer.epochs={epochs}", "logger.enabled=false", "trainer.early_stopping.enabled=false"]
    print(f"{trials}-trial Optuna search (TPE, median pruning) on digits, {epochs} epochs, 2 workers:")
    for label, extra in (("batches (Hydra's launcher)", ["hydra.sweeper.in_flight=false", "hydra/launcher=joblib"]),
                         ("in flight", [])):
        sweep = tmp / label.split()[0]
        wall = trainrun([*common, *extra, f"hydra.sweep.dir={sweep}"], tmp)
        used, span, states = utilization(sweep, 2)
        fraction, where = busy(sweep, 2)
        print(f"  {label:27s} command {wall:5.1f} s, trials' span {span:5.1f} s, utilization {used:.2f}, "
              f"busy training {fraction:.2f}  ({states})\n    {where}")
    slots(tmp, trials, epochs)


def slots(tmp: Path, trials: int, epochs: int, seeds: tuple = (0, 1, 2)) -> None:
    """The same search, trials in the slots of stacks in one process (the default: n_jobs 1, the stack
    launcher), against 2 workers in flight, over 3 sampler seeds: the command's time, the best trial's value,
    the epochs trained, and how full the slots were (the trials' runs, start to end, over K x the span)."""
    common = ["-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={trials}", f"trainer.epochs={epochs}",
              "logger.enabled=false", "trainer.early_stopping.enabled=false"]
    print(f"{trials}-trial Optuna search in slots against 2 workers in flight, sampler seeds {seeds}:")
    for label, extra, workers in (("2 workers in flight", ["hydra.sweeper.n_jobs=2"], 2),
                                  ("slots (default: 3)", [], 3), ("8 slots", ["hydra.sweeper.slots=8"], 8)):
        walls, bests, epochs_run, used = [], [], [], []
        for seed in seeds:
            sweep = tmp / f"slots-{label.split()[0]}-{seed}"
            walls.append(trainrun([*common, *extra, f"hydra.sweeper.seed={seed}", f"hydra.sweep.dir={sweep}"], tmp))
            runs = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
            bests.append(min(r["val/loss"] for r in runs if r.get("val/loss") is not None))
            epochs_run.append(sum(r["epochs_run"] for r in runs))
            used.append(utilization(sweep, workers)[0])
        print(f"  {label:20s} command {sum(walls) / len(walls):5.1f} s (" + ", ".join(f"{w:.1f}" for w in walls)
              + "), best val/loss " + ", ".join(f"{b:.4f}" for b in bests) + ", epochs trained "
              + ", ".join(map(str, epochs_run)) + f", slots or workers busy {sum(used) / len(used):.2f}")


def grid(tmp: Path, runs: int) -> None:
    lrs = ",".join(str(0.001 * (i + 1)) for i in range(runs // 2))
    common = ["-m", "optimizer=sgd,adam", f"optimizer.lr={lrs}", "trainer.epochs=30", "logger.enabled=false",
              "trainer.deterministic=true", "trainer.early_stopping.enabled=false"]
    whole = trainrun([*common, f"hydra.sweep.dir={tmp / 'whole'}"], tmp)
    sweep = tmp / "killed"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trainrun", *common, f"hydra.sweep.dir={sweep}"], cwd=tmp,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(sweep.glob("*/metrics.json"))) < runs // 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = time.perf_counter() - started
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    resumed = trainrun([*common, f"hydra.sweep.dir={sweep}"], tmp)
    redone = sum(p.stat().st_mtime_ns != finished_before[p.parent.name] for p in sweep.glob("*/metrics.json")
                 if p.parent.name in finished_before)
    print(f"{runs}-run grid on digits, 30 epochs each, killed after {len(finished_before)} runs and resumed:")
    print(f"  uninterrupted {whole:.1f} s; killed at {first:.1f} s + resumed {resumed:.1f} s = {first + resumed:.1f} s "
          f"({(first + resumed) / whole:.2f}x); finished runs redone: {redone}")


def pbt(tmp: Path) -> None:
    """Population-based training of 16 digits MLPs for 20 epochs against the 16-run stacked grid of as many
    epochs (early stopping off: every run trains its 20, as PBT's members do)."""
    grid = ["-m", "optimizer.lr=0.0003,0.001,0.003,0.01", "trainer.seed=0,1,2,3", "trainer.epochs=20",
            "trainer.early_stopping.enabled=false"]
    population = ["-m", "hparams_search=pbt", "hydra.sweeper.population=16", "trainer.epochs=20"]
    times, training = {}, {}
    for label, args in (("grid", grid), ("pbt", population)):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "trainrun", *args, f"hydra.sweep.dir={tmp / label}"], cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        times[label], training[label] = time.perf_counter() - started, stacked_seconds(done.stdout)
    exploits = sum(len(m["exploits"]) for m in json.loads((tmp / "pbt" / "pbt.json").read_text())["members"].values())
    print(f"PBT, 16 members x 20 epochs ({exploits} exploits): command {times['pbt']:.1f} s, training "
          f"{training['pbt']:.2f} s; the 16-run stacked grid of 20 epochs: {times['grid']:.1f} s, training "
          f"{training['grid']:.2f} s: PBT costs {times['pbt'] / times['grid']:.2f}x the command, "
          f"{training['pbt'] / training['grid']:.2f}x the training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--only", choices=("stacks", "studies", "launchers", "search", "grid", "pbt", "memory", "floor"))
    parser.add_argument("--studies", default="optimizers,init_depth", help="for --only studies")
    parser.add_argument("--size", default="small", help="the studies' size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "stacks"):
            stacks(Path(tmp))
        if args.only == "studies":
            studies(Path(tmp), args.studies.split(","), args.size)
        if args.only in (None, "launchers"):
            launchers(Path(tmp))
        if args.only in (None, "search"):
            search(Path(tmp), args.trials, args.epochs)
        if args.only in (None, "grid"):
            grid(Path(tmp), args.grid)
        if args.only in (None, "pbt"):
            pbt(Path(tmp))
        if args.only in (None, "memory"):
            memory(Path(tmp))
        if args.only in (None, "floor"):
            floor()


if __name__ == "__main__":
    main()
