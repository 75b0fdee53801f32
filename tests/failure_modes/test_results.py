from __future__ import annotations

import json
import math

import pytest

from lightning_insight.failure_modes.results import (
    GROUP_STATUSES,
    FailureMode,
    FailureModeGroup,
    FailureModeReport,
    TreeNode,
)
from lightning_insight.sinks.base import ROW_FIELDS


def make_report(groups: tuple[int | str, int | str] = (1, 4)) -> FailureModeReport:
    fitted, skipped = groups
    nodes = (
        TreeNode(node_id=0, depth=0, size=10, failures=4, error_rate=0.4, feature=7, threshold=0.5,
                 left=1, right=2),
        TreeNode(node_id=1, depth=1, size=6, failures=1, error_rate=1 / 6),
        TreeNode(node_id=2, depth=1, size=4, failures=3, error_rate=0.75),
    )  # fmt: skip
    worst = FailureMode(
        group=fitted,
        leaf_id=2,
        path=((7, 0.5, ">"),),
        size=4,
        failures=3,
        error_rate=0.75,
        error_coverage=0.75,
        importance=0.5625,
        sample_ids=(12, 15, 18, 19),
        path_error_rates=(0.4, 0.75),
    )
    other = FailureMode(
        group=fitted,
        leaf_id=1,
        path=((7, 0.5, "<="),),
        size=6,
        failures=1,
        error_rate=1 / 6,
        error_coverage=0.25,
        importance=1 / 24,
        sample_ids=(10, 11, 13, 14, 16, 17),
        path_error_rates=(0.4, 1 / 6),
    )
    return FailureModeReport(
        modes=(worst, other),
        groups=(
            FailureModeGroup(group=fitted, status="fitted", size=10, failures=4, base_error_rate=0.4,
                             aler=0.75 * 0.75 + 0.25 / 6, min_failures=2, selected_features=(7, 3),
                             nodes=nodes),
            FailureModeGroup(group=skipped, status="not enough failures", size=5, failures=1,
                             base_error_rate=0.2, aler=float("nan"), min_failures=2),
        ),
        num_samples=15,
        grouping="prediction",
        feature_names=tuple(f"unit{i}" for i in range(8)),
        epoch=2,
        step=40,
        source="val",
    )  # fmt: skip


@pytest.mark.parametrize("groups", [(1, 4), ("rainy", "clear")])
def test_to_dict_is_json_safe_and_round_trips(groups: tuple[int | str, int | str]) -> None:
    report = make_report(groups)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["kind"] == "failure_mode_report"
    assert data["schema_version"] == 1
    assert data["aler"][str(groups[1])] is None
    assert data["base_error_rate"] == {str(groups[0]): 0.4, str(groups[1]): 0.2}
    assert data["modes"][0]["path"] == [[7, 0.5, ">"]]
    assert data["groups"][1]["reason"] == "not enough failures (1 < min_failures=2 of 5 samples)"
    back = FailureModeReport.from_dict(data)
    assert back.to_dict() == report.to_dict()
    assert back.modes == report.modes
    assert back.groups[0] == report.groups[0]
    assert math.isnan(back.aler[groups[1]])
    assert back.base_error_rate == report.base_error_rate


def test_views() -> None:
    report = make_report()
    assert report.status == {1: "fitted", 4: "not enough failures"}
    assert set(report.status.values()) <= set(GROUP_STATUSES)
    assert report.group(1).fitted and not report.group(4).fitted
    assert report.modes_of(1) == report.modes
    assert report.modes_of(4) == ()
    assert report.describe(report.modes[0]) == "unit7 > 0.5"
    assert report.modes[0].describe() == "feature[7] > 0.5"
    assert FailureMode(group=0, leaf_id=0, path=(), size=1, failures=0, error_rate=0.0,
                       error_coverage=math.nan, importance=math.nan, sample_ids=(0,)).describe() == "all samples"  # fmt: skip
    nodes = report.group(1).nodes
    assert [node.is_leaf for node in nodes] == [False, True, True]
    assert report.group(1).reason == "fitted (4 failures of 10 samples)"
    no_successes = FailureModeGroup(group=0, status="no successes", size=3, failures=3,
                                    base_error_rate=1.0, aler=math.nan, min_failures=1)  # fmt: skip
    assert no_successes.reason == "no successes (all 3 samples failed)"


def test_group_lookup_raises_for_unknown_group() -> None:
    with pytest.raises(KeyError, match=r"Expected a group among \[1, 4\], but got 9"):
        make_report().group(9)


def test_rows_have_the_csv_fields() -> None:
    rows = make_report().rows()
    assert all(set(row) == set(ROW_FIELDS) for row in rows)
    by_key = {(row["slice"], row["metric"]): row for row in rows}
    assert by_key[("group=1", "base_error_rate")]["value"] == 0.4
    assert math.isnan(by_key[("group=4", "aler")]["value"])
    assert by_key[("group=1&leaf=2", "rank")]["value"] == 1.0
    assert by_key[("group=1&leaf=2", "importance")]["count"] == 4
    assert {row["dimension"] for row in rows} == {"failure_modes"}
    assert {row["epoch"] for row in rows} == {2}


def test_scalars() -> None:
    values = make_report(("dawn/dusk", "night")).scalars()
    assert values["insight/failure_modes/group/dawn_dusk/base_error_rate"] == 0.4
    assert math.isnan(values["insight/failure_modes/group/night/aler"])
    assert values["insight/failure_modes/top/importance"] == 0.5625
    assert values["insight/failure_modes/top/lift"] == pytest.approx(0.35)
    assert values["insight/failure_modes/num_modes"] == 2.0
    empty = FailureModeReport(modes=(), groups=(), num_samples=0, grouping="all").scalars("x")
    assert math.isnan(empty["x/failure_modes/top/error_rate"])
    assert empty["x/failure_modes/num_modes"] == 0.0


def test_markdown() -> None:
    text = make_report().markdown(top=1)
    assert "| 1 | 1 | unit7 > 0.5 | 4 | 0.75 | 0.75 | 0.562 | 0.4 |" in text
    assert "unit7 <= 0.5" not in text
    assert "- group 4: not enough failures (1 < min_failures=2 of 5 samples)" in text
