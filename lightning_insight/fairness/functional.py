"""Sliced metrics and fairness indicators without a Trainer: :func:`slice_metrics`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_insight.fairness.indicators import (
    fairness_indicators,
    indicator_names,
    indicator_replicates,
)
from lightning_insight.fairness.results import SliceReport, slice_value
from lightning_insight.metrics.bootstrap import percentile_interval
from lightning_insight.metrics.classification import (
    TASKS,
    SliceCounts,
    SlicedConfusion,
    classification_metrics,
    slice_counts,
)
from lightning_insight.metrics.classification import metric_names as classification_metric_names
from lightning_insight.metrics.detection import (
    DETECTION_METRICS,
    DetectionSliceStats,
    detection_slice_stats,
)
from lightning_insight.slicing.spec import SliceSpec, parse_slice_specs

Reference = Mapping[str, str] | None
#: Every task :func:`slice_metrics` and FairnessMonitor take.
ALL_TASKS = (*TASKS, "detection")


def check_task(task: object) -> str:
    """Raise unless ``task`` is one of :data:`ALL_TASKS`.

    Raises:
        ValueError: naming the argument, the tasks and the value got.
    """
    if task not in ALL_TASKS:
        raise ValueError(
            f"Expected argument `task` to be one of {list(ALL_TASKS)}, but got {task!r}."
        )
    return str(task)


def metric_names(task: str, num_classes: int | None = None) -> tuple[str, ...]:
    """Names of the per-slice metrics of ``task``."""
    if task == "detection":
        return DETECTION_METRICS
    return classification_metric_names(task, num_classes)


def check_metrics(
    metrics: Sequence[str] | None, task: str, num_classes: int | None = None
) -> tuple[str, ...] | None:
    """Validate a ``metrics`` selection against ``task``'s names.

    Raises:
        ValueError: listing the known names when one is unknown.
    """
    if metrics is None:
        return None
    known = metric_names(task, num_classes)
    unknown = [
        m
        for m in metrics
        if m not in known and not (task == "multiclass" and m.startswith("recall["))
    ]
    if unknown:
        raise ValueError(
            f"Expected argument `metrics` to name metrics of task={task!r} from {list(known)}, but got unknown {unknown}."
        )
    return tuple(dict.fromkeys([*metrics, "count"]))


def check_indicators(indicators: Sequence[str] | None, task: str) -> tuple[str, ...]:
    """Validate an ``indicators`` selection against ``task``'s names (all when ``None``).

    Raises:
        ValueError: listing the known names when one is unknown.
    """
    known = indicator_names(task)
    if indicators is None:
        return known
    unknown = [i for i in indicators if i not in known]
    if unknown:
        raise ValueError(
            f"Expected argument `indicators` to name indicators of task={task!r} from {list(known)}, "
            f"but got unknown {unknown}."
        )
    return tuple(indicators)


def check_positive_int(name: str, value: object) -> None:
    """Raise unless ``value`` is an int >= 1 (bools are refused).

    Raises:
        ValueError: naming the argument and the value got.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected argument `{name}` to be an int >= 1, but got {value!r}.")


def check_threshold(threshold: object) -> None:
    """Raise unless ``threshold`` is a number in [0, 1].

    Raises:
        ValueError: naming the argument and the value got.
    """
    if (
        not isinstance(threshold, (int, float))
        or isinstance(threshold, bool)
        or not 0.0 <= threshold <= 1.0
    ):
        raise ValueError(
            f"Expected argument `threshold` to be a float in [0, 1], but got {threshold!r}."
        )


def _reference_slice(dimension: str, names: Sequence[str], wanted: str) -> str | None:
    for name in names:
        if wanted in (name, slice_value(name)):
            return name
    return None


def report_from_counts(
    counts: SliceCounts,
    *,
    metrics: Sequence[str] | None = None,
    indicators: Sequence[str] | None = None,
    min_support: int = 1,
    reference: Reference = None,
    epoch: int | None = None,
    step: int | None = None,
    source: str = "data",
    confidence: float = 0.95,
) -> SliceReport:
    """Turn per-slice counts into a :class:`SliceReport` with indicators over eligible slices.

    When ``counts`` carries bootstrap replicates, every metric and indicator also gets its
    ``confidence`` percentile interval (``<name>_low``, ``<name>_high``).
    """
    overall_all = classification_metrics(
        counts.overall, task=counts.task, num_classes=counts.num_classes
    )
    replicates: _Replicates | None = None
    if counts.overall_replicates is not None and counts.replicates is not None:
        replicates = _Replicates(
            overall=classification_metrics(
                counts.overall_replicates, task=counts.task, num_classes=counts.num_classes
            ),
            dimensions={
                dimension: _per_replicate(weighted, counts.task, counts.num_classes)
                for dimension, weighted in counts.replicates.items()
            },
            confidence=confidence,
        )
    dimensions = {
        dimension: (
            names,
            classification_metrics(
                dimension_counts, task=counts.task, num_classes=counts.num_classes
            ),
        )
        for dimension, (names, dimension_counts) in counts.dimensions.items()
    }
    return _report(
        counts.task,
        {k: float(v[0]) for k, v in overall_all.items()},
        dimensions,
        {},
        metrics=check_metrics(metrics, counts.task, counts.num_classes),
        indicators=check_indicators(indicators, counts.task),
        min_support=min_support,
        reference=reference,
        epoch=epoch,
        step=step,
        source=source,
        replicates=replicates,
    )


@dataclass(frozen=True, slots=True)
class _Replicates:
    """Metric values per bootstrap replicate: overall ``(B,)`` and per dimension ``(B, S)``."""

    overall: Mapping[str, np.ndarray]
    dimensions: Mapping[str, Mapping[str, np.ndarray]]
    confidence: float


def _per_replicate(
    weighted: np.ndarray, task: str, num_classes: int | None
) -> dict[str, np.ndarray]:
    """Metrics of ``(B, S, num_cells)`` replicate counts, each ``(B, S)``."""
    replicates, slices, cells = weighted.shape
    flat = classification_metrics(
        weighted.reshape(replicates * slices, cells), task=task, num_classes=num_classes
    )
    return {name: values.reshape(replicates, slices) for name, values in flat.items()}


def _with_intervals(
    values: dict[str, float], replicates: Mapping[str, np.ndarray], confidence: float
) -> dict[str, float]:
    """``values`` plus ``<name>_low``/``<name>_high`` for each of them that has replicates."""
    out = dict(values)
    for name in values:
        if name == "count" or name not in replicates:
            continue
        low, high = percentile_interval(np.asarray(replicates[name]), confidence)
        out[f"{name}_low"], out[f"{name}_high"] = float(low), float(high)
    return out


def report_from_detection(
    stats: DetectionSliceStats,
    *,
    metrics: Sequence[str] | None = None,
    indicators: Sequence[str] | None = None,
    min_support: int = 1,
    reference: Reference = None,
    epoch: int | None = None,
    step: int | None = None,
    source: str = "data",
    confidence: float = 0.95,
) -> SliceReport:
    """Turn per-slice detection metrics into a :class:`SliceReport`.

    ``min_support`` applies to images (``count``) in image-level dimensions and to boxes (``objects``)
    in dimensions with an object-level attribute. With bootstrap replicates in ``stats``, the
    replicated metrics (map, map_50, map_75, mar_100, recall_50) and the indicators get
    ``confidence`` percentile intervals.
    """
    replicates = (
        None
        if stats.overall_replicates is None or stats.replicates is None
        else _Replicates(
            overall=stats.overall_replicates, dimensions=stats.replicates, confidence=confidence
        )
    )
    return _report(
        "detection",
        dict(stats.overall),
        stats.dimensions,
        stats.support,
        metrics=check_metrics(metrics, "detection"),
        indicators=check_indicators(indicators, "detection"),
        min_support=min_support,
        reference=reference,
        epoch=epoch,
        step=step,
        source=source,
        replicates=replicates,
    )


def _report(
    task: str,
    overall: dict[str, float],
    dimensions: Mapping[str, tuple[Sequence[str], Mapping[str, np.ndarray]]],
    support_metric: Mapping[str, str],
    *,
    metrics: tuple[str, ...] | None,
    indicators: tuple[str, ...],
    min_support: int,
    reference: Reference,
    epoch: int | None,
    step: int | None,
    source: str,
    replicates: _Replicates | None = None,
) -> SliceReport:
    """The report of per-slice metric values: exclusions under ``min_support``, then indicators."""

    def select(values: dict[str, float]) -> dict[str, float]:
        return values if metrics is None else {k: v for k, v in values.items() if k in metrics}

    slices: dict[str, dict[str, float]] = {}
    names_of: dict[str, tuple[str, ...]] = {}
    table: dict[str, dict[str, float]] = {}
    excluded: dict[str, str] = {}
    references: dict[str, str] = {}
    indicator_values: dict[str, dict[str, tuple[float, ...]]] = {}
    for dimension, (names, values) in dimensions.items():
        names_of[dimension] = tuple(names)
        by = support_metric.get(dimension, "count")
        support = values[by]
        dimension_replicates = None if replicates is None else replicates.dimensions[dimension]
        bounds = (
            {}
            if replicates is None or dimension_replicates is None
            else {
                k: percentile_interval(v, replicates.confidence)
                for k, v in dimension_replicates.items()
                if k != "count"
            }
        )
        for i, name in enumerate(names):
            slices[name] = select({k: float(v[i]) for k, v in values.items()})
            if replicates is not None:
                for metric in list(slices[name]):
                    if metric in bounds:
                        low, high = bounds[metric]
                        slices[name][f"{metric}_low"] = float(low[i])
                        slices[name][f"{metric}_high"] = float(high[i])
            if support[i] < min_support:
                unit = "objects" if by == "objects" else "count"
                excluded[name] = f"{unit} {int(support[i])} < min_support {min_support}"
        keep = [i for i, n in enumerate(names) if n not in excluded]
        position = None
        if reference and dimension in reference:
            ref_name = _reference_slice(dimension, names, reference[dimension])
            if ref_name is not None and ref_name not in excluded:
                references[dimension] = ref_name
                position = keep.index(list(names).index(ref_name))
            else:
                table[dimension] = {name: float("nan") for name in indicators}
                if replicates is not None:
                    table[dimension] |= {
                        f"{name}_{end}": float("nan")
                        for name in indicators
                        for end in ("low", "high")
                    }
                continue
        kept = {k: np.asarray(v)[keep] for k, v in values.items()}
        table[dimension] = fairness_indicators(
            kept, task=task, indicators=indicators, reference=position
        )
        if replicates is not None and dimension_replicates is not None:
            replicated = indicator_replicates(
                {k: v[:, keep] for k, v in dimension_replicates.items()},
                task=task,
                indicators=indicators,
                reference=position,
            )
            table[dimension] = _with_intervals(table[dimension], replicated, replicates.confidence)
            indicator_values[dimension] = {
                k: tuple(float(x) for x in v) for k, v in replicated.items()
            }
    overall_values = select(overall)
    if replicates is not None:
        overall_values = _with_intervals(overall_values, replicates.overall, replicates.confidence)
    return SliceReport(
        task=task,
        overall=overall_values,
        slices=slices,
        dimensions=names_of,
        indicators=table,
        excluded=excluded,
        epoch=epoch,
        step=step,
        source=source,
        reference=references,
        bootstrap=0
        if replicates is None
        else int(next(iter(replicates.overall.values())).shape[0]),
        confidence=None if replicates is None else replicates.confidence,
        indicator_replicates=indicator_values,
    )


def check_reference(reference: Reference, specs: Sequence[SliceSpec]) -> Reference:
    """Validate ``reference``: a mapping of dimension name -> reference slice (name or value).

    Raises:
        TypeError: if it is not a mapping of strings.
        ValueError: if it names a dimension not in ``slices``.
    """
    if reference is None:
        return None
    if not isinstance(reference, Mapping) or not all(
        isinstance(v, str) for v in reference.values()
    ):
        raise TypeError(
            f"Expected argument `reference` to map dimension -> slice, e.g. {{'weather': 'clear'}}, but got {reference!r}."
        )
    names = [s.name for s in specs]
    unknown = [d for d in reference if d not in names]
    if unknown:
        raise ValueError(
            f"Expected argument `reference` to use dimensions from `slices` {names}, but got {unknown}."
        )
    return dict(reference)


def slice_metrics(
    preds: Any,
    target: Any,
    attributes: Mapping[str, Any],
    *,
    task: str,
    slices: Sequence[str] | str,
    metrics: Sequence[str] | None = None,
    indicators: Sequence[str] | None = None,
    threshold: float = 0.5,
    num_classes: int | None = None,
    min_support: int = 1,
    reference: Reference = None,
    max_slices: int = 1000,
    bootstrap: int = 0,
    confidence: float = 0.95,
    sample_ids: Any = None,
    seed: int = 0,
) -> SliceReport:
    """Metrics per slice and fairness indicators per dimension, in one call.

    Args:
        preds: ``task="binary"``: probabilities ``(N,)`` or hard labels; ``"multiclass"``: scores
            ``(N, C)`` or labels ``(N,)``; ``"detection"``: one dict per image with ``boxes`` (xyxy),
            ``scores`` and ``labels`` (torchmetrics' format).
        target: labels ``(N,)``; for detection one dict per image with ``boxes``, ``labels``, optionally
            ``iscrowd`` and per-box attributes (``occluded``: one value per box).
        attributes: attribute name -> ``N`` values (strings, ints, bools; numbers for binned specs);
            for detection one value per image.
        task: ``"binary"``, ``"multiclass"`` or ``"detection"``.
        slices: dimension specs: ``"weather"``, ``"weather&timeofday"``, ``"age:0,18,65,inf"``.
        metrics: metric names to report (default all of the task's); ``count`` is always kept.
        indicators: indicator names (default all of the task's).
        threshold: probability at or above which a binary prediction is positive.
        num_classes: number of classes (multiclass labels; detection labels must lie in
            ``[0, num_classes)``).
        min_support: slices with fewer samples (detection: images, or boxes in dimensions with a
            per-box attribute) are reported but left out of indicators.
        reference: dimension -> reference slice; indicators then measure distance to it.
        max_slices: the most distinct values one categorical attribute may take.
        bootstrap: ``B`` Poisson bootstrap replicates (0: none); every metric and indicator then gets
            ``<name>_low``/``<name>_high``, its ``confidence`` percentile interval (detection: a
            bootstrap over images of map, map_50, map_75, mar_100 and recall_50).
        confidence: the intervals' level, in ``(0, 1)``.
        sample_ids: one integer id per sample, which seeds its replicate weights (default: positions
            ``0..N-1``); the same ids give the same intervals in any batching or process count.
        seed: seed of the bootstrap.

    Returns:
        A :class:`SliceReport`.

    Raises:
        ValueError: unknown task, metric or indicator; shapes; NaN; out-of-range values.

    Example:
        >>> report = slice_metrics([0.9, 0.2, 0.8, 0.4], [1, 0, 0, 1], {"weather": ["sun", "sun", "rain", "rain"]},
        ...                        task="binary", slices=["weather"])
        >>> report.slices["weather=sun"]["accuracy"], report.slices["weather=rain"]["accuracy"]
        (1.0, 0.0)
        >>> report.indicators["weather"]["accuracy_difference"]
        1.0
    """
    check_task(task)
    specs = parse_slice_specs(list(slices) if not isinstance(slices, str) else slices)
    check_metrics(metrics, task, num_classes)
    chosen = check_indicators(indicators, task)
    check_positive_int("min_support", min_support)
    check_positive_int("max_slices", max_slices)
    check_threshold(threshold)
    reference = check_reference(reference, specs)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"Expected argument `bootstrap` to be an int >= 0, but got {bootstrap!r}.")
    check_confidence(confidence)
    if task == "detection":
        stats = detection_slice_stats(
            preds,
            target,
            attributes,
            specs=specs,
            num_classes=num_classes,
            max_slices=max_slices,
            bootstrap=bootstrap,
            seed=seed,
            sample_ids=sample_ids,
        )
        return report_from_detection(
            stats,
            metrics=metrics,
            indicators=chosen,
            min_support=min_support,
            reference=reference,
            confidence=confidence,
        )
    if bootstrap:
        metric = SlicedConfusion(
            task=task,
            specs=specs,
            threshold=threshold,
            num_classes=num_classes,
            max_slices=max_slices,
            bootstrap=bootstrap,
            seed=seed,
        )
        count = len(target)
        ids = np.arange(count) if sample_ids is None else sample_ids
        metric.update(preds, target, attributes, ids)
        counts = metric.compute()
    else:
        counts = slice_counts(
            preds,
            target,
            attributes,
            task=task,
            specs=specs,
            threshold=threshold,
            num_classes=num_classes,
            max_slices=max_slices,
        )
    return report_from_counts(
        counts,
        metrics=metrics,
        indicators=chosen,
        min_support=min_support,
        reference=reference,
        confidence=confidence,
    )


def check_confidence(confidence: object) -> None:
    """Raise unless ``confidence`` is a float in ``(0, 1)``.

    Raises:
        ValueError: naming the argument and the value got.
    """
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0.0 < confidence < 1.0
    ):
        raise ValueError(
            f"Expected argument `confidence` to be a float in (0, 1), but got {confidence!r}."
        )
