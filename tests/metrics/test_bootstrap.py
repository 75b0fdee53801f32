"""Poisson bootstrap weights and replicate counts, against an independent numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_insight.metrics.bootstrap import percentile_interval, poisson_weights
from lightning_insight.metrics.classification import SlicedConfusion
from lightning_insight.slicing import parse_slice_specs


def test_weights_are_poisson_one_and_a_function_of_the_id() -> None:
    ids = torch.arange(-20_000, 20_000)
    weights = poisson_weights(ids, 100).numpy()
    frequencies = np.bincount(weights.ravel(), minlength=6)[:6] / weights.size
    expected = [math.exp(-1) / math.factorial(k) for k in range(6)]
    # 4e6 draws: each frequency within 4 binomial standard errors of Poisson(1)'s
    for got, want in zip(frequencies, expected, strict=True):
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / weights.size)
    assert abs(weights.mean() - 1) < 0.005 and abs(weights.var() - 1) < 0.01
    # neighbouring ids and replicates are uncorrelated
    assert abs(np.corrcoef(weights[:-1, 0], weights[1:, 0])[0, 1]) < 0.02
    assert abs(np.corrcoef(weights[:, 0], weights[:, 1])[0, 1]) < 0.02
    # the same id, in any batch and order, gets the same row; another seed other rows
    again = poisson_weights(torch.tensor([5, -3, 5]), 100).numpy()
    assert (again[0] == weights[20_005]).all() and (again[1] == weights[19_997]).all()
    assert (again[0] == again[2]).all()
    assert not (poisson_weights(ids[:50], 100, seed=1).numpy() == weights[:50]).all()
    large = torch.tensor([2**40 + 7, 7])
    assert not (poisson_weights(large, 64)[0] == poisson_weights(large, 64)[1]).all()


def _oracle(cells: np.ndarray, groups: np.ndarray, weights: np.ndarray, slices: int) -> np.ndarray:
    """Weighted confusion counts per replicate and slice: ``(B, slices, 4)`` with np.add.at."""
    out = np.zeros((weights.shape[1], slices, 4), dtype=np.int64)
    for b in range(weights.shape[1]):
        np.add.at(out[b], (groups, cells), weights[:, b])
    return out


def test_replicate_counts_equal_weighted_counts_in_any_batching_with_duplicates() -> None:
    rng = np.random.default_rng(0)
    n = 300
    target = rng.integers(0, 2, n)
    preds = rng.random(n)
    weather = rng.choice(["sun", "rain", "fog"], n)
    ids = np.arange(1000, 1000 + n)
    metric = SlicedConfusion(task="binary", specs=parse_slice_specs(["weather"]), bootstrap=40)
    # uneven batches, and samples 0-9 repeated at the end (what DistributedSampler pads in)
    order = np.concatenate([rng.permutation(n), np.arange(10)])
    for start, stop in ((0, 7), (7, 150), (150, 310)):
        rows = order[start:stop]
        metric.update(
            torch.as_tensor(preds[rows]),
            torch.as_tensor(target[rows]),
            {"weather": list(weather[rows])},
            torch.as_tensor(ids[rows]),
        )
    counts = metric.compute()
    names, point = counts.dimensions["weather"]
    assert counts.replicates is not None and counts.overall_replicates is not None
    cells = 2 * target + (preds >= 0.5)
    groups = np.array([names.index(f"weather={w}") for w in weather])
    weights = poisson_weights(torch.as_tensor(ids), 40).numpy()
    expected = _oracle(cells, groups, weights, len(names))
    np.testing.assert_array_equal(counts.replicates["weather"], expected)
    np.testing.assert_array_equal(counts.overall_replicates, expected.sum(axis=1))
    assert point.sum() == n  # the repeated samples are counted once


def test_bootstrap_needs_sample_ids() -> None:
    metric = SlicedConfusion(task="binary", specs=parse_slice_specs(["weather"]), bootstrap=5)
    with pytest.raises(RuntimeError, match="got no `sample_ids`"):
        metric.update(torch.tensor([0.2]), torch.tensor([1]), {"weather": ["sun"]})
    with pytest.raises(ValueError, match=r"`bootstrap` to be an int >= 0, but got -1"):
        SlicedConfusion(task="binary", specs=parse_slice_specs(["weather"]), bootstrap=-1)


def test_percentile_interval_ignores_nan_replicates() -> None:
    values = np.array([[1.0, np.nan], [2.0, np.nan], [np.nan, np.nan], [3.0, np.nan]])
    low, high = percentile_interval(values, 0.5)
    assert (low[0], high[0]) == tuple(np.percentile([1.0, 2.0, 3.0], [25, 75]))
    assert math.isnan(low[1]) and math.isnan(high[1])
