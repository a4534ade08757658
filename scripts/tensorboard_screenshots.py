#!/usr/bin/env python
"""What TensorBoard shows of a sweep, checked in a real browser: screenshots of Time Series, Scalars, Custom
Scalars and HParams (and Images, for a study's sweep: its report's figures), and the browser console's errors.

    python scripts/tensorboard_screenshots.py [--out docs/images] [--sweep DIR]

Runs a 4-run sweep (optimizer=sgd,adam x optimizer.lr=0.01,0.1 on digits; or reads --sweep DIR), serves it
with TensorBoard, and drives headless Chromium (Debian's `chromium`, through Playwright: pip install playwright)
to each dashboard. Fails (exit 1) when the console logs an error, when the first cards of Time Series are not
the loss and accuracy curves, when the HParams table does not show the swept keys, or when a study's figures
are missing from Images.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "optimizer=sgd,adam", "optimizer.lr=0.01,0.1", "trainer.epochs=10", "logger.log_graph=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(logdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                             "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("TensorBoard did not start")


def swept_keys(sweep: Path) -> list[str]:
    """The keys of the sweep's HParams experiment, as its event file holds them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(sweep), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    return [h.name for h in plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--sweep", type=Path, help="a sweep directory to show (default: run a 4-run sweep)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sweep = args.sweep
        if sweep is None:
            sweep = Path(tmp) / "sweep"
            done = subprocess.run([sys.executable, "-m", "trainrun", *SWEEP, f"hydra.sweep.dir={sweep}"],
                                  cwd=tmp, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
        server, url = serve(sweep)
        problems, errors = [], []
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                study = (sweep / "study_figures").is_dir()
                for view in ("timeseries", "scalars", "custom_scalars", "hparams", *(["images"] if study else [])):
                    page.goto(f"{url}/#{view}")
                    page.wait_for_load_state("networkidle")
                    time.sleep(3)  # the charts draw after the data arrive
                    if view == "timeseries":
                        titles = ["".join(t.split()) for t in page.locator("card-view .heading, .tag").all_inner_texts()]
                        first = list(dict.fromkeys(t for t in titles if t))[:4]  # in page order, once each
                        print(f"time series, first cards: {first}")
                        if first and not all(t.split("/")[0] in ("acc", "loss", "mae") for t in first):
                            problems.append(f"the first Time Series cards are {first}, not the curves")
                    if view == "hparams":
                        for key in swept_keys(sweep):  # the plugin is an iframe; locators pierce shadow DOM
                            if not any(frame.get_by_text(key, exact=True).count() for frame in page.frames):
                                problems.append(f"the HParams view does not show {key}")
                    if view == "images":
                        shown = [t for frame in page.frames for t in frame.get_by_text("study/").all_inner_texts()]
                        print(f"images: {shown}")
                        if not shown:
                            problems.append("the Images view shows no study/ figure")
                    page.screenshot(path=str(args.out / f"tensorboard_{view}.png"))
                    print(f"wrote {args.out / f'tensorboard_{view}.png'}")
                browser.close()
        finally:
            server.kill()
    problems += [f"browser console error: {e[:160]}" for e in errors]
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
