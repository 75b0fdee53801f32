from __future__ import annotations

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from lightning_insight.sinks import Sink, TensorBoardSink
from lightning_insight.sinks._tb_summary import (
    PLUGIN_NAME,
    decode_json_tensor,
    encode_json,
    json_summary,
    parse_plugin_content,
)
from lightning_insight.sinks.base import ROW_FIELDS
from lightning_insight.sinks.tensorboard import rows_to_markdown


def test_everything_reads_back_through_the_data_provider(tmp_path, rows, tensorboard_reader):
    sink = TensorBoardSink(tmp_path)
    assert isinstance(sink, Sink)
    report = {"epoch": 1, "overall": {"accuracy": 0.75, "tpr": float("nan")}, "slices": ["a", "b"]}
    image = np.zeros((6, 8, 3), dtype=np.uint8)
    image[:, :4, 0] = 255
    for step in (7, 15):
        sink.scalars(
            {"insight/worst/accuracy": 0.5 + step / 100, "insight/gap/w/x": 0.25}, step=step
        )
        sink.json("insight/report", {**report, "step": step}, step=step)
    sink.table("insight/slices", rows, step=15)
    sink.image("insight/mosaic", image, step=15)
    sink.text("insight/summary", "**two** alerts", step=15)
    sink.flush()
    sink.close()

    reader = tensorboard_reader(tmp_path)
    listed = reader.list_tensors(PLUGIN_NAME)["."]
    assert sorted(listed) == ["insight/report", "insight/slices"]
    assert parse_plugin_content(listed["insight/report"].plugin_content) == {
        "version": 1,
        "kind": "json",
    }
    assert parse_plugin_content(listed["insight/slices"].plugin_content)["kind"] == "table"

    tensors = reader.read_tensors(PLUGIN_NAME)["."]
    reports = [(d.step, decode_json_tensor(d.numpy)) for d in tensors["insight/report"]]
    expected = {"epoch": 1, "overall": {"accuracy": 0.75, "tpr": None}, "slices": ["a", "b"]}
    assert reports == [(7, {**expected, "step": 7}), (15, {**expected, "step": 15})]

    (table,) = tensors["insight/slices"]
    payload = decode_json_tensor(table.numpy)
    assert table.step == 15
    assert payload["columns"] == list(ROW_FIELDS)
    assert payload["rows"][0] == [
        1,
        7,
        "val",
        "weather",
        "weather=rainy",
        "accuracy",
        0.8123456,
        40,
    ]
    assert payload["rows"][1][6] is None  # NaN is null in strict JSON
    assert len(payload["rows"]) == len(rows)

    scalars = reader.read_scalars()["."]
    assert [(d.step, d.value) for d in scalars["insight/worst/accuracy"]] == [
        (7, pytest.approx(0.57)),
        (15, pytest.approx(0.65)),
    ]
    assert [d.value for d in scalars["insight/gap/w/x"]] == [0.25, 0.25]

    texts = reader.read_tensors("text")["."]
    markdown = texts["insight/slices/text_summary"][0].numpy.item().decode()
    assert "| val | weather=rainy | 40 | 0.8123 | undefined |" in markdown
    assert texts["insight/summary/text_summary"][0].numpy.item().decode() == "**two** alerts"
    assert reader.list_blob_sequences("images")["."]["insight/mosaic"].max_step == 15


def test_data_class_is_what_makes_tensors_readable(tmp_path, tensorboard_reader):
    """Guards the reading test above: without data_class the provider returns nothing."""
    writer = SummaryWriter(tmp_path)
    summary = json_summary("insight/bad", {"a": 1})
    summary.value[0].metadata.ClearField("data_class")
    writer._get_file_writer().add_summary(summary, 1)
    writer._get_file_writer().add_summary(json_summary("insight/good", {"a": 1}), 1)
    writer.close()
    tensors = tensorboard_reader(tmp_path).read_tensors(PLUGIN_NAME)["."]
    assert list(tensors) == ["insight/good"]


def test_accepts_a_tensorboard_logger_writer(tmp_path, tensorboard_reader):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path, name="run", default_hp_metric=False)
    sink = TensorBoardSink(logger.experiment)
    assert not sink.owns_writer
    sink.json("insight/report", {"epoch": 0}, step=3)
    sink.close()  # flushes only: the logger owns the writer
    logger.experiment.add_scalar("still/open", 1.0, 4)
    logger.finalize("success")
    tensors = tensorboard_reader(tmp_path).read_tensors(PLUGIN_NAME)
    (run,) = tensors
    assert decode_json_tensor(tensors[run]["insight/report"][0].numpy) == {"epoch": 0}


def test_rejects_a_non_writer():
    with pytest.raises(TypeError, match="Expected argument `writer_or_log_dir` to be"):
        TensorBoardSink(42)  # type: ignore[arg-type]


def test_markdown_is_wide_with_four_significant_digits():
    rows = [
        {"source": "val", "slice": "a|b", "metric": "accuracy", "value": 2 / 3, "count": 5},
        {"source": "val", "slice": "a|b", "metric": "f1", "value": float("nan"), "count": 5},
        {"source": "test", "slice": "c", "metric": "f1", "value": 123456.0, "count": 1},
    ]
    lines = rows_to_markdown(rows).splitlines()
    assert lines[0] == "| source | slice | count | accuracy | f1 |"
    assert lines[2] == "| val | a\\|b | 5 | 0.6667 | undefined |"
    assert lines[3] == "| test | c | 1 |  | 1.235e+05 |"
    assert rows_to_markdown([]) == "*(no rows)*"


def test_encode_json_is_strict():
    assert (
        encode_json({"a": [float("inf"), -float("inf"), np.float32(0.5)]})
        == b'{"a":[null,null,0.5]}'
    )
    with pytest.raises(TypeError):
        encode_json({"a": object()})
