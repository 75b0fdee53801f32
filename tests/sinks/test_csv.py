from __future__ import annotations

import logging
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from lightning_insight.sinks import CSVSink, Sink
from lightning_insight.sinks.csv import CSV_HEADER

HEADER = "epoch,step,source,dimension,slice,metric,value,count"


def test_writes_long_rows_with_exact_header_and_nan(tmp_path, rows):
    path = tmp_path / "insight" / "slices.csv"
    sink = CSVSink(path)
    assert isinstance(sink, Sink)
    sink.scalars({"a": 1.0}, step=1)
    sink.text("t", "ignored", step=1)
    sink.json("j", {"a": 1}, step=1)
    sink.image("i", np.zeros((2, 2, 3), np.uint8), step=1)
    sink.flush()
    assert not path.exists()  # only table rows are written

    sink.table("insight/slices", rows, step=7)
    assert sink.pending_rows == 3
    sink.flush()
    sink.table("insight/slices", rows[:1], step=9)
    sink.close()

    lines = path.read_text().splitlines()
    assert lines[0] == HEADER == CSV_HEADER
    assert len(lines) == 1 + len(rows) + 1
    assert lines[2] == "1,7,val,weather,weather=rainy,tpr,nan,40"
    frame = pd.read_csv(path)
    assert list(frame.columns) == HEADER.split(",")
    assert len(frame) == 4
    assert math.isnan(frame["value"][1])
    assert frame["value"][0] == pytest.approx(0.8123456)
    assert frame["slice"][2] == "weather=clear&timeofday=night"


def test_appends_to_an_existing_file_and_quotes_commas(tmp_path, rows):
    path = tmp_path / "slices.csv"
    CSVSink(path).close()
    first = CSVSink(path)
    first.table("k", rows[:1], step=7)
    first.flush()
    second = CSVSink(path)
    second.table("k", [{**rows[0], "slice": "box_area=[0,1024)", "count": None}], step=7)
    second.flush()
    frame = pd.read_csv(path, keep_default_na=False)
    assert list(frame["slice"]) == ["weather=rainy", "box_area=[0,1024)"]
    assert list(frame["count"]) == ["40", ""]
    assert '"box_area=[0,1024)"' in path.read_text()
    assert path.read_text().count(HEADER) == 1


def test_truncated_last_line_is_repaired(tmp_path, rows, caplog):
    path = tmp_path / "slices.csv"
    complete = HEADER + "\n0,3,val,weather,weather=rainy,accuracy,0.5,10\n"
    path.write_text(complete + "0,3,val,weath")  # a crash mid-write
    sink = CSVSink(path)
    sink.table("k", rows[:1], step=7)
    with caplog.at_level(logging.WARNING, logger="lightning_insight.sinks.csv"):
        sink.flush()
    assert "partial line" in caplog.text
    text = path.read_text()
    assert text.startswith(complete)
    assert text == complete + "1,7,val,weather,weather=rainy,accuracy,0.8123456,40\n"


def test_truncated_header_is_rewritten(tmp_path, rows):
    path = tmp_path / "slices.csv"
    path.write_text("epoch,st")
    sink = CSVSink(path)
    sink.table("k", rows[:1], step=7)
    sink.flush()
    assert path.read_text().splitlines()[0] == HEADER
    assert len(path.read_text().splitlines()) == 2


def test_foreign_file_is_not_appended_to(tmp_path, rows):
    path = tmp_path / "slices.csv"
    path.write_text("a,b\n1,2\n")
    sink = CSVSink(path)
    sink.table("k", rows, step=7)
    with pytest.raises(ValueError, match=r"Expected the existing file .* to have the header"):
        sink.flush()
    assert path.read_text() == "a,b\n1,2\n"


def test_removed_directory_is_not_recreated(tmp_path, rows):
    directory = tmp_path / "logs" / "insight"
    sink = CSVSink(directory / "slices.csv")
    sink.table("k", rows, step=7)
    sink.flush()
    shutil.rmtree(tmp_path / "logs")
    sink.table("k", rows, step=9)
    with pytest.raises(FileNotFoundError):
        sink.flush()
    assert not directory.exists()


def test_argument_validation(tmp_path, rows):
    with pytest.raises(TypeError, match=r"Expected argument `path` to be a str or os\.PathLike"):
        CSVSink(3)  # type: ignore[arg-type]
    sink = CSVSink(tmp_path / "x.csv")
    with pytest.raises(ValueError, match=r"lacks \['count'\]"):
        sink.table("k", [{k: v for k, v in rows[0].items() if k != "count"}], step=1)
    with pytest.raises(TypeError, match="Expected argument `rows` to hold mappings"):
        sink.table("k", [1], step=1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Expected argument `rows` to be a sequence of mappings"):
        sink.table("k", "rows", step=1)  # type: ignore[arg-type]
    assert sink.pending_rows == 0
