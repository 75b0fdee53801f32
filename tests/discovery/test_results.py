from __future__ import annotations

import json
import math

import pytest

from lightning_insight.discovery.results import DiscoveredSlice, SliceDiscoveryReport
from lightning_insight.sinks.base import ROW_FIELDS


def make_report() -> SliceDiscoveryReport:
    worst = DiscoveredSlice(
        slice_id=4,
        sample_ids=(11, 12, 13),
        size=3,
        accuracy=1 / 3,
        error_rate=2 / 3,
        lift=4.0,
        mean_confidence=0.8,
        confusion={"tn": 1, "fp": 2, "fn": 0, "tp": 0},
        score=0.21,
        first_seen_epoch=1,
        mislabel_candidates=(12,),
        annotation="spurious",
    )
    empty_lift = DiscoveredSlice(
        slice_id=0,
        sample_ids=(1, 2),
        size=2,
        accuracy=1.0,
        error_rate=0.0,
        lift=float("nan"),
        mean_confidence=0.95,
        confusion={"tn": 1, "fp": 0, "fn": 0, "tp": 1},
        score=0.0,
    )
    return SliceDiscoveryReport(
        slices=(worst, empty_lift),
        num_samples=5,
        overall_error_rate=0.4,
        method="gradcam",
        layer="backbone.2.2",
        epoch=3,
        step=120,
        source="val",
    )


def test_to_dict_is_json_safe_and_round_trips() -> None:
    report = make_report()
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["schema_version"] == 1
    assert data["kind"] == "slice_discovery_report"
    assert data["slices"][1]["lift"] is None
    back = SliceDiscoveryReport.from_dict(data)
    assert math.isnan(back.slices[1].lift)
    assert back.slices[0] == report.slices[0]
    assert back.to_dict() == report.to_dict()


def test_rows_are_long_format() -> None:
    rows = make_report().rows()
    assert all(set(row) == set(ROW_FIELDS) for row in rows)
    assert {row["dimension"] for row in rows} == {"discovered"}
    by_key = {(row["slice"], row["metric"]): row for row in rows}
    assert by_key[("overall", "error_rate")]["value"] == 0.4
    assert by_key[("overall", "error_rate")]["count"] == 5
    assert by_key[("slice_4", "error_rate")]["value"] == pytest.approx(2 / 3)
    assert by_key[("slice_4", "fp")]["value"] == 2.0
    assert by_key[("slice_4", "mislabel_candidates")]["value"] == 1.0
    assert by_key[("slice_4", "count")]["count"] == 3
    assert by_key[("slice_0", "score")]["value"] == 0.0
    assert all(row["epoch"] == 3 and row["step"] == 120 and row["source"] == "val" for row in rows)


def test_scalars_and_worst() -> None:
    scalars = make_report().scalars()
    assert scalars["insight/discovery/slice_4/error_rate"] == pytest.approx(2 / 3)
    assert scalars["insight/discovery/worst/error_rate"] == pytest.approx(2 / 3)
    assert scalars["insight/discovery/worst/lift"] == 4.0
    assert scalars["insight/discovery/num_slices"] == 2.0
    assert math.isnan(scalars["insight/discovery/slice_0/lift"])
    empty = SliceDiscoveryReport(
        slices=(), num_samples=0, overall_error_rate=float("nan"), method="gradcam", layer="x"
    )
    assert math.isnan(empty.scalars("p")["p/discovery/worst/lift"])
    assert empty.scalars("p")["p/discovery/num_slices"] == 0.0


def test_slice_lookup_and_markdown() -> None:
    report = make_report()
    assert report.slice(0).size == 2
    with pytest.raises(KeyError, match=r"slice id among \[0, 4\], but got 7"):
        report.slice(7)
    text = report.markdown()
    assert "| slice_4 | 3 | 0.667 | 4 | 0.21 | 0.8 | 1 | spurious |" in text
    assert "| slice_0 | 2 | 0 | undefined |" in text
