from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lightning_insight.board import HOST, tensorboard_argv


def test_tensorboard_argv_binds_loopback_and_keeps_every_sample() -> None:
    argv = tensorboard_argv("logs", port=6123, reload_interval=5)
    options = dict(zip(argv[::2], argv[1::2], strict=True))
    assert options == {
        "--logdir": "logs",
        "--host": "127.0.0.1",
        "--port": "6123",
        "--samples_per_plugin": "lightning_insight=0,images=0",
        "--reload_interval": "5",
        "--load_fast": "false",
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_board_command_serves_insightboard(insight_logs: Any, tmp_path: Path) -> None:
    logdir, _ = insight_logs
    port = _free_port()
    log = (tmp_path / "board.log").open("w")
    command = [sys.executable, "-m", "lightning_insight.cli", "board", "--logdir", str(logdir),
               "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 90
        listing: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "board.log").read_text()
            try:
                listing = _fetch(f"{base}/data/plugins_listing")
            except OSError:
                time.sleep(0.3)
                continue
            if listing.get("lightning_insight", {}).get("enabled"):
                break
            time.sleep(0.3)
        assert listing["lightning_insight"]["enabled"] is True, listing
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(runs) < 3:  # runs may still be loading
            runs = _fetch(f"{base}/data/plugin/lightning_insight/runs")["runs"]
            time.sleep(0.1 if len(runs) < 3 else 0)
        assert [r["run"] for r in runs] == [
            "baseline",
            "no_epoch_scalar",
            "with_mitigation/version_0",
        ]
        assert runs[0]["epochs"] == [0, 1, 2, 3, 4]
    finally:
        process.terminate()  # by its PID, the process this test started
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
