"""Group-fairness indicators over the slices of one dimension.

Definitions follow fairlearn (``MetricFrame.difference()`` / ``.ratio()`` with
``method="between_groups"``): a *difference* is the largest minus the smallest value over the slices of a
dimension, a *ratio* the smallest divided by the largest. Equalized odds takes the worse of the true- and
false-positive-rate gaps (the larger difference, the smaller ratio).

With a *reference* slice, a difference is the largest absolute difference to the reference's value and a
ratio the smallest of ``min(v / ref, ref / v)`` (fairlearn's ``method="to_overall"`` with the reference in
place of the overall value).

Only slices with at least ``min_support`` samples take part; a slice whose metric is undefined (NaN) is
left out of that indicator. An indicator with fewer than two defined values is NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

BINARY_INDICATORS: dict[str, tuple[str, str]] = {
    "demographic_parity_difference": ("selection_rate", "difference"),
    "demographic_parity_ratio": ("selection_rate", "ratio"),
    "equalized_odds_difference": ("tpr+fpr", "difference"),
    "equalized_odds_ratio": ("tpr+fpr", "ratio"),
    "equal_opportunity_difference": ("tpr", "difference"),
    "equal_opportunity_ratio": ("tpr", "ratio"),
    "predictive_parity_difference": ("ppv", "difference"),
    "accuracy_difference": ("accuracy", "difference"),
    "accuracy_ratio": ("accuracy", "ratio"),
    "worst_accuracy": ("accuracy", "min"),
}
MULTICLASS_INDICATORS: dict[str, tuple[str, str]] = {
    name: BINARY_INDICATORS[name]
    for name in ("accuracy_difference", "accuracy_ratio", "worst_accuracy")
}

DETECTION_INDICATORS: dict[str, tuple[str, str]] = {
    "map_difference": ("map", "difference"),
    "map_ratio": ("map", "ratio"),
    "recall_50_difference": ("recall_50", "difference"),
    "worst_map": ("map", "min"),
}


def _table(task: str) -> dict[str, tuple[str, str]]:
    if task == "binary":
        return BINARY_INDICATORS
    if task == "detection":
        return DETECTION_INDICATORS
    return MULTICLASS_INDICATORS


def indicator_names(task: str) -> tuple[str, ...]:
    """Indicators defined for ``task``."""
    return tuple(_table(task))


def _gaps(values: np.ndarray, kind: str, reference: int | None) -> np.ndarray:
    """One indicator per row of ``values`` ``(R, S)`` (rows: bootstrap replicates or one report)."""
    if values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    defined = ~np.isnan(values)
    count = defined.sum(axis=1)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, as wanted
        if kind == "min":
            return np.asarray(np.nanmin(values, axis=1), dtype=np.float64)
        if reference is not None:
            ref = values[:, reference : reference + 1]
            if kind == "difference":
                out = np.nanmax(np.abs(values - ref), axis=1)
            else:
                ratios = np.minimum(values / ref, ref / values)
                ratios = np.where((values == 0) & (ref == 0), 1.0, ratios)
                out = np.nanmin(ratios, axis=1)
            return np.where(np.isnan(ref[:, 0]) | (count == 0), np.nan, out)
        high, low = np.nanmax(values, axis=1), np.nanmin(values, axis=1)
        if kind == "difference":
            out = high - low
        else:
            out = np.where(high == 0, np.nan, low / np.where(high == 0, 1.0, high))
        return np.where(count < 2, np.nan, out)


def indicator_replicates(
    metrics: Mapping[str, np.ndarray],
    *,
    task: str,
    indicators: Sequence[str] | None = None,
    reference: int | None = None,
) -> dict[str, np.ndarray]:
    """Indicators of one dimension for each row of ``(R, S)`` metric arrays (e.g. bootstrap replicates).

    The same definitions as :func:`fairness_indicators`, vectorised over the rows.

    Raises:
        ValueError: if an indicator name is unknown for ``task``.

    Example:
        >>> out = indicator_replicates({"accuracy": np.array([[0.9, 0.7], [0.8, 0.8]])}, task="multiclass",
        ...                            indicators=["accuracy_difference"])
        >>> np.round(out["accuracy_difference"], 4).tolist()
        [0.2, 0.0]
    """
    table = _table(task)
    names = list(table) if indicators is None else list(indicators)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(
            f"Expected argument `indicators` to name indicators of task={task!r} from {list(table)}, "
            f"but got unknown {unknown}."
        )
    out: dict[str, np.ndarray] = {}
    for name in names:
        metric, kind = table[name]
        gaps = [
            _gaps(np.atleast_2d(np.asarray(metrics[part], dtype=np.float64)), kind, reference)
            for part in metric.split("+")
        ]
        if len(gaps) == 1:
            out[name] = gaps[0]
        else:
            stacked = np.stack(gaps)
            worst = stacked.max(axis=0) if kind == "difference" else stacked.min(axis=0)
            out[name] = np.where(np.isnan(stacked).any(axis=0), np.nan, worst)
    return out


def fairness_indicators(
    metrics: Mapping[str, Sequence[float] | np.ndarray],
    *,
    task: str,
    indicators: Sequence[str] | None = None,
    reference: int | None = None,
) -> dict[str, float]:
    """Indicators of one dimension from its slices' metrics.

    Args:
        metrics: metric name -> value per slice (only the slices that take part).
        task: ``"binary"``, ``"multiclass"`` or ``"detection"``.
        indicators: which to compute (default: every indicator defined for ``task``).
        reference: position of the reference slice in ``metrics``' arrays, or ``None``.

    Returns:
        Indicator name -> value (NaN when undefined).

    Raises:
        ValueError: if an indicator name is unknown for ``task``.

    Example:
        >>> out = fairness_indicators(
        ...     {"tpr": [0.9, 0.6], "fpr": [0.1, 0.2], "accuracy": [0.9, 0.7], "selection_rate": [0.5, 0.4],
        ...      "ppv": [0.8, 0.7]}, task="binary", indicators=["equalized_odds_difference", "accuracy_ratio"])
        >>> {k: round(v, 4) for k, v in out.items()}
        {'equalized_odds_difference': 0.3, 'accuracy_ratio': 0.7778}
    """
    rows = {key: np.asarray(value, dtype=np.float64)[None, :] for key, value in metrics.items()}
    replicated = indicator_replicates(rows, task=task, indicators=indicators, reference=reference)
    return {name: float(values[0]) for name, values in replicated.items()}
