"""Bootstrap intervals on slices and gaps: fairlearn agreement, coverage, and alerts that ignore noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score

from lightning_insight import FairnessMonitor, SliceReport, slice_metrics
from lightning_insight.fairness.alerts import AlertTracker, adjusted_p_values, parse_alert_rule


def _groups(n: int, rates: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    group = np.repeat(["a", "b"], n // 2)
    target = rng.integers(0, 2, n)
    correct = rng.random(n) < np.where(group == "a", rates[0], rates[1])
    return np.where(correct, target, 1 - target).astype(float), target, group


def test_slice_accuracy_interval_agrees_with_fairlearn_bootstrap() -> None:
    preds, target, group = _groups(600, (0.8, 0.7), seed=0)
    ours = slice_metrics(preds, target, {"g": group}, task="binary", slices=["g"], bootstrap=1000)
    frame = MetricFrame(
        metrics=accuracy_score,
        y_true=target,
        y_pred=preds.astype(int),
        sensitive_features=group,
        n_boot=1000,
        ci_quantiles=[0.025, 0.975],
        random_state=0,
    )
    low, high = frame.by_group_ci
    for value in ("a", "b"):
        interval = ours.slices[f"g={value}"]
        # each endpoint has a Monte Carlo error of ~0.002 at B=1000 (both sides): 0.012 is ~4 SE
        assert abs(interval["accuracy_low"] - low[value]) < 0.012
        assert abs(interval["accuracy_high"] - high[value]) < 0.012
        assert interval["accuracy_low"] < interval["accuracy"] < interval["accuracy_high"]
    assert ours.bootstrap == 1000 and ours.confidence == 0.95
    assert "count_low" not in ours.slices["g=a"]
    assert ours.overall["accuracy_low"] < ours.overall["accuracy"] < ours.overall["accuracy_high"]


@pytest.mark.slow
def test_gap_interval_covers_the_true_gap_about_95_percent_of_the_time() -> None:
    # 400 seeded repetitions, true accuracy gap 0.1 (0.8 vs 0.7, 400 samples each); each repetition
    # draws its own bootstrap weights (other sample ids). Percentile intervals run slightly narrow at
    # this size (FIELD_NOTES: ~94.2%); the band 93-97% is the issue's.
    hits = 0
    for repetition in range(400):
        preds, target, group = _groups(800, (0.8, 0.7), seed=repetition)
        report = slice_metrics(
            preds,
            target,
            {"g": group},
            task="binary",
            slices=["g"],
            indicators=["accuracy_difference"],
            bootstrap=200,
            sample_ids=np.arange(800) + repetition * 10_000,
        )
        gap = report.indicators["g"]
        hits += gap["accuracy_difference_low"] <= 0.1 <= gap["accuracy_difference_high"]
    assert 0.93 <= hits / 400 <= 0.97


def _report(n: int, seed: int) -> SliceReport:
    preds, target, group = _groups(n, (0.85, 0.65), seed=seed)
    return slice_metrics(
        preds,
        target,
        {"g": group},
        task="binary",
        slices=["g"],
        bootstrap=200,
        sample_ids=np.arange(n) + seed * 100_000,
    )


def test_ci_alert_ignores_a_noisy_small_slice_and_fires_with_evidence() -> None:
    # true gap 0.2; the rule's threshold 0.1: on 40 samples the point gap crosses it but the interval
    # does not exclude it; on 4000 samples it does.
    small = _report(40, seed=3)
    gap = small.indicators["g"]
    assert gap["accuracy_difference"] > 0.1 and gap["accuracy_difference_low"] <= 0.1
    point = AlertTracker([parse_alert_rule("accuracy_difference > 0.1")])
    ci = AlertTracker([parse_alert_rule("accuracy_difference > 0.1 @ci")])
    assert len(point.update(small)) == 1 and ci.update(small) == []
    large = _report(4000, seed=3)
    assert large.indicators["g"]["accuracy_difference_low"] > 0.1
    (alert,) = ci.update(large)
    assert alert.low == large.indicators["g"]["accuracy_difference_low"] and alert.high is not None
    assert "[" in alert.message()


def test_corrections_adjust_p_values_like_statsmodels_definitions() -> None:
    p = [0.01, 0.04, 0.03, 0.2]
    # Holm: sorted 0.01,0.03,0.04,0.2 -> 4*0.01, max(.04, 3*0.03), max(.09, 2*0.04), max(.09, 0.2)
    assert np.allclose(adjusted_p_values(p, "holm"), [0.04, 0.09, 0.09, 0.2])
    # BH: m*p/rank = .04, .06, .0533, .2 -> step-up minimum from the top
    assert np.allclose(adjusted_p_values(p, "bh"), [0.04, 0.0533333, 0.0533333, 0.2])
    report = _report(4000, seed=5)
    for correction in ("holm", "bh"):
        tracker = AlertTracker(
            [parse_alert_rule("accuracy_difference > 0.1 @ci")], correction=correction
        )
        (alert,) = tracker.update(report)
        assert alert.p_value is not None and alert.p_value <= 0.05


def test_hysteresis_keeps_an_alert_until_the_clear_level() -> None:
    rule = parse_alert_rule("accuracy_difference > 0.1 clear 0.05")
    tracker = AlertTracker([rule])

    def at(value: float) -> SliceReport:
        return SliceReport(
            task="binary",
            overall={},
            slices={},
            dimensions={"g": ()},
            indicators={"g": {"accuracy_difference": value}},
        )

    fired = [len(tracker.update(at(v))) for v in (0.12, 0.08, 0.06, 0.04, 0.08, 0.11)]
    assert fired == [1, 1, 1, 0, 0, 1]
    plain = AlertTracker([parse_alert_rule("accuracy_difference > 0.1")])
    assert [len(plain.update(at(v))) for v in (0.12, 0.08)] == [1, 0]


def test_regression_rule_fires_when_a_slice_falls_while_overall_rises() -> None:
    tracker = AlertTracker([parse_alert_rule("regression: accuracy 0.05")])

    def at(overall: float, a: float, b: float) -> SliceReport:
        return SliceReport(
            task="binary",
            overall={"accuracy": overall},
            slices={"g=a": {"accuracy": a}, "g=b": {"accuracy": b}},
            dimensions={"g": ("g=a", "g=b")},
            indicators={"g": {}},
        )

    assert tracker.update(at(0.80, 0.80, 0.80)) == []  # nothing to compare with yet
    (alert,) = tracker.update(at(0.85, 0.90, 0.70))  # b fell by 0.10, overall rose
    assert (alert.slice, round(alert.value, 6)) == ("g=b", -0.1)
    assert "fell by 0.1" in alert.message()
    assert tracker.update(at(0.84, 0.95, 0.60)) == []  # overall fell: not a regression alert
    state = tracker.state_dict()
    fresh = AlertTracker([parse_alert_rule("regression: accuracy 0.05")])
    fresh.load_state_dict(state)
    assert len(fresh.update(at(0.90, 0.96, 0.50))) == 1


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ("accuracy_difference > 0.1 clear 0.2", r"clear level 0.2 must be on the safe side"),
        ("accuracy_ratio < 0.8 clear 0.7", r"clear level 0.7 must be on the safe side"),
        ("regression: accuracy", r"expected 'regression: <metric> <drop>'"),
        ("regression: accuracy -0.1", r"the drop must be >= 0"),
    ],
)
def test_bad_rule_options(rule: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_alert_rule(rule)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alerts": ["accuracy_difference > 0.1 @ci"]}, r"`bootstrap` to be > 0 for the '@ci'"),
        ({"bootstrap": -2}, r"`bootstrap` to be an int >= 0, but got -2"),
        ({"bootstrap": 10, "confidence": 1.5}, r"`confidence` to be a float in \(0, 1\)"),
        ({"correction": "bonferroni"}, r"`correction` to be None or one of"),
    ],
)
def test_monitor_checks_bootstrap_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FairnessMonitor("binary", ["weather"], **kwargs)


def test_monitor_writes_intervals_to_the_sinks(tmp_path: Path) -> None:
    from pytorch_lightning import Trainer

    from lightning_insight import MemorySink
    from lightning_insight.datasets import SceneClassifier, ScenesDataModule

    sink = MemorySink()
    monitor = FairnessMonitor(
        "binary",
        ["weather"],
        bootstrap=100,
        min_support=1,
        alerts=["accuracy_difference > 0.9 @ci"],
        sinks=[sink],
    )
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[monitor],
    )
    trainer.validate(
        SceneClassifier(channels=(4, 8)), ScenesDataModule(num_train=32, num_val=120, batch_size=40)
    )
    report = monitor.history[0]
    keys = sink.scalar_keys()
    assert "insight/gap/weather/accuracy_difference_low" in keys
    assert "insight/slice/weather/foggy/accuracy_high" in keys
    assert sink.jsons[-1][2]["bootstrap"] == 100
    foggy = report.slices["weather=foggy"]
    assert foggy["accuracy_low"] <= foggy["accuracy"] <= foggy["accuracy_high"]
    assert monitor.alerts == []
