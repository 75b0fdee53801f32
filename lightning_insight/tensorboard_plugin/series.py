"""InsightBoard's arithmetic on time series: steps to epochs, one value per epoch, correlations.

Plain NumPy/SciPy on arrays; no TensorBoard import, so every rule here is tested on its own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Fewer finite pairs than this and a correlation is undefined (``None``).
MIN_POINTS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochAxis:
    """Maps a datum's ``(step, wall_time)`` to a training epoch.

    Built from Lightning's ``epoch`` scalar (:meth:`from_epoch_scalar`: a step belongs to the epoch of
    the nearest ``epoch`` datum at or before it; among data at that same step, the one closest in wall
    time, since Lightning writes ``epoch`` in the same call as the metrics it goes with) or, without
    it, from the reports' ``(step, epoch)`` pairs (:meth:`from_reports`: a report closes its epoch,
    so a step belongs to the epoch of the first report at or after it).

    Attributes:
        steps: The anchors' steps, sorted.
        wall_times: The anchors' wall times, in the same order.
        epochs: The anchors' epochs, in the same order.
        closing: ``True`` when anchors close their epoch (reports), ``False`` when they open it.
    """

    steps: np.ndarray
    wall_times: np.ndarray
    epochs: np.ndarray
    closing: bool

    @classmethod
    def from_epoch_scalar(
        cls, steps: Sequence[int], wall_times: Sequence[float], values: Sequence[float]
    ) -> EpochAxis:
        """The axis that Lightning's ``epoch`` scalar defines.

        Example:
            >>> axis = EpochAxis.from_epoch_scalar([9, 46, 49], [1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
            >>> axis.epochs_of(np.array([5, 9, 47, 60]), np.array([0.5, 1.0, 2.1, 4.0])).tolist()
            [-1, 0, 0, 1]
        """
        step_array = np.asarray(steps, dtype=np.int64)
        wall_array = np.asarray(wall_times, dtype=np.float64)
        order = np.lexsort((wall_array, step_array))
        epoch_array = np.rint(np.asarray(values, dtype=np.float64)).astype(np.int64)
        return cls(
            steps=step_array[order],
            wall_times=wall_array[order],
            epochs=epoch_array[order],
            closing=False,
        )

    @classmethod
    def from_reports(cls, pairs: Sequence[tuple[int, int]]) -> EpochAxis:
        """The axis that reports' ``(step, epoch)`` pairs define.

        Example:
            >>> axis = EpochAxis.from_reports([(47, 0), (94, 1)])
            >>> axis.epochs_of(np.array([3, 47, 48, 94, 95]), np.zeros(5)).tolist()
            [0, 0, 1, 1, -1]
        """
        ordered = sorted(pairs)
        return cls(
            steps=np.array([s for s, _ in ordered], dtype=np.int64),
            wall_times=np.zeros(len(ordered)),
            epochs=np.array([e for _, e in ordered], dtype=np.int64),
            closing=True,
        )

    def epochs_of(self, steps: np.ndarray, wall_times: np.ndarray) -> np.ndarray:
        """The epoch of every datum, ``-1`` where the axis places none."""
        n = len(self.steps)
        out = np.full(len(steps), -1, dtype=np.int64)
        if n == 0 or len(steps) == 0:
            return out
        if self.closing:
            index = np.searchsorted(self.steps, steps, side="left")
            found = index < n
            out[found] = self.epochs[index[found]]
            return out
        index = np.searchsorted(self.steps, steps, side="right") - 1
        found = index >= 0
        first = np.searchsorted(self.steps, self.steps[np.maximum(index, 0)], side="left")
        for position in np.flatnonzero(found & (first < index)):  # several anchors at one step
            candidates = slice(first[position], index[position] + 1)
            nearest = np.argmin(np.abs(self.wall_times[candidates] - wall_times[position]))
            index[position] = first[position] + nearest
        out[found] = self.epochs[index[found]]
        return out


def last_per_epoch(
    series: np.ndarray,
    epochs: np.ndarray,
    steps: np.ndarray,
    wall_times: np.ndarray,
    values: np.ndarray,
    *,
    num_series: int,
    axis: Sequence[int],
) -> np.ndarray:
    """One value per (series, epoch): the datum with the largest ``(step, wall_time)`` in that epoch.

    Args:
        series: The series index of every datum.
        epochs: The epoch of every datum (``-1``: none, dropped).
        steps: The step of every datum.
        wall_times: The wall time of every datum.
        values: The value of every datum.
        num_series: How many series (rows of the result).
        axis: The epochs (columns of the result), sorted.

    Returns:
        A ``(num_series, len(axis))`` float array, NaN where a series has no datum in an epoch.

    Example:
        >>> last_per_epoch(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), np.array([1, 2, 3, 3]),
        ...     np.zeros(4), np.array([5.0, 6.0, 7.0, 8.0]), num_series=2, axis=[0, 1]).tolist()
        [[6.0, 7.0], [nan, 8.0]]
    """
    out = np.full((num_series, len(axis)), np.nan)
    axis_array = np.asarray(axis, dtype=np.int64)
    column = np.searchsorted(axis_array, epochs)
    keep = (epochs >= 0) & (column < len(axis_array))
    keep[keep] &= axis_array[column[keep]] == epochs[keep]
    if not keep.any():
        return out
    series, column = series[keep], column[keep]
    steps, wall_times, values = steps[keep], wall_times[keep], values[keep]
    order = np.lexsort((wall_times, steps, column, series))
    cell = series[order] * len(axis_array) + column[order]
    last = np.ones(len(cell), dtype=bool)
    last[:-1] = cell[1:] != cell[:-1]
    out.flat[cell[last]] = values[order][last]
    return out


def lagged_pairs(axis: Sequence[int], lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices ``(i, j)`` of the epoch pairs ``(e, e + lag)`` that both lie on ``axis``.

    Example:
        >>> [a.tolist() for a in lagged_pairs([0, 1, 2, 4], 1)]
        [[0, 1], [1, 2]]
    """
    position = {int(epoch): i for i, epoch in enumerate(axis)}
    pairs = [(i, position[int(e) + lag]) for i, e in enumerate(axis) if int(e) + lag in position]
    return (
        np.array([i for i, _ in pairs], dtype=np.int64),
        np.array([j for _, j in pairs], dtype=np.int64),
    )


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def correlation(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None, int]:
    """Pearson and Spearman correlation over the positions where both are finite, and their number.

    Both are ``None`` with fewer than :data:`MIN_POINTS` pairs, or when a side is constant.

    Example:
        >>> pearson, spearman, n = correlation(
        ...     np.array([1.0, 2.0, 3.0, np.nan]), np.array([2.0, 4.0, 5.0, 1.0])
        ... )
        >>> round(pearson, 6), spearman, n
        (0.981981, 1.0, 3)
    """
    both = np.isfinite(x) & np.isfinite(y)
    n = int(both.sum())
    if n < MIN_POINTS:
        return None, None, n
    x, y = x[both], y[both]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, reported as None
        pearson = float(np.corrcoef(x, y)[0, 1])
        spearman = float(stats.spearmanr(x, y).statistic)
    return _finite_or_none(pearson), _finite_or_none(spearman), n
