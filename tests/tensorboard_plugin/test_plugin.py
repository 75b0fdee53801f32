"""``*_impl`` methods on a log directory written by the real TensorBoardSink (see conftest.py)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from tensorboard import context
from werkzeug import wrappers

from lightning_insight.tensorboard_plugin.plugin import (
    BadParameterError,
    UnknownError,
    _series_list,
)

CTX = context.RequestContext()
EPOCHS_IN_FIXTURE = 5


def _close(a: float | None, b: float, tol: float = 1e-6) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def test_runs_sorted_with_epochs_sources_and_kinds(plugin: Any) -> None:
    runs = plugin.runs_impl(CTX, "")["runs"]
    assert [r["run"] for r in runs] == ["baseline", "no_epoch_scalar", "with_mitigation/version_0"]
    baseline = runs[0]
    assert baseline["epochs"] == [0, 1, 2, 3, 4]
    assert baseline["sources"] == ["test", "val"]
    assert baseline["kinds"] == {
        "fairness": True, "discovery": True, "comparison": True, "failure_modes": True
    }  # fmt: skip
    assert runs[2]["kinds"]["discovery"] is False
    assert runs[1]["epochs"] == [0, 1, 2, 3, 4]  # from the reports alone


def test_runs_report_epochs_per_kind_and_source(plugin: Any, insight_logs: Any) -> None:
    written = insight_logs[1]["baseline"]
    runs = {r["run"]: r for r in plugin.runs_impl(CTX, "")["runs"]}
    assert runs["baseline"]["report_epochs"] == {
        "fairness": {"test": [4], "val": [0, 1, 2, 3, 4]},
        "discovery": {"val": sorted(written.report_steps["discovery"])},
        # the fixture's comparison and failure-mode reports carry no source
        "comparison": {"": sorted(written.report_steps["comparison"])},
        "failure_modes": {"": sorted(written.report_steps["failure_modes"])},
    }
    assert runs["with_mitigation/version_0"]["report_epochs"] == {
        "fairness": {"val": [0, 1, 2, 3, 4]}, "discovery": {}, "comparison": {}, "failure_modes": {}
    }  # fmt: skip
    # the report route answers at exactly those epochs
    for kind, by_source in runs["baseline"]["report_epochs"].items():
        listed = {epoch for epochs in by_source.values() for epoch in epochs}
        for epoch in range(EPOCHS_IN_FIXTURE):
            if epoch in listed:
                assert plugin.report_impl(CTX, "", run="baseline", kind=kind, epoch=epoch)
            else:
                with pytest.raises(UnknownError, match=f"no {kind} report at epoch {epoch}"):
                    plugin.report_impl(CTX, "", run="baseline", kind=kind, epoch=epoch)


@pytest.mark.parametrize("run", ["baseline", "no_epoch_scalar"])
def test_scalars_are_the_last_value_of_each_epoch(plugin: Any, insight_logs: Any, run: str) -> None:
    written = insight_logs[1][run]
    answer = plugin.scalars_impl(CTX, "", run=run)
    assert answer["epochs"] == [0, 1, 2, 3, 4]
    for tag, expected in (("train_loss", written.train_loss), ("lr", written.lr)):
        series = answer["series"][tag]
        assert len(series) == 5
        for epoch, value in expected.items():  # float32 in the event file
            assert _close(series[epoch], value, 1e-6), (tag, epoch, series[epoch], value)
    overall = answer["series"]["insight/overall/accuracy"]
    for epoch, report in written.reports.items():
        if run != "baseline" or epoch < 4:
            assert _close(overall[epoch], report.overall["accuracy"])
    if run == "baseline":
        # the test report (same tag, same step as epoch 4's val report) came last: it wins epoch 4
        assert _close(overall[4], written.test_report.overall["accuracy"])
        assert answer["series"]["epoch"] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert "val_loss" in answer["series"]


def test_scalars_unknown_run(plugin: Any) -> None:
    with pytest.raises(UnknownError, match=r"Unknown run '\.\./baseline'"):
        plugin.scalars_impl(CTX, "", run="../baseline")


def test_slices_lines_counts_and_exclusions(plugin: Any, insight_logs: Any) -> None:
    written = insight_logs[1]["baseline"]
    answer = plugin.slices_impl(CTX, "", run="baseline", dimension="weather", metric="accuracy")
    assert answer["epochs"] == [0, 1, 2, 3, 4]
    assert answer["source"] == "val"
    names = [line["slice"] for line in answer["slices"]]
    assert names == list(written.reports[0].dimensions["weather"])
    assert "weather=snowy" in names
    for line in answer["slices"]:
        for epoch, report in written.reports.items():
            expected = report.slices[line["slice"]]
            assert _close(line["values"][epoch], expected["accuracy"])
            assert line["counts"][epoch] == int(expected["count"])
            assert line["excluded"][epoch] == report.excluded.get(line["slice"])
    snowy = answer["slices"][names.index("weather=snowy")]
    assert snowy["excluded"] == ["count 8 < min_support 20"] * 5
    assert snowy["counts"] == [8] * 5
    for epoch, report in written.reports.items():
        assert _close(answer["overall"][epoch], report.overall["accuracy"])


def test_slices_test_source_and_unknowns(plugin: Any, insight_logs: Any) -> None:
    written = insight_logs[1]["baseline"]
    answer = plugin.slices_impl(
        CTX, "", run="baseline", dimension="weather&timeofday", metric="tpr", source="test"
    )
    assert answer["epochs"] == [4]
    assert _close(answer["overall"][0], written.test_report.overall["tpr"])
    with pytest.raises(UnknownError, match="no dimension 'season'"):
        plugin.slices_impl(CTX, "", run="baseline", dimension="season", metric="accuracy")
    with pytest.raises(UnknownError, match="no metric 'bleu'"):
        plugin.slices_impl(CTX, "", run="baseline", dimension="weather", metric="bleu")
    with pytest.raises(UnknownError, match="no fairness report for source 'train'"):
        plugin.slices_impl(
            CTX, "", run="baseline", dimension="weather", metric="accuracy", source="train"
        )


def test_slice_table_rows_and_differences(plugin: Any, insight_logs: Any) -> None:
    report = insight_logs[1]["baseline"].reports[2]
    table = plugin.slice_table_impl(CTX, "", run="baseline", epoch=2)
    assert table["epoch"] == 2
    assert "count" not in table["metrics"]
    assert set(table["metrics"]) == set(report.overall) - {"count"}
    assert table["dimensions"] == {d: list(n) for d, n in report.dimensions.items()}
    assert len(table["rows"]) == sum(len(n) for n in report.dimensions.values())
    for row in table["rows"]:
        expected = report.slices[row["slice"]]
        assert row["slice"] in report.dimensions[row["dimension"]]
        assert row["count"] == int(expected["count"])
        assert row["excluded"] == report.excluded.get(row["slice"])
        for metric in table["metrics"]:
            value, overall = expected[metric], report.overall[metric]
            if math.isnan(value):
                assert row["values"][metric] is None and row["difference"][metric] is None
            else:
                assert _close(row["values"][metric], value)
                assert _close(row["difference"][metric], value - overall)
    with pytest.raises(UnknownError, match="at epoch 9"):
        plugin.slice_table_impl(CTX, "", run="baseline", epoch=9)


def test_fairness_indicators_rules_and_alerts(plugin: Any, insight_logs: Any) -> None:
    written = insight_logs[1]["baseline"]
    answer = plugin.fairness_impl(CTX, "", run="baseline")
    assert answer["epochs"] == [0, 1, 2, 3, 4]
    for epoch, report in written.reports.items():
        for dimension, values in report.indicators.items():
            for name, value in values.items():
                got = answer["indicators"][dimension][name][epoch]
                assert (got is None) if math.isnan(value) else _close(got, value)
    assert answer["bands"] == {}
    assert [r["rule"] for r in answer["rules"]] == [
        "accuracy_difference > 0.05", "weather: accuracy_ratio < 0.9"
    ]  # fmt: skip
    assert answer["rules"][1] == {
        "rule": "weather: accuracy_ratio < 0.9", "dimension": "weather",
        "name": "accuracy_ratio", "op": "<", "threshold": 0.9,
    }  # fmt: skip
    fired = [a for epoch in sorted(written.alerts) for a in written.alerts[epoch]]
    assert fired, "the fixture must fire alerts"
    assert len(answer["alerts"]) == len(fired)
    for got, alert in zip(answer["alerts"], fired, strict=True):
        assert (got["epoch"], got["rule"], got["dimension"], got["op"]) == (
            alert.epoch, alert.rule, alert.dimension, alert.op
        )  # fmt: skip
        assert _close(got["value"], alert.value)
        assert got["threshold"] == alert.threshold
        assert got["message"] == alert.message()


def test_fairness_bands_where_the_report_has_them(tmp_path: Any, make_plugin: Any) -> None:
    from lightning_insight.sinks import TensorBoardSink

    sink = TensorBoardSink(tmp_path / "run")
    for epoch in range(3):
        indicators = {"w": {"accuracy_difference": 0.1 * epoch, "accuracy_difference_low": 0.0,
                            "accuracy_difference_high": 0.2 * epoch + 0.1,
                            "accuracy_ratio": float("nan")}}  # fmt: skip
        payload = {"epoch": epoch, "step": epoch, "source": "val", "overall": {}, "slices": {},
                   "dimensions": {"w": []}, "indicators": indicators}  # fmt: skip
        sink.json("insight/report", payload, step=epoch)
    sink.close()
    plugin = make_plugin(tmp_path)
    answer = plugin.fairness_impl(CTX, "", run="run")
    assert answer["indicators"]["w"] == {
        "accuracy_difference": [0.0, 0.1, 0.2], "accuracy_ratio": [None, None, None]
    }  # fmt: skip
    assert answer["bands"] == {
        "w": {"accuracy_difference": {"low": [0.0] * 3, "high": [0.2 * e + 0.1 for e in range(3)]}}
    }  # fmt: skip
    assert answer["rules"] == [] and answer["alerts"] == []


def _expected_correlations(frame: pd.DataFrame, lag: int) -> tuple[Any, Any, Any]:
    """pandas on the series the fixture wrote: pairwise-complete correlations with a shift."""
    size = frame.shape[1]
    pearson = np.full((size, size), np.nan)
    spearman = np.full((size, size), np.nan)
    counts = np.zeros((size, size), dtype=int)
    for i in range(size):
        for j in range(size):
            pair = pd.DataFrame({"a": frame.iloc[:, i], "b": frame.iloc[:, j].shift(-lag)}).dropna()
            counts[i, j] = len(pair)
            if len(pair) >= 3:
                pearson[i, j] = pair["a"].corr(pair["b"], method="pearson")
                spearman[i, j] = pair["a"].corr(pair["b"], method="spearman")
    return pearson, spearman, counts


def _baseline_frame(written: Any) -> pd.DataFrame:
    """Per-epoch values of four baseline series as written (float32, like the event file)."""
    return pd.DataFrame(
        {
            "train_loss": pd.Series(written.train_loss, dtype="float32").astype(float),
            "lr": pd.Series(written.lr, dtype="float32").astype(float),
            "insight/overall/accuracy": pd.Series(
                {e: r.overall["accuracy"] for e, r in written.reports.items()}
                | {4: written.test_report.overall["accuracy"]},
                dtype="float32",
            ).astype(float),
            "insight/gap/weather/accuracy_difference": pd.Series(
                {
                    e: r.indicators["weather"]["accuracy_difference"]
                    for e, r in written.reports.items()
                }
                | {4: written.test_report.indicators["weather"]["accuracy_difference"]},
                dtype="float32",
            ).astype(float),
        }
    )


def _assert_matrices(answer: dict[str, Any], pearson: Any, spearman: Any) -> None:
    size = len(answer["series"])
    for got, expected in ((answer["pearson"], pearson), (answer["spearman"], spearman)):
        for i in range(size):
            for j in range(size):
                if math.isnan(expected[i, j]):
                    assert got[i][j] is None
                else:
                    assert _close(got[i][j], expected[i, j], 1e-5), (
                        i,
                        j,
                        got[i][j],
                        expected[i, j],
                    )


@pytest.mark.parametrize("lag", [0, 1, -2])
def test_correlation_matches_pandas(plugin: Any, insight_logs: Any, lag: int) -> None:
    frame = _baseline_frame(insight_logs[1]["baseline"])
    answer = plugin.correlation_impl(CTX, "", run="baseline", series=list(frame.columns), lag=lag)
    pearson, spearman, counts = _expected_correlations(frame, lag)
    assert answer["series"] == list(frame.columns)
    assert (answer["lag"], answer["start"], answer["end"]) == (lag, None, None)
    assert answer["n"] == counts.tolist()
    assert answer["epochs"] == [e for e in range(5) if 0 <= e + lag < 5]
    _assert_matrices(answer, pearson, spearman)
    assert lag != 0 or all(_close(answer["pearson"][i][i], 1.0) for i in range(4))


@pytest.mark.parametrize(
    ("lag", "start", "end"),
    [(0, 1, 4), (0, 0, 3), (1, 0, 4), (-1, 1, None), (0, None, 3), (0, 1, 2), (2, 1, 3)],
)
def test_correlation_over_an_epoch_range(
    plugin: Any, insight_logs: Any, lag: int, start: int | None, end: int | None
) -> None:
    """Only epochs in [start, end] take part; oracle: pandas and scipy on the restricted series."""
    frame = _baseline_frame(insight_logs[1]["baseline"])
    lo, hi = 0 if start is None else start, 4 if end is None else end
    restricted = frame.loc[lo:hi]
    answer = plugin.correlation_impl(
        CTX, "", run="baseline", series=list(frame.columns), lag=lag, start=start, end=end
    )
    pearson, spearman, counts = _expected_correlations(restricted, lag)
    assert (answer["start"], answer["end"]) == (start, end)
    assert answer["epochs"] == [e for e in range(lo, hi + 1) if lo <= e + lag <= hi]
    assert answer["n"] == counts.tolist()
    _assert_matrices(answer, pearson, spearman)
    # scipy on the pairs themselves, for one off-diagonal cell
    xs = [restricted["train_loss"][e] for e in answer["epochs"]]
    ys = [restricted["lr"][e + lag] for e in answer["epochs"]]
    if len(xs) >= 3:
        assert _close(answer["pearson"][0][1], stats.pearsonr(xs, ys).statistic, 1e-5)
        assert _close(answer["spearman"][0][1], stats.spearmanr(xs, ys).statistic, 1e-5)
    else:
        assert answer["pearson"][0][1] is None and answer["spearman"][0][1] is None
    # a range differs from the full run: the restriction is not a no-op
    if (start, end) == (1, 4) and lag == 0:
        full = plugin.correlation_impl(CTX, "", run="baseline", series=list(frame.columns))
        assert full["pearson"][0][1] != answer["pearson"][0][1]


def test_correlation_range_checks(plugin: Any) -> None:
    with pytest.raises(BadParameterError, match=r"`start` <= `end`.*got 3 > 1"):
        plugin.correlation_impl(
            CTX, "", run="baseline", series=["lr", "train_loss"], start=3, end=1
        )
    with pytest.raises(BadParameterError, match=r"`start` <= `end`"):
        plugin.scatter_impl(CTX, "", run="baseline", x="lr", y="train_loss", start=2, end=0)
    # a range outside the run, or shorter than the lag: no pairs, not an error
    answer = plugin.correlation_impl(
        CTX, "", run="baseline", series=["lr", "train_loss"], lag=3, start=0, end=2
    )
    assert answer["n"] == [[0, 0], [0, 0]] and answer["epochs"] == []
    answer = plugin.scatter_impl(CTX, "", run="baseline", x="lr", y="train_loss", start=7, end=9)
    assert answer["points"] == []


def test_correlation_null_below_three_points_and_bad_parameters(plugin: Any) -> None:
    answer = plugin.correlation_impl(CTX, "", run="baseline", series=["train_loss", "lr"], lag=3)
    assert answer["n"] == [[2, 2], [2, 2]]
    assert answer["pearson"] == [[None, None], [None, None]]
    assert answer["spearman"] == [[None, None], [None, None]]
    with pytest.raises(BadParameterError, match="at least 2 series"):
        plugin.correlation_impl(CTX, "", run="baseline", series=["lr"])
    with pytest.raises(BadParameterError, match=r"\|lag\| < 5"):
        plugin.correlation_impl(CTX, "", run="baseline", series=["lr", "train_loss"], lag=5)
    with pytest.raises(UnknownError, match="no scalar 'nope'"):
        plugin.correlation_impl(CTX, "", run="baseline", series=["lr", "nope"])


def test_scatter_points_follow_the_lag(plugin: Any, insight_logs: Any) -> None:
    written = insight_logs[1]["baseline"]
    answer = plugin.scatter_impl(CTX, "", run="baseline", x="lr", y="train_loss", lag=1)
    assert [p["epoch"] for p in answer["points"]] == [0, 1, 2, 3]
    for point in answer["points"]:
        assert _close(point["x"], written.lr[point["epoch"]])
        assert _close(point["y"], written.train_loss[point["epoch"] + 1])
    with pytest.raises(BadParameterError, match="lag"):
        plugin.scatter_impl(CTX, "", run="baseline", x="lr", y="train_loss", lag=-5)


@pytest.mark.parametrize(("lag", "start", "end"), [(0, 1, 3), (1, 1, 3), (-1, 2, None)])
def test_scatter_over_an_epoch_range(
    plugin: Any, insight_logs: Any, lag: int, start: int, end: int | None
) -> None:
    written = insight_logs[1]["baseline"]
    hi = 4 if end is None else end
    answer = plugin.scatter_impl(
        CTX, "", run="baseline", x="lr", y="train_loss", lag=lag, start=start, end=end
    )
    assert (answer["start"], answer["end"]) == (start, end)
    assert [p["epoch"] for p in answer["points"]] == [
        e for e in range(start, hi + 1) if start <= e + lag <= hi
    ]
    for point in answer["points"]:
        assert _close(point["x"], written.lr[point["epoch"]])
        assert _close(point["y"], written.train_loss[point["epoch"] + lag])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("series=a,b,,a", ["a", "b"]),
        ("series=a&series=b", ["a", "b"]),
        ("series=loss,ema&series=lr", ["loss,ema", "lr"]),
        ("series=a&series=&series=a", ["a"]),
        ("", []),
    ],
)
def test_series_parameter_single_list_or_repeated(query: str, expected: list[str]) -> None:
    assert _series_list(wrappers.Request.from_values(query_string=query)) == expected


def test_correlation_of_a_tag_with_a_comma(plugin: Any, insight_logs: Any) -> None:
    written = insight_logs[1]["baseline"]
    answer = plugin.correlation_impl(CTX, "", run="baseline", series=["loss,ema", "train_loss"])
    xs = np.array([written.loss_ema[e] for e in range(5)], dtype=np.float32).astype(float)
    ys = np.array([written.train_loss[e] for e in range(5)], dtype=np.float32).astype(float)
    assert _close(answer["pearson"][0][1], stats.pearsonr(xs, ys).statistic, 1e-5)


@pytest.mark.parametrize(
    ("kind", "epoch", "tags"),
    [
        ("discovery", 3, ["insight/discovery/mosaic/slice_0"]),
        ("comparison", 3, ["insight/comparison/cluster_0/drill_down",
                           "insight/comparison/cluster_0/exemplars"]),
        ("failure_modes", 4, ["insight/failure_modes/mode_0"]),
        ("fairness", 1, []),
    ],
)  # fmt: skip
def test_report_with_its_images(
    plugin: Any, insight_logs: Any, kind: str, epoch: int, tags: list[str]
) -> None:
    written = insight_logs[1]["baseline"]
    answer = plugin.report_impl(CTX, "", run="baseline", kind=kind, epoch=epoch)
    assert (answer["kind"], answer["epoch"], answer["step"]) == (kind, epoch, (epoch + 1) * 10)
    assert answer["report"]["epoch"] == epoch
    assert [image["tag"] for image in answer["images"]] == tags
    for image in answer["images"]:
        assert image["step"] == answer["step"]
        assert image["url"].startswith("image?run=baseline&tag=insight%2F")
        png = plugin.image_impl(CTX, "", run="baseline", tag=image["tag"], step=image["step"])
        name = image["tag"].split("/", 1)[1]
        key = f"discovery/{epoch}" if kind == "discovery" else name
        expected = written.images[key][1]
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), expected
        )
    if kind == "fairness":
        assert answer["source"] == "val"
        assert answer["report"]["overall"]["count"] == 400


def test_report_prefers_val_then_source(plugin: Any) -> None:
    val = plugin.report_impl(CTX, "", run="baseline", kind="fairness", epoch=4)
    test = plugin.report_impl(CTX, "", run="baseline", kind="fairness", epoch=4, source="test")
    assert (val["source"], test["source"]) == ("val", "test")
    assert val["report"]["overall"] != test["report"]["overall"]


def test_report_and_image_unknowns(plugin: Any) -> None:
    with pytest.raises(UnknownError, match="no discovery report at epoch 2"):
        plugin.report_impl(CTX, "", run="baseline", kind="discovery", epoch=2)
    with pytest.raises(UnknownError, match="Unknown report kind 'loss'"):
        plugin.report_impl(CTX, "", run="baseline", kind="loss", epoch=2)
    with pytest.raises(UnknownError, match="Unknown run"):
        plugin.report_impl(CTX, "", run="nope", kind="fairness", epoch=0)
    tag = "insight/failure_modes/mode_0"
    with pytest.raises(UnknownError, match="has no step 7"):
        plugin.image_impl(CTX, "", run="baseline", tag=tag, step=7)
    with pytest.raises(UnknownError, match="has no index 1"):
        plugin.image_impl(CTX, "", run="baseline", tag=tag, step=50, index=1)
    with pytest.raises(UnknownError, match="no image summary"):
        plugin.image_impl(CTX, "", run="baseline", tag="insight/report", step=50)


def test_reports_are_parsed_once_per_version(plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = plugin._read_reports

    def counting(*args: Any) -> Any:
        calls.append(args[3])
        return original(*args)

    monkeypatch.setattr(plugin, "_read_reports", counting)
    plugin.runs_impl(CTX, "")
    first = len(calls)
    assert first == 6  # 4 report tags of baseline, 1 each for the others
    plugin.runs_impl(CTX, "")
    plugin.slices_impl(CTX, "", run="baseline", dimension="weather", metric="accuracy")
    assert len(calls) == first


def test_is_active_and_frontend_metadata(plugin: Any) -> None:
    from tensorboard.plugins import base_plugin

    from lightning_insight.tensorboard_plugin.plugin import InsightBoardPlugin

    assert plugin.is_active() is True
    assert InsightBoardPlugin(base_plugin.TBContext(data_provider=None)).is_active() is False
    meta = plugin.frontend_metadata()
    assert (meta.es_module_path, meta.tab_name) == ("/index.js", "InsightBoard")
