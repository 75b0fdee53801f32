"""Exactness under DDP: 2 CPU processes (gloo) give the same counts as one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("ddp_validate.py")


def _run(run_ok: Any, tmp_path: Path, devices: int, *mode: str) -> dict[str, object]:
    out = tmp_path / f"report_{devices}{''.join(mode)}.json"
    run_ok([sys.executable, str(SCRIPT), str(out), str(devices), *mode], tmp_path)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_process_ddp_counts_equal_single_process(tmp_path: Path, run_ok: Any) -> None:
    single = _run(run_ok, tmp_path, 1)
    ddp = _run(run_ok, tmp_path, 2)
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    one, two = single["report"], ddp["report"]
    # 201 samples do not divide over 2 ranks: DistributedSampler pads one duplicate, dropped by sample id
    assert one["overall"]["count"] == two["overall"]["count"] == 201
    # "rare" is seen by rank 1 only; ids still agree and the slice is counted once
    assert two["slices"]["tag=rare"]["count"] == 1
    assert one["dimensions"] == two["dimensions"]
    assert one["slices"] == two["slices"]
    assert one["indicators"] == two["indicators"]
    # bootstrap intervals (weights drawn from sample ids) are identical too, duplicate dropped
    assert one["bootstrap"] == two["bootstrap"] == 50
    low, high = (one["slices"]["weather=foggy"][k] for k in ("accuracy_low", "accuracy_high"))
    assert low <= one["slices"]["weather=foggy"]["accuracy"] <= high and low < high
    assert "accuracy_difference_high" in one["indicators"]["weather"]


@pytest.mark.slow
def test_on_alert_stop_stops_every_rank_together(tmp_path: Path, run_ok: Any) -> None:
    # a rank that kept training would wait forever in the next collective: the timeout would fail this
    result = _run(run_ok, tmp_path, 2, "stop")
    assert result == {"epochs": [0], "current_epoch": 1}
