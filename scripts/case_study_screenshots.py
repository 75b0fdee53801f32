"""The pictures of docs/case_study_fashion_mnist.md, from the logs of one case-study run.

    lightning-insight fit --config configs/fashion_mnist.yaml
    python scripts/case_study_screenshots.py --run lightning_logs/version_0 --out docs/images

1. Every image of each monitor's latest report (discovery mosaics, comparison exemplars and
   drill-downs, failure-mode pictures), read from the TensorBoard event files
   with ``EventAccumulator`` and written as ``case_study_<tag>.png`` (enlarged ``--scale`` times with
   nearest-neighbour sampling, so 28-pixel tiles stay crisp).
2. InsightBoard screenshots: ``python -m lightning_insight.board`` over the run's folder on a free port,
   driven by Playwright with Debian's ``/usr/bin/chromium`` (as tests/tensorboard_plugin/test_browser.py
   does): ``case_study_insightboard.png`` (TensorBoard with the tab open) and one picture per section
   of the plugin's page (``case_study_insightboard_<section>.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# FIELD_NOTES: the flags headless Chromium needs on this machine (Playwright adds --headless).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECTIONS = ("dynamics", "slices", "fairness", "reports")
TIMEOUT_MS = 60_000


def extract_images(run: Path, out: Path, *, scale: int) -> list[Path]:
    """Write the newest version of every image in ``run``'s event files; returns the paths."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run), size_guidance={"images": 0})
    accumulator.Reload()
    newest = {tag: accumulator.Images(tag)[-1] for tag in accumulator.Tags()["images"]}
    # a monitor's latest report only: a slice id that was not among the worst at the last epoch
    # still has its older mosaic in the logs
    last_step: dict[str, int] = {}
    for tag, event in newest.items():
        monitor = tag.split("/")[1]
        last_step[monitor] = max(last_step.get(monitor, -1), event.step)
    written = []
    for tag, event in newest.items():
        if event.step != last_step[tag.split("/")[1]]:
            continue
        image = Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        name = tag.removeprefix("insight/").replace("/", "_")
        path = out / f"case_study_{name}.png"
        image.save(path)
        written.append(path)
        print(f"{path} (step {event.step}, {event.width}x{event.height})")
    return written


def free_port() -> int:
    """A port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def board(logdir: Path, run: str) -> Iterator[str]:
    """``lightning-insight board`` over ``logdir`` until it lists ``run``; stopped by its PID."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_insight.board", "--logdir", str(logdir),
         "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"lightning_insight.board exited with status {proc.returncode}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                route = f"{url}/data/plugin/lightning_insight/runs"
                with urllib.request.urlopen(route, timeout=5) as answer:
                    if run in {item["run"] for item in json.loads(answer.read())["runs"]}:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"InsightBoard did not list the run {run!r} in time")
            time.sleep(0.5)
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def screenshots(url: str, run: str, out: Path) -> list[Path]:
    """The page with the InsightBoard tab open and each section of the plugin's page; returns the paths."""
    from playwright.sync_api import expect, sync_playwright

    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/#lightning_insight")
            frame = page.frame_locator("iframe")
            expect(frame.locator("#slice-table tbody tr").first).to_be_visible()
            expect(frame.locator("#dynamics svg.line-chart").first).to_be_visible()
            path = out / "case_study_insightboard.png"
            page.screenshot(path=str(path))
            written.append(path)

            plugin = browser.new_page(viewport={"width": 1400, "height": 900})
            plugin.set_default_timeout(TIMEOUT_MS)
            plugin.route("**/favicon.ico", lambda route: route.fulfill(status=204, body=""))
            plugin.goto(f"{url}/data/plugin_entry.html?name=lightning_insight")
            plugin.locator("#run-select").select_option([run])
            expect(plugin.locator("#slice-chart .chart-box").first).to_be_visible()
            expect(plugin.locator("#discovery-table tbody tr").first).to_be_visible()
            expect(plugin.locator("#failure-modes-table tbody tr").first).to_be_visible()
            plugin.locator("#reports img").first.evaluate(
                "img => img.complete || new Promise(r => img.addEventListener('load', r))"
            )
            plugin.mouse.move(0, 0)
            for section in SECTIONS:
                path = out / f"case_study_insightboard_{section}.png"
                plugin.locator(f"#{section}").screenshot(path=str(path))
                written.append(path)
        finally:
            browser.close()
    for path in written:
        print(path)
    return written


def main() -> None:
    """Parse the arguments, extract the images, then take the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--run", type=Path, required=True, help="e.g. lightning_logs/version_0")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--scale", type=int, default=3, help="enlargement of the logged images")
    parser.add_argument("--no-browser", action="store_true", help="only extract the images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extract_images(args.run, args.out, scale=args.scale)
    if not args.no_browser:
        with board(args.run.parent, args.run.name) as url:
            screenshots(url, args.run.name, args.out)


if __name__ == "__main__":
    main()
