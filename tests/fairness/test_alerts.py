from __future__ import annotations

import math

import pytest

from lightning_insight.fairness.alerts import AlertTracker, parse_alert_rule
from lightning_insight.fairness.results import Alert, SliceReport


def _report(epoch: int, gap: float, accuracy_b: float = 0.9) -> SliceReport:
    return SliceReport(
        task="binary",
        overall={"accuracy": 0.8, "count": 20.0},
        slices={
            "w=a": {"accuracy": 0.9, "count": 10.0},
            "w=b": {"accuracy": accuracy_b, "count": 10.0},
        },
        dimensions={"w": ("w=a", "w=b")},
        indicators={"w": {"equalized_odds_difference": gap}},
        epoch=epoch,
        step=epoch * 10,
        source="val",
    )


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        (
            "equalized_odds_difference >> 0.1",
            r"expected one of \['>', '>=', '<', '<='\], found '>>' at column 26",
        ),
        ("equalized_odds_difference > high", r"expected a number, found 'high' at column 28"),
        ("> 0.1", r"expected an indicator or metric name, found '>' at column 0"),
        ("accuracy_ratio 0.8", r"found '0.8' at column 15"),
        ("eod > 0.1", r"unknown name 'eod' \(known: \["),
        ("bad scope: accuracy_ratio < 0.8", r"bad dimension scope .bad scope. at column 0"),
    ],
)
def test_malformed_rules_point_at_the_bad_token(rule: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_alert_rule(rule, known_names=["equalized_odds_difference", "accuracy_ratio"])


def test_rule_text_forms() -> None:
    rule = parse_alert_rule("age:0,18,inf: accuracy_ratio <= 0.8")
    assert (rule.scope, rule.name, rule.op, rule.threshold) == (
        "age:0,18,inf",
        "accuracy_ratio",
        "<=",
        0.8,
    )
    assert rule.key == "age:0,18,inf:accuracy_ratio<=0.8"
    assert not rule.holds(float("nan"))
    with pytest.raises(TypeError, match="to be a string"):
        parse_alert_rule(0.1)  # type: ignore[arg-type]


def test_patience_and_streak_reset() -> None:
    tracker = AlertTracker([parse_alert_rule("equalized_odds_difference > 0.1")], patience=2)
    assert tracker.update(_report(0, 0.2)) == []
    fired = tracker.update(_report(1, 0.3))
    assert [(a.epoch, a.dimension, a.value, a.streak) for a in fired] == [(1, "w", 0.3, 2)]
    assert tracker.update(_report(2, 0.05)) == []
    assert tracker.update(_report(3, 0.2)) == []


def test_metric_rules_check_slices_and_report_the_worst() -> None:
    tracker = AlertTracker([parse_alert_rule("w: accuracy < 0.8")])
    fired = tracker.update(_report(0, 0.0, accuracy_b=0.5))
    assert len(fired) == 1
    assert (fired[0].slice, fired[0].value) == ("w=b", 0.5)
    data = _report(1, 0.0, accuracy_b=0.5).to_dict()
    data["excluded"] = {"w=b": "count 10 < min_support 30"}
    assert tracker.update(SliceReport.from_dict(data)) == []


def test_tracker_state_round_trip_resumes_streaks() -> None:
    rule = parse_alert_rule("equalized_odds_difference > 0.1")
    tracker = AlertTracker([rule], patience=3)
    tracker.update(_report(0, 0.2))
    tracker.update(_report(1, 0.2))
    resumed = AlertTracker([rule], patience=3)
    resumed.load_state_dict(tracker.state_dict())
    assert len(resumed.update(_report(2, 0.2))) == 1


def test_alert_and_report_round_trip_through_dicts() -> None:
    alert = Alert(
        rule="r", name="accuracy", dimension="w", value=float("nan"), op="<", threshold=0.8, epoch=1
    )
    again = Alert.from_dict(alert.to_dict())
    assert math.isnan(again.value) and again.epoch == 1
    report = _report(3, float("nan"))
    back = SliceReport.from_dict(report.to_dict())
    assert back.slices == report.slices and math.isnan(
        back.indicators["w"]["equalized_odds_difference"]
    )
    assert back.dimensions == report.dimensions


def test_report_keys_rows_and_markdown() -> None:
    report = SliceReport(
        task="binary",
        overall={"accuracy": 0.75, "count": 8.0},
        slices={
            "timeofday=dawn/dusk": {"accuracy": 0.5, "count": 4.0},
            "timeofday=day": {"accuracy": float("nan"), "count": 0.0},
        },
        dimensions={"timeofday": ("timeofday=dawn/dusk", "timeofday=day")},
        indicators={"timeofday": {"accuracy_difference": float("nan")}},
        excluded={"timeofday=day": "count 0 < min_support 1"},
        epoch=2,
        step=20,
        source="val",
    )
    scalars = report.scalars("insight", "/dataloader_idx_1")
    assert scalars["insight/slice/timeofday/dawn_dusk/accuracy/dataloader_idx_1"] == 0.5
    assert (
        scalars["insight/worst/accuracy/dataloader_idx_1"] == 0.5
    )  # the excluded NaN slice is skipped
    assert math.isnan(scalars["insight/gap/timeofday/accuracy_difference/dataloader_idx_1"])
    rows = report.rows()
    assert len(rows) == 2 + 2 * 2 + 1
    gap_row = rows[-1]
    assert (gap_row["slice"], gap_row["metric"], gap_row["count"]) == ("", "accuracy_difference", 1)
    table = report.markdown()
    assert "| timeofday | timeofday=day (excluded) | undefined | 0 |" in table
