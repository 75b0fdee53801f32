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


def _gap(values: np.ndarray, kind: str, reference: float | None) -> float:
    defined = values[~np.isnan(values)]
    if kind == "min":
        return float(defined.min()) if defined.size else float("nan")
    if reference is not None:
        if np.isnan(reference) or defined.size == 0:
            return float("nan")
        if kind == "difference":
            return float(np.abs(defined - reference).max())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.minimum(defined / reference, reference / defined)
        ratios = np.where((defined == 0) & (reference == 0), 1.0, ratios)
        return float(np.nanmin(ratios)) if not np.all(np.isnan(ratios)) else float("nan")
    if defined.size < 2:
        return float("nan")
    high, low = float(defined.max()), float(defined.min())
    if kind == "difference":
        return high - low
    if high == 0:
        return float("nan")
    return low / high


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
    table = _table(task)
    names = list(table) if indicators is None else list(indicators)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(
            f"Expected argument `indicators` to name indicators of task={task!r} from {list(table)}, "
            f"but got unknown {unknown}."
        )
    out: dict[str, float] = {}
    for name in names:
        metric, kind = table[name]
        parts = metric.split("+")
        gaps = []
        for part in parts:
            values = np.asarray(metrics[part], dtype=np.float64)
            ref = None if reference is None else float(values[reference])
            gaps.append(_gap(values, kind, ref))
        if len(gaps) == 1:
            out[name] = gaps[0]
        elif any(np.isnan(gaps)):
            out[name] = float("nan")
        else:
            out[name] = max(gaps) if kind == "difference" else min(gaps)
    return out
