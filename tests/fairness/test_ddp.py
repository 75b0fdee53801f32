"""Exactness under DDP: 2 CPU processes (gloo) give the same counts as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_validate.py")


def _run(tmp_path: Path, devices: int, *mode: str) -> dict[str, object]:
    out = tmp_path / f"report_{devices}{''.join(mode)}.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(devices), *mode],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_process_ddp_counts_equal_single_process(tmp_path: Path) -> None:
    single = _run(tmp_path, 1)
    ddp = _run(tmp_path, 2)
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    one, two = single["report"], ddp["report"]
    # 201 samples do not divide over 2 ranks: DistributedSampler pads one duplicate, dropped by sample id
    assert one["overall"]["count"] == two["overall"]["count"] == 201
    # "rare" is seen by rank 1 only; ids still agree and the slice is counted once
    assert two["slices"]["tag=rare"]["count"] == 1
    assert one["dimensions"] == two["dimensions"]
    assert one["slices"] == two["slices"]
    assert one["indicators"] == two["indicators"]


@pytest.mark.slow
def test_on_alert_stop_stops_every_rank_together(tmp_path: Path) -> None:
    # a rank that kept training would wait forever in the next collective: the timeout would fail this
    result = _run(tmp_path, 2, "stop")
    assert result == {"epochs": [0], "current_epoch": 1}
