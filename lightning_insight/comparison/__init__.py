"""Attribution comparison: where two models' evidence differs, by clusters of similar image regions."""

from __future__ import annotations

from lightning_insight.comparison.comparer import (
    AttributionComparer,
    cell_boxes,
    cell_masses,
    default_num_clusters,
)
from lightning_insight.comparison.results import (
    AttributionComparisonReport,
    ComparisonCluster,
    Exemplar,
)

__all__ = [
    "AttributionComparer",
    "AttributionComparisonReport",
    "ComparisonCluster",
    "Exemplar",
    "cell_boxes",
    "cell_masses",
    "default_num_clusters",
]
