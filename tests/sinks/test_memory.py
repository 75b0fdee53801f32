from __future__ import annotations

import numpy as np

from lightning_insight.sinks import MemorySink, Sink


def test_records_copies_of_every_call(rows):
    sink = MemorySink()
    assert isinstance(sink, Sink)
    assert sink.name == "memory"
    values = {"insight/worst/accuracy": 0.5, "insight/gap/w/x": 1}
    sink.scalars(values, step=1)
    values["insight/worst/accuracy"] = 0.0
    sink.scalars({"insight/worst/accuracy": 0.75}, step=2)
    payload = {"overall": {"accuracy": 0.5}}
    sink.json("insight/report", payload, step=2)
    payload["overall"]["accuracy"] = 0.0
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    sink.image("insight/mosaic", image, step=2)
    image[:] = 9
    sink.table("insight/slices", rows, step=2)
    rows[0]["value"] = -1.0
    sink.text("insight/summary", "hi", step=2)
    sink.flush()
    sink.flush()
    sink.close()

    assert sink.scalars_log == [
        (1, {"insight/worst/accuracy": 0.5, "insight/gap/w/x": 1.0}),
        (2, {"insight/worst/accuracy": 0.75}),
    ]
    assert isinstance(sink.scalars_log[0][1]["insight/gap/w/x"], float)
    assert sink.scalar_keys() == {"insight/worst/accuracy", "insight/gap/w/x"}
    assert sink.last_scalars() == {"insight/worst/accuracy": 0.75, "insight/gap/w/x": 1.0}
    assert sink.jsons == [(2, "insight/report", {"overall": {"accuracy": 0.5}})]
    assert sink.images[0][:2] == (2, "insight/mosaic")
    assert int(sink.images[0][2].max()) == 0
    assert sink.tables[0][2][0]["value"] == 0.8123456
    assert sink.texts == [(2, "insight/summary", "hi")]
    assert (sink.flushes, sink.closes) == (2, 1)


def test_empty_sink_helpers():
    sink = MemorySink(name="other")
    assert sink.name == "other"
    assert sink.scalar_keys() == set()
    assert sink.last_scalars() == {}
