from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_insight.sinks import ROW_FIELDS, Sink, WandbSink


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def _run_dir(root: Path) -> Path:
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    return run_dir


def test_one_history_row_per_flush_reads_back(offline, rows, wandb_history):
    import wandb

    run = wandb.init(dir=offline, mode="offline")
    try:
        sink = WandbSink(run)
        assert isinstance(sink, Sink)
        sink.scalars({"insight/worst/accuracy": 0.5}, step=7)
        sink.scalars({"insight/worst/accuracy": 0.625, "insight/gap/w/x": float("nan")}, step=7)
        sink.table("insight/slices", rows, step=7)
        sink.image("insight/mosaic", np.full((4, 6, 3), 200, dtype=np.uint8), step=7)
        sink.text("insight/summary", "**two** alerts", step=7)
        sink.json("insight/report", {"epoch": 1, "tpr": float("nan")}, step=7)
        assert sink.pending_steps == [7]
        sink.flush()
        sink.flush()  # nothing buffered: no extra row
        sink.scalars({"insight/worst/accuracy": 0.75}, step=15)
        sink.flush()
        sink.close()  # does not finish a run it did not start
    finally:
        run.finish()

    history = wandb_history(_run_dir(offline))
    assert len(history) == 2
    first, second = history
    assert first["trainer/global_step"] == 7
    assert first["insight/worst/accuracy"] == 0.625
    assert math.isnan(first["insight/gap/w/x"])
    table = first["insight/slices"]["content"]
    assert table["columns"] == list(ROW_FIELDS)
    assert table["data"][0] == [1, 7, "val", "weather", "weather=rainy", "accuracy", 0.8123456, 40]
    assert table["data"][1][6] is None
    assert len(table["data"]) == len(rows)
    assert first["insight/summary"]["content"] == {
        "columns": ["text"],
        "data": [["**two** alerts"]],
    }
    assert first["insight/report"]["content"]["data"] == [['{"epoch":1,"tpr":null}']]
    image = first["insight/mosaic"]
    assert (image["_type"], image["width"], image["height"]) == ("image-file", 6, 4)
    assert (_run_dir(offline) / "files" / image["path"]).is_file()
    assert second["trainer/global_step"] == 15
    assert second["insight/worst/accuracy"] == 0.75
    assert "insight/slices" not in second


def test_starts_its_own_run_lazily_and_finishes_it(offline, wandb_history):
    import wandb

    assert wandb.run is None
    sink = WandbSink(save_dir=offline, project="demo")
    sink.flush()
    assert sink._run is None  # nothing to send, no run started
    sink.scalars({"a": 1.0}, step=2)
    sink.scalars({"a": 3.0}, step=1)
    sink.flush()  # two steps buffered: one row each, in step order
    assert sink.run.settings.mode == "offline"
    sink.close()
    assert wandb.run is None
    history = wandb_history(_run_dir(offline))
    assert [(row["trainer/global_step"], row["a"]) for row in history] == [(1, 3.0), (2, 1.0)]


def test_missing_wandb_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ModuleNotFoundError, match="pip install wandb"):
        WandbSink()
