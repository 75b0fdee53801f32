"""Sliced metrics: per-slice counts (classification) and the metrics computed from them."""

from lightning_insight.metrics.classification import (
    SliceCounts,
    SlicedConfusion,
    classification_metrics,
    slice_counts,
)

__all__ = ["SliceCounts", "SlicedConfusion", "classification_metrics", "slice_counts"]
