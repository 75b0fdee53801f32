from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lightning_insight.tensorboard_plugin.plugin import report_kind
from lightning_insight.tensorboard_plugin.series import (
    EpochAxis,
    correlation,
    lagged_pairs,
    last_per_epoch,
)


def test_epoch_scalar_axis_maps_to_the_datum_at_or_before() -> None:
    # Lightning: epoch 0 logged at steps 9 and 46 (validation), epoch 1 from step 49.
    axis = EpochAxis.from_epoch_scalar([49, 9, 46], [3.0, 1.0, 2.0], [1.0, 0.0, 0.0])
    steps = np.array([0, 9, 30, 46, 47, 48, 49, 500])
    assert axis.epochs_of(steps, np.zeros(len(steps))).tolist() == [-1, 0, 0, 0, 0, 0, 1, 1]


def test_epoch_scalar_ties_pick_the_nearest_wall_time() -> None:
    # validation of epoch 0 and training of epoch 1 both logged at step 10
    axis = EpochAxis.from_epoch_scalar([10, 10, 20], [100.0, 200.0, 300.0], [0.0, 1.0, 1.0])
    got = axis.epochs_of(np.array([10, 10, 15]), np.array([100.2, 199.9, 250.0]))
    assert got.tolist() == [0, 1, 1]


def test_report_axis_maps_to_the_closing_report() -> None:
    axis = EpochAxis.from_reports([(20, 1), (10, 0)])
    got = axis.epochs_of(np.array([1, 10, 11, 20, 21]), np.zeros(5))
    assert got.tolist() == [0, 0, 1, 1, -1]
    assert EpochAxis.from_reports([]).epochs_of(np.array([1]), np.zeros(1)).tolist() == [-1]


def test_last_per_epoch_takes_the_largest_step_then_wall_time() -> None:
    series = np.array([0, 0, 0, 0, 1, 1])
    epochs = np.array([0, 0, 2, -1, 2, 7])  # -1 and 7 (not on the axis) are dropped
    steps = np.array([5, 3, 9, 1, 9, 9])
    walls = np.array([0.0, 9.0, 1.0, 0.0, 2.0, 0.0])
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    got = last_per_epoch(series, epochs, steps, walls, values, num_series=3, axis=[0, 1, 2])
    np.testing.assert_array_equal(got, [[1.0, np.nan, 3.0], [np.nan, np.nan, 5.0], [np.nan] * 3])


def test_lagged_pairs_use_epoch_numbers() -> None:
    first, second = lagged_pairs([0, 2, 4, 6], 2)
    assert (first.tolist(), second.tolist()) == ([0, 1, 2], [1, 2, 3])
    first, second = lagged_pairs([0, 2, 4, 6], -1)
    assert first.tolist() == second.tolist() == []


def test_correlation_against_scipy_on_finite_pairs() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    x[[3, 7]] = np.nan
    y[11] = np.inf
    pearson, spearman, n = correlation(x, y)
    keep = np.isfinite(x) & np.isfinite(y)
    assert n == 27
    assert pearson == pytest.approx(stats.pearsonr(x[keep], y[keep]).statistic, abs=1e-12)
    assert spearman == pytest.approx(stats.spearmanr(x[keep], y[keep]).statistic, abs=1e-12)


def test_correlation_is_none_when_undefined() -> None:
    assert correlation(np.array([1.0, 2.0, np.nan]), np.array([1.0, 3.0, 2.0])) == (None, None, 2)
    assert correlation(np.ones(5), np.arange(5.0)) == (None, None, 5)  # constant side


def test_report_kinds_from_tags() -> None:
    assert report_kind("insight/report") == "fairness"
    assert report_kind("insight/report/dataloader_idx_1") == "fairness"
    assert report_kind("custom/discovery/report") == "discovery"
    assert report_kind("insight/comparison/report") == "comparison"
    assert report_kind("insight/failure_modes/report") == "failure_modes"
    assert report_kind("insight/slices") is None
    assert report_kind("insight/reports") is None
