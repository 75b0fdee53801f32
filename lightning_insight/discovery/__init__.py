"""Metadata-free slice discovery (AttributionScanner): who the model fails, found from what it looked at.

Layers: :mod:`~lightning_insight.discovery.attributions` (attribution maps at a layer, attribution-weighted
features, top patches), :mod:`~lightning_insight.discovery.clustering` and
:mod:`~lightning_insight.discovery.functional` (clustering, slice ids, scores, mislabels, propagation),
:mod:`~lightning_insight.discovery.mosaic`, the estimator :class:`SliceFinder` and the results
:class:`SliceDiscoveryReport` / :class:`DiscoveredSlice`. None of them imports Lightning.
"""

from __future__ import annotations

from lightning_insight.discovery.attributions import (
    LayerAttributions,
    attribution_weighted_features,
    layer_attributions,
    resolve_layer,
    top_patch,
)
from lightning_insight.discovery.clustering import Clustering, cluster_features, match_clusters
from lightning_insight.discovery.finder import SliceFinder
from lightning_insight.discovery.mosaic import attribution_mosaic
from lightning_insight.discovery.results import DiscoveredSlice, SliceDiscoveryReport

__all__ = [
    "Clustering",
    "DiscoveredSlice",
    "LayerAttributions",
    "SliceDiscoveryReport",
    "SliceFinder",
    "attribution_mosaic",
    "attribution_weighted_features",
    "cluster_features",
    "layer_attributions",
    "match_clusters",
    "resolve_layer",
    "top_patch",
]
