"""InsightBoard in a real browser: TensorBoard over a quickstart run, driven by headless Chromium.

Runs only where Debian's ``chromium`` is installed (CI installs it in ``scripts/test.sh``); Playwright
cannot download its own browser here, so it drives ``/usr/bin/chromium``. Set
``INSIGHTBOARD_SCREENSHOTS=docs/images`` to also write the documentation's screenshots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CONFIG = Path(__file__).parents[2] / "configs" / "quickstart.yaml"
QUICKSTART = [
    "fit",
    "--config",
    str(CONFIG),
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=2",
    "--data.num_train=64",
    "--data.num_val=96",
    "--data.num_test=64",
    "--data.batch_size=32",
    "--trainer.enable_progress_bar=false",
]
XSS = "<img src=x onerror=alert(1)>"
XSS_RUN = "xss_slices"
COMMA_TAG = "train_loss,ema"  # a scalar tag holding a comma: correlated through repeated params
# FIELD_NOTES: what headless Chromium needs on this machine (Playwright adds --headless itself and
# gives every launch a fresh profile directory).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium"
        " chromium-driver; scripts/test.sh installs it in CI)",
    ),
]


def write_xss_run(log_dir: Path, *, epochs: int = 3) -> None:
    """A run written with TensorBoardSink whose slice value is HTML: the page must show it as text."""
    from lightning_insight import slice_metrics
    from lightning_insight.sinks import TensorBoardSink

    rng = np.random.default_rng(0)
    weather = np.array(["clear", "foggy", XSS])[rng.integers(0, 3, size=120)]
    target = rng.integers(0, 2, size=120)
    sink = TensorBoardSink(log_dir)
    rule = "accuracy_difference > 0.1"
    rules = [
        {
            "rule": rule,
            "dimension": None,
            "name": "accuracy_difference",
            "op": ">",
            "threshold": 0.1,
        }
    ]
    for epoch in range(epochs):
        # the model gets better with every epoch, least on the HTML-named slice
        signal = np.where(weather == XSS, 0.05, 0.15 * (epoch + 1))
        preds = np.clip(0.5 + (target - 0.5) * signal + rng.normal(0, 0.15, size=120), 0, 1)
        step = 10 * (epoch + 1)
        report = slice_metrics(
            preds, target, {"weather": weather}, task="binary", slices=["weather"], min_support=30
        )
        report = dataclasses.replace(report, epoch=epoch, step=step, source="val")
        value = report.indicators["weather"]["accuracy_difference"]
        alerts = []
        if value > 0.1:
            alerts.append(
                {"rule": rule, "name": "accuracy_difference", "dimension": "weather",
                 "value": value, "op": ">", "threshold": 0.1, "epoch": epoch, "step": step,
                 "source": "val", "slice": None, "streak": 1}
            )  # fmt: skip
        sink.scalars(
            {
                **report.scalars("insight"),
                "epoch": float(epoch),
                "train_loss": 1.0 / (epoch + 1),
                COMMA_TAG: 1.0 / (epoch + 1) + 0.1 * epoch**2,
            },
            step=step,
        )
        sink.table("insight/slices", report.rows(), step=step)
        sink.json(
            "insight/report", {**report.to_dict(), "alerts": alerts, "rules": rules}, step=step
        )
    sink.close()


def make_logdir(root: Path) -> Path:
    """``root/lightning_logs``: a 3-epoch quickstart run (``version_0``) and the XSS run."""
    from lightning_insight.cli import main

    cwd = Path.cwd()
    os.chdir(root)
    try:
        main(QUICKSTART)
    finally:
        os.chdir(cwd)
    logdir = root / "lightning_logs"
    write_xss_run(logdir / XSS_RUN)
    return logdir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tensorboard_command(logdir: Path, port: int) -> list[str]:
    """``lightning-insight board`` (its module) when it exists, else TensorBoard with the same flags."""
    try:
        from lightning_insight import board
    except ImportError:
        board = None
    if board is not None and hasattr(board, "tensorboard_argv"):
        return [sys.executable, "-m", "lightning_insight.board", "--logdir", str(logdir),
                "--port", str(port)]  # fmt: skip
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
            "127.0.0.1", "--port", str(port), "--load_fast=false",
            "--samples_per_plugin", "lightning_insight=0,images=0"]  # fmt: skip


@contextlib.contextmanager
def tensorboard(logdir: Path, log_file: Path) -> Iterator[str]:
    """TensorBoard on 127.0.0.1 over ``logdir``; yields its URL; stopped by its PID afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            tensorboard_command(logdir, port), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"TensorBoard exited: {log_file.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/data/plugins_listing", timeout=2) as r:
                        if b"lightning_insight" in r.read():
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"TensorBoard did not answer: {log_file.read_text()[-2000:]}"
                    )
                time.sleep(0.3)
            yield url
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def wait_for_runs(url: str, runs: set[str]) -> None:
    """TensorBoard answers before it has read every event file: wait until the runs are listed."""
    import json

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            with urllib.request.urlopen(
                f"{url}/data/plugin/lightning_insight/runs", timeout=5
            ) as r:
                listed = {item["run"] for item in json.loads(r.read())["runs"]}
            if runs <= listed:
                return
        time.sleep(0.5)
    raise RuntimeError(f"TensorBoard did not list the runs {sorted(runs)} in time")


def get_json(url: str, route: str, **params: str) -> Any:
    import json

    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/data/plugin/lightning_insight/{route}?{query}") as r:
        return json.loads(r.read())


def screenshot_dirs(tmp_path: Path) -> list[Path]:
    folders = [tmp_path]
    extra = os.environ.get("INSIGHTBOARD_SCREENSHOTS")
    if extra:
        folder = Path(extra)
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("insightboard")
    logdir = make_logdir(root)
    with tensorboard(logdir, root / "tensorboard.log") as url:
        wait_for_runs(url, {"version_0", XSS_RUN})
        yield url


def test_insightboard_in_chromium(board: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    dialogs: list[str] = []
    console_errors: list[str] = []
    failed: list[str] = []
    responses: list[tuple[int, str]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)

            def on_dialog(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.on(
                "console",
                lambda msg: (
                    console_errors.append(f"{msg.text} at {msg.location}")
                    if msg.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("response", lambda response: responses.append((response.status, response.url)))
            page.goto(f"{board}/#lightning_insight")
            frame = page.frame_locator("iframe")

            # both runs listed and selected; the slice table shows the quickstart's slices
            expect(frame.locator("#run-select option")).to_have_count(2)
            table = frame.locator("#slice-table")
            expect(table.locator('tr[data-slice="weather=foggy"]').first).to_be_visible()
            expect(table.locator('tr[data-slice="timeofday=night"]').first).to_be_visible()
            expect(frame.locator("#dimension-select")).to_have_value("weather")

            # the HTML slice value is shown literally, as text; nothing of it became an element
            xss_row = table.locator(f'tr[data-slice="weather={XSS}"]')
            expect(xss_row).to_have_count(1)
            expect(xss_row.locator("td").nth(1)).to_have_text(f"weather={XSS}")
            expect(frame.locator("#slice-chart")).to_contain_text(f"weather={XSS}")
            assert frame.locator('img[src="x"]').count() == 0
            assert page.locator('img[src="x"]').count() == 0

            # sorting by a header reorders the rows
            frame.locator('#slice-table th[data-key="count"]').click()
            expect(frame.locator('#slice-table th[data-key="count"]')).to_have_class(
                "sortable sorted-asc"
            )

            # training dynamics, slice chart and fairness charts are drawn
            expect(frame.locator("#dynamics svg.line-chart").first).to_be_visible()
            # the bootstrap interval (bootstrap: 200 in the quickstart) is a band on the metric's
            # own chart; its `_low`/`_high` tags get no charts of their own
            dynamics_box = frame.locator("#dynamics .chart-box")
            accuracy = dynamics_box.filter(
                has=frame.locator("h3", has_text=re.compile(r"^insight/overall/accuracy$"))
            )
            expect(accuracy).to_have_count(1)
            expect(accuracy.locator("polygon.band").first).to_be_attached()
            band_title = accuracy.locator("polygon.band title").first
            expect(band_title).to_contain_text("insight/overall/accuracy_low")
            for suffix in ("_low", "_high"):
                companion = re.compile(rf"^insight/overall/accuracy{suffix}$")
                expect(
                    dynamics_box.filter(has=frame.locator("h3", has_text=companion))
                ).to_have_count(0)
            expect(frame.locator("#slice-chart svg.line-chart").first).to_be_visible()
            expect(frame.locator("#fairness svg.line-chart").first).to_be_visible()
            expect(frame.locator("#fairness line.threshold").first).to_be_attached()
            # every alert is listed; one on an indicator is a marker on its chart, its rule as title
            titles = frame.locator("#fairness .alert-marker title")
            alert_list = frame.locator("#alert-list")
            bands = 0
            for run in ("version_0", XSS_RUN):
                fairness = get_json(board, "fairness", run=run)
                bands += sum(len(indicators) for indicators in fairness["bands"].values())
                for alert in fairness["alerts"]:
                    expect(alert_list).to_contain_text(alert["message"])
                    if alert["name"] in fairness["indicators"].get(alert["dimension"], {}):
                        fired = titles.filter(has_text=f'rule "{alert["rule"]}" fired')
                        expect(fired.first).to_be_attached()
            assert XSS_RUN in alert_list.text_content()  # the XSS run's own alert
            expect(frame.locator("#fairness line.threshold title").first).to_contain_text("rule: ")
            assert frame.locator("#fairness polygon.band").count() >= min(bands, 1)

            # linked views: hover epoch 1 in a dynamics chart, every other chart highlights it
            chart = frame.locator("#dynamics svg.line-chart").first
            marker = chart.locator('line.epoch-marker[data-epoch="1"]')
            x = float(marker.get_attribute("x1") or 0)
            chart.hover(position={"x": x, "y": 60})
            for section in ("#slice-chart", "#fairness", "#brush"):
                highlighted = frame.locator(f"{section} .epoch-marker.highlight")
                expect(highlighted.first).to_be_attached()
                assert {
                    highlighted.nth(i).get_attribute("data-epoch")
                    for i in range(highlighted.count())
                } == {"1"}

            # a click selects the epoch everywhere: the epoch select follows
            chart.click(position={"x": x, "y": 60})
            expect(frame.locator("#epoch-select")).to_have_value("1")

            # correlation: clicking a cell draws the scatter of its two series
            cells = frame.locator("#correlation-matrix .corr-cell")
            expect(cells.first).to_be_visible()
            assert cells.count() >= 4
            frame.locator('#correlation-matrix .corr-cell[data-i="0"][data-j="1"]').click()
            expect(frame.locator("#scatter circle.scatter-point").first).to_be_attached()
            assert frame.locator("#scatter circle.scatter-point").count() == 3
            frame.locator("#correlation-method").select_option("spearman")
            expect(frame.locator("#correlation-matrix")).to_contain_text("Spearman")
            frame.locator("#lag-input").fill("1")
            frame.locator("#lag-input").press("Enter")
            expect(frame.locator("#correlation-matrix")).to_contain_text("lag (1)")
            expect(frame.locator("#scatter circle.scatter-point")).to_have_count(2)
            frame.locator("#lag-input").fill("0")
            frame.locator("#lag-input").press("Enter")
            expect(frame.locator("#scatter circle.scatter-point")).to_have_count(3)

            # a tag with a comma is correlated (repeated `series` parameters) like any other
            frame.locator("#correlation-run").select_option(XSS_RUN)
            frame.locator("#series-filter").fill("ema")
            frame.locator(f'#series-list input[value="{COMMA_TAG}"]').check()
            expect(frame.locator("#correlation-matrix text.row-label title")).to_contain_text(
                [COMMA_TAG]
            )
            expect(frame.locator("#correlation-matrix .corr-cell").first).to_be_visible()
            frame.locator("#series-filter").fill("")
            frame.locator("#correlation-run").select_option("version_0")
            expect(frame.locator("#correlation-matrix .corr-cell").first).to_be_visible()

            # reports of the selected epoch (the quickstart's monitors ran at epoch 1) with images
            reports = frame.locator("#reports")
            expect(reports.locator("#discovery-table tbody tr").first).to_be_visible()
            expect(reports.locator("#comparison-table tbody tr").first).to_be_visible()
            expect(reports.locator("#failure-modes-table tbody tr").first).to_be_visible()
            expect(reports.locator("img").first).to_be_visible()
            frame.locator("#reports img").first.evaluate(
                "img => img.complete || new Promise(r => img.addEventListener('load', r))"
            )
            assert frame.locator("#reports img").first.evaluate("img => img.naturalWidth") > 0

            # brushing: choose epochs 1-2; the charts' markers shrink to that range
            page.mouse.move(0, 0)
            expect(frame.locator("#dynamics .epoch-marker.highlight")).to_have_count(0)
            strip = frame.locator("#brush svg")
            strip.scroll_into_view_if_needed()
            first = strip.locator('line.epoch-marker[data-epoch="1"]')
            last = strip.locator('line.epoch-marker[data-epoch="2"]')
            x1 = float(first.get_attribute("x1") or 0)
            x2 = float(last.get_attribute("x1") or 0)
            box = strip.bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + x1, box["y"] + 15)
            page.mouse.down()
            page.mouse.move(box["x"] + x2, box["y"] + 15, steps=4)
            page.mouse.up()
            expect(frame.locator("#brush-label")).to_contain_text("1\u20132")  # an en dash
            expect(chart.locator('line.epoch-marker[data-epoch="0"]')).to_have_count(0)
            expect(chart.locator('line.epoch-marker[data-epoch="2"]')).to_have_count(1)
            # the correlation and the scatter come from the routes, over epochs 1-2 only
            expect(frame.locator("#correlation-note")).to_contain_text("brushed")
            frame.locator('#correlation-matrix .corr-cell[data-i="0"][data-j="1"]').click()
            expect(frame.locator("#scatter circle.scatter-point")).to_have_count(2)
            ranged = [u for _, u in responses if "/correlation?" in u and "start=1&end=2" in u]
            assert ranged, "expected the brushed range to be sent as start/end"
            assert any("/scatter?" in u and "start=1&end=2" in u for _, u in responses)
            frame.locator("#brush-reset").click()
            expect(chart.locator('line.epoch-marker[data-epoch="0"]')).to_have_count(1)

            # The screenshots show the quickstart run alone (the XSS run is only test data): in
            # TensorBoard with the tab open, and each section of the plugin's page on its own.
            frame.locator("#run-select").select_option(["version_0"])
            expect(frame.locator(f'#slice-table tr[data-slice="weather={XSS}"]')).to_have_count(0)
            expect(frame.locator("#slice-chart .chart-box")).to_have_count(1)
            page.mouse.move(0, 0)
            chart.hover(position={"x": x, "y": 60})
            plugin = browser.new_page(viewport={"width": 1400, "height": 900})
            plugin.set_default_timeout(TIMEOUT_MS)
            plugin.on(
                "console",
                lambda msg: (
                    console_errors.append(f"{msg.text} at {msg.location}")
                    if msg.type == "error"
                    else None
                ),
            )
            plugin.on("pageerror", lambda error: console_errors.append(str(error)))
            plugin.on("requestfailed", lambda request: failed.append(request.url))
            plugin.on(
                "response", lambda response: responses.append((response.status, response.url))
            )
            # TensorBoard's bare plugin_entry.html declares no icon, so Chromium asks for
            # /favicon.ico (404 from TensorBoard, not from the plugin): answer it here.
            plugin.route("**/favicon.ico", lambda route: route.fulfill(status=204, body=""))
            plugin.goto(f"{board}/data/plugin_entry.html?name=lightning_insight")
            plugin.locator("#run-select").select_option(["version_0"])
            expect(plugin.locator("#slice-chart .chart-box")).to_have_count(1)
            expect(plugin.locator("#discovery-table tbody tr").first).to_be_visible()
            plugin.locator('#correlation-matrix .corr-cell[data-i="0"][data-j="3"]').click()
            expect(plugin.locator("#scatter circle.scatter-point").first).to_be_attached()
            plugin.locator("#fairness").hover(position={"x": 5, "y": 5})
            for folder in screenshot_dirs(tmp_path):
                page.screenshot(path=str(folder / "insightboard.png"))
                for section in ("dynamics", "slices", "fairness", "correlation", "reports"):
                    plugin.locator(f"#{section}").screenshot(
                        path=str(folder / f"insightboard_{section}.png")
                    )
        finally:
            browser.close()
    assert dialogs == []
    assert failed == []
    # No error answers at all: the page picks report epochs from the `runs` route's report_epochs
    # instead of probing epochs that have none.
    assert [(status, url) for status, url in responses if status >= 400] == []
    assert any("/lightning_insight/report?" in url for _, url in responses)
    assert console_errors == []
    assert (tmp_path / "insightboard.png").stat().st_size > 10_000
