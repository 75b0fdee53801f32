"""slice_metrics and every indicator against fairlearn's MetricFrame (the independent oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equal_opportunity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_negative_rate,
    true_positive_rate,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_score

from lightning_insight import slice_metrics

TOL = 1e-9


def _close(ours: float, oracle: float) -> None:
    """Equal within TOL; a NaN on our side where the oracle has a number fails."""
    assert not math.isnan(ours), f"ours is NaN, oracle {oracle}"
    assert abs(ours - oracle) <= TOL, (ours, oracle)


def _npv(y_true, y_pred):
    return precision_score(1 - np.asarray(y_true), 1 - np.asarray(y_pred), zero_division=0)


BINARY_ORACLE = {
    "accuracy": accuracy_score,
    "tpr": true_positive_rate,
    "fpr": false_positive_rate,
    "tnr": true_negative_rate,
    "fnr": false_negative_rate,
    "ppv": lambda t, p: precision_score(t, p, zero_division=0),
    "npv": _npv,
    "f1": lambda t, p: f1_score(t, p, zero_division=0),
    "selection_rate": selection_rate,
}


def _data(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    weather = rng.choice(["clear", "rainy", "foggy", "snowy"], n, p=[0.4, 0.3, 0.2, 0.1])
    timeofday = rng.choice(["day", "night"], n)
    age = rng.uniform(0, 90, n)
    target = rng.integers(0, 2, n)
    hard = (weather == "foggy") & (timeofday == "night")
    noise = np.where(hard, 0.45, 0.2)
    probs = np.clip(np.where(target == 1, 0.7, 0.3) + rng.normal(0, noise), 0, 1)
    return probs, target, {"weather": weather, "timeofday": timeofday, "age": age}


def _frame(probs: np.ndarray, target: np.ndarray, features: dict[str, np.ndarray]) -> MetricFrame:
    return MetricFrame(
        metrics=BINARY_ORACLE,
        y_true=target,
        y_pred=(probs >= 0.5).astype(int),
        sensitive_features=features,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_slices_match_metricframe(seed: int) -> None:
    probs, target, attributes = _data(seed)
    report = slice_metrics(
        probs, target, attributes, task="binary", slices=["weather", "weather&timeofday"]
    )
    frame = _frame(probs, target, {"weather": attributes["weather"]})
    for value, row in frame.by_group.iterrows():
        for metric in BINARY_ORACLE:
            _close(report.slices[f"weather={value}"][metric], row[metric])
    frame2 = _frame(
        probs, target, {"weather": attributes["weather"], "timeofday": attributes["timeofday"]}
    )
    for (w, t), row in frame2.by_group.iterrows():
        name = f"weather={w}&timeofday={t}"
        for metric in BINARY_ORACLE:
            _close(report.slices[name][metric], row[metric])
        assert report.slices[name]["count"] == np.sum(
            (attributes["weather"] == w) & (attributes["timeofday"] == t)
        )
    for metric in BINARY_ORACLE:
        _close(report.overall[metric], frame.overall[metric])


@pytest.mark.parametrize("dimension", ["weather", "weather&timeofday"])
def test_indicators_match_fairlearn(dimension: str) -> None:
    probs, target, attributes = _data(3)
    y_pred = (probs >= 0.5).astype(int)
    names = dimension.split("&")
    features = (
        np.stack([attributes[n] for n in names], axis=1) if len(names) > 1 else attributes[names[0]]
    )
    report = slice_metrics(probs, target, attributes, task="binary", slices=[dimension])
    ours = report.indicators[dimension]
    kwargs = {"y_true": target, "y_pred": y_pred, "sensitive_features": features}
    _close(ours["demographic_parity_difference"], demographic_parity_difference(**kwargs))
    _close(ours["demographic_parity_ratio"], demographic_parity_ratio(**kwargs))
    _close(ours["equalized_odds_difference"], equalized_odds_difference(**kwargs))
    _close(ours["equalized_odds_ratio"], equalized_odds_ratio(**kwargs))
    _close(ours["equal_opportunity_difference"], equal_opportunity_difference(**kwargs))
    _close(ours["equal_opportunity_ratio"], equal_opportunity_ratio(**kwargs))
    frame = MetricFrame(
        metrics={"accuracy": accuracy_score, "ppv": BINARY_ORACLE["ppv"]},
        y_true=target,
        y_pred=y_pred,
        sensitive_features=features,
    )
    _close(ours["accuracy_difference"], frame.difference()["accuracy"])
    _close(ours["accuracy_ratio"], frame.ratio()["accuracy"])
    _close(ours["worst_accuracy"], frame.group_min()["accuracy"])
    _close(ours["predictive_parity_difference"], frame.difference()["ppv"])


def test_reference_group_matches_to_overall_with_reference() -> None:
    probs, target, attributes = _data(4)
    report = slice_metrics(
        probs, target, attributes, task="binary", slices=["weather"], reference={"weather": "clear"}
    )
    y_pred = (probs >= 0.5).astype(int)
    frame = MetricFrame(
        metrics=accuracy_score,
        y_true=target,
        y_pred=y_pred,
        sensitive_features=attributes["weather"],
    )
    by_group = frame.by_group
    ref = by_group["clear"]
    _close(report.indicators["weather"]["accuracy_difference"], float((by_group - ref).abs().max()))
    ratios = np.minimum(by_group / ref, ref / by_group)
    _close(report.indicators["weather"]["accuracy_ratio"], float(ratios.min()))
    assert report.reference == {"weather": "weather=clear"}


def test_binned_attribute_matches_pandas_cut() -> None:
    probs, target, attributes = _data(5)
    report = slice_metrics(probs, target, attributes, task="binary", slices=["age:0,18,65,inf"])
    bins = np.digitize(attributes["age"], [18, 65])
    labels = np.array(["[0,18)", "[18,65)", "[65,inf)"])[bins]
    frame = _frame(probs, target, {"age": labels})
    assert report.dimensions["age:0,18,65,inf"] == ("age=[0,18)", "age=[18,65)", "age=[65,inf)")
    for value, row in frame.by_group.iterrows():
        _close(report.slices[f"age={value}"]["accuracy"], row["accuracy"])
        _close(report.slices[f"age={value}"]["tpr"], row["tpr"])


def test_binned_values_out_of_range_are_left_out_of_that_dimension_only() -> None:
    report = slice_metrics(
        [0.9, 0.1, 0.8, 0.3],
        [1, 0, 1, 1],
        {"age": [5.0, 17.9, -1.0, float("nan")]},
        task="binary",
        slices=["age:0,18"],
    )
    assert report.slices["age=[0,18]"]["count"] == 2
    assert report.overall["count"] == 4


def test_multiclass_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    n, c = 2000, 4
    target = rng.integers(0, c, n)
    scores = rng.random((n, c)) + np.eye(c)[target] * rng.random((n, 1)) * 0.8
    group = rng.choice(["a", "b", "c"], n)
    report = slice_metrics(scores, target, {"group": group}, task="multiclass", slices=["group"])
    y_pred = scores.argmax(1)
    for value in ["a", "b", "c"]:
        m = group == value
        s = report.slices[f"group={value}"]
        _close(s["accuracy"], accuracy_score(target[m], y_pred[m]))
        _close(s["macro_f1"], f1_score(target[m], y_pred[m], average="macro"))
        _close(s["macro_recall"], balanced_accuracy_score(target[m], y_pred[m]))
        for k in range(c):
            _close(s[f"recall[{k}]"], float(np.mean(y_pred[m][target[m] == k] == k)))
    frame = MetricFrame(
        metrics=accuracy_score, y_true=target, y_pred=y_pred, sensitive_features=group
    )
    _close(report.indicators["group"]["accuracy_difference"], frame.difference())
    _close(report.indicators["group"]["accuracy_ratio"], frame.ratio())


def test_multiclass_labels_need_num_classes() -> None:
    with pytest.raises(ValueError, match="`num_classes` to be set"):
        slice_metrics([0, 1, 2], [0, 1, 1], {"g": ["a", "a", "b"]}, task="multiclass", slices=["g"])
    report = slice_metrics(
        [0, 1, 2], [0, 1, 1], {"g": ["a", "a", "b"]}, task="multiclass", slices=["g"], num_classes=3
    )
    assert report.slices["g=a"]["accuracy"] == 1.0
    assert math.isnan(report.slices["g=b"]["recall[0]"])


def test_single_sample_and_undefined_rates_are_nan_not_zero() -> None:
    # slice "b" has one negative sample: its tpr (0/0) is undefined.
    report = slice_metrics(
        [0.9, 0.2, 0.7, 0.1], [1, 0, 1, 0], {"g": ["a", "a", "a", "b"]}, task="binary", slices=["g"]
    )
    single = report.slices["g=b"]
    assert single["count"] == 1
    assert math.isnan(single["tpr"]) and math.isnan(single["ppv"])
    assert single["tnr"] == 1.0
    # with only one slice defining tpr, the tpr gap is undefined rather than 0
    assert math.isnan(report.indicators["g"]["equal_opportunity_difference"])
    assert report.indicators["g"]["accuracy_difference"] == 0.0


def test_min_support_excludes_with_reason() -> None:
    probs, target, attributes = _data(8, n=400)
    report = slice_metrics(
        probs, target, attributes, task="binary", slices=["weather"], min_support=50
    )
    small = [n for n in report.dimensions["weather"] if report.slices[n]["count"] < 50]
    assert small, "test data should have a small slice"
    for name in small:
        assert (
            report.excluded[name] == f"count {int(report.slices[name]['count'])} < min_support 50"
        )
    kept = [n for n in report.dimensions["weather"] if n not in small]
    accuracies = [report.slices[n]["accuracy"] for n in kept]
    _close(report.indicators["weather"]["accuracy_difference"], max(accuracies) - min(accuracies))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=2, max_value=120),
    groups=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_property_counts_and_indicators_match_fairlearn(n: int, groups: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    y_pred = rng.integers(0, 2, n)
    group = rng.integers(0, groups, n)
    report = slice_metrics(y_pred, y_true, {"g": group}, task="binary", slices=["g"])
    frame = MetricFrame(
        metrics={
            "accuracy": accuracy_score,
            "selection_rate": selection_rate,
            "count": lambda t, p: len(t),
        },
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=group,
    )
    for value, row in frame.by_group.iterrows():
        s = report.slices[f"g={value}"]
        assert s["count"] == row["count"]
        _close(s["accuracy"], row["accuracy"])
        _close(s["selection_rate"], row["selection_rate"])
        positives = y_true[group == value] == 1
        if positives.any():
            _close(s["tpr"], true_positive_rate(y_true[group == value], y_pred[group == value]))
        else:
            assert math.isnan(s["tpr"])
    if len(frame.by_group) >= 2:
        _close(report.indicators["g"]["accuracy_difference"], frame.difference()["accuracy"])
        _close(
            report.indicators["g"]["demographic_parity_difference"],
            frame.difference()["selection_rate"],
        )
    else:
        assert math.isnan(report.indicators["g"]["accuracy_difference"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"task": "regression"},
            ValueError,
            r"`task` to be one of \['binary', 'multiclass', 'detection'\], but got 'regression'",
        ),
        ({"metrics": ["auc"]}, ValueError, r"unknown \['auc'\]"),
        (
            {"indicators": ["map_ratio"]},
            ValueError,
            r"`indicators` to name indicators of task='binary'.*unknown \['map_ratio'\]",
        ),
        ({"min_support": 0}, ValueError, r"`min_support` to be an int >= 1, but got 0"),
        ({"threshold": 1.7}, ValueError, r"`threshold` to be a float in \[0, 1\], but got 1.7"),
        ({"max_slices": True}, ValueError, r"`max_slices` to be an int >= 1, but got True"),
        (
            {"threshold": "high"},
            ValueError,
            r"`threshold` to be a float in \[0, 1\], but got 'high'",
        ),
        ({"reference": "clear"}, TypeError, r"`reference` to map dimension -> slice"),
        (
            {"reference": {"scene": "city"}},
            ValueError,
            r"dimensions from `slices` \['g'\], but got \['scene'\]",
        ),
        ({"preds": [0.2, float("nan"), 0.4]}, ValueError, r"without NaN, but got 1 NaN values"),
        ({"preds": [0.2, 1.5, 0.4]}, ValueError, r"probabilities in \[0, 1\].*\[1.5\]"),
        (
            {"preds": [0, 2, 1]},
            ValueError,
            r"hard `preds` for task='binary' in \{0, 1\}, but got \[0, 1, 2\]",
        ),
        (
            {"target": [0, 1, 3]},
            ValueError,
            r"`target` for task='binary' in \{0, 1\}, but got values \[0, 1, 3\]",
        ),
        ({"target": [0.5, 1, 0]}, ValueError, r"integer class labels, but got non-integer values"),
        (
            {"preds": [[0.2, 0.8]] * 3},
            ValueError,
            r"shape \(N,\) for task='binary', but got preds \(3, 2\)",
        ),
        ({"preds": object()}, TypeError, r"`preds` to be a tensor or array, but got object"),
        (
            {"attributes": {"g": ["a", "b"]}},
            ValueError,
            r"one value per prediction \(3\), but got 2 values",
        ),
        (
            {"attributes": {"h": [1, 2, 3]}},
            RuntimeError,
            r"Expected attribute 'g'.*found were \['h'\]",
        ),
        (
            {"task": "multiclass", "num_classes": 3, "preds": [[0.2, 0.8]] * 3},
            ValueError,
            r"\(N, num_classes=3\), but got \(3, 2\)",
        ),
        (
            {"task": "multiclass", "num_classes": 2, "target": [0, 1, 2]},
            ValueError,
            r"task='multiclass' in \[0, 2\), but got values such as \[2\]",
        ),
        (
            {"task": "multiclass", "num_classes": 1},
            ValueError,
            r"`num_classes` to be an int >= 2, but got 1",
        ),
        (
            {"task": "multiclass", "num_classes": 2, "preds": [0, 1, 5]},
            ValueError,
            r"label `preds` in \[0, 2\)",
        ),
        (
            {"task": "multiclass", "preds": np.zeros((3, 2, 2))},
            ValueError,
            r"shape \(N,\) or \(N, C\) for task='multiclass'",
        ),
        (
            {"task": "multiclass", "preds": [[0.2, 0.8]] * 2},
            ValueError,
            r"`target` of shape \(2,\) matching `preds`, but got \(3,\)",
        ),
    ],
)
def test_bad_input_errors(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    call: dict[str, object] = {
        "preds": [0.2, 0.9, 0.4],
        "target": [0, 1, 1],
        "attributes": {"g": ["a", "b", "a"]},
        "task": "binary",
        "slices": ["g"],
    }
    if kwargs.get("task") == "multiclass":
        call.update(preds=[0, 1, 1])
    call.update(kwargs)
    preds, target, attributes = call.pop("preds"), call.pop("target"), call.pop("attributes")
    with pytest.raises(error, match=match):
        slice_metrics(preds, target, attributes, **call)  # type: ignore[arg-type]
