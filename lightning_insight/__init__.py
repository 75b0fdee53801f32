"""lightning_insight: PyTorch Lightning callbacks that show, while a model trains, who it fails and why.

Public names are imported lazily so that ``import lightning_insight`` stays cheap and the functional
layer can be used without importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Alert": "lightning_insight.fairness.results",
    "AlertRule": "lightning_insight.fairness.alerts",
    "AttributionComparer": "lightning_insight.comparison.comparer",
    "AttributionComparisonMonitor": "lightning_insight.comparison.callback",
    "AttributionComparisonReport": "lightning_insight.comparison.results",
    "BatchData": "lightning_insight.batch",
    "CSVSink": "lightning_insight.sinks",
    "FairnessAlertWarning": "lightning_insight.fairness.callback",
    "FairnessMonitor": "lightning_insight.fairness.callback",
    "FailureModeMiner": "lightning_insight.failure_modes.miner",
    "FailureModeMonitor": "lightning_insight.failure_modes.callback",
    "FailureModeReport": "lightning_insight.failure_modes.results",
    "MemorySink": "lightning_insight.sinks",
    "SinkGroup": "lightning_insight.sinks",
    "SliceDiscoveryMonitor": "lightning_insight.discovery.callback",
    "SliceDiscoveryReport": "lightning_insight.discovery.results",
    "SliceFinder": "lightning_insight.discovery.finder",
    "SliceReport": "lightning_insight.fairness.results",
    "SpuriousSliceMitigation": "lightning_insight.discovery.mitigation",
    "SlicedConfusion": "lightning_insight.metrics.classification",
    "SlicedDetection": "lightning_insight.metrics.detection",
    "TensorBoardSink": "lightning_insight.sinks",
    "WandbSink": "lightning_insight.sinks",
    "fairness_indicators": "lightning_insight.fairness.indicators",
    "make_robust_extractor": "lightning_insight.failure_modes.robust",
    "parse_alert_rule": "lightning_insight.fairness.alerts",
    "slice_metrics": "lightning_insight.fairness.functional",
}

__all__ = [
    "Alert",
    "AlertRule",
    "AttributionComparer",
    "AttributionComparisonMonitor",
    "AttributionComparisonReport",
    "BatchData",
    "CSVSink",
    "FailureModeMiner",
    "FailureModeMonitor",
    "FailureModeReport",
    "FairnessAlertWarning",
    "FairnessMonitor",
    "MemorySink",
    "SinkGroup",
    "SliceDiscoveryMonitor",
    "SliceDiscoveryReport",
    "SliceFinder",
    "SliceReport",
    "SlicedConfusion",
    "SlicedDetection",
    "SpuriousSliceMitigation",
    "TensorBoardSink",
    "WandbSink",
    "fairness_indicators",
    "make_robust_extractor",
    "parse_alert_rule",
    "slice_metrics",
]

if TYPE_CHECKING:
    from lightning_insight.batch import BatchData
    from lightning_insight.comparison.callback import AttributionComparisonMonitor
    from lightning_insight.comparison.comparer import AttributionComparer
    from lightning_insight.comparison.results import AttributionComparisonReport
    from lightning_insight.discovery.callback import SliceDiscoveryMonitor
    from lightning_insight.discovery.finder import SliceFinder
    from lightning_insight.discovery.mitigation import SpuriousSliceMitigation
    from lightning_insight.discovery.results import SliceDiscoveryReport
    from lightning_insight.failure_modes.callback import FailureModeMonitor
    from lightning_insight.failure_modes.miner import FailureModeMiner
    from lightning_insight.failure_modes.results import FailureModeReport
    from lightning_insight.failure_modes.robust import make_robust_extractor
    from lightning_insight.fairness.alerts import AlertRule, parse_alert_rule
    from lightning_insight.fairness.callback import FairnessAlertWarning, FairnessMonitor
    from lightning_insight.fairness.functional import slice_metrics
    from lightning_insight.fairness.indicators import fairness_indicators
    from lightning_insight.fairness.results import Alert, SliceReport
    from lightning_insight.metrics.classification import SlicedConfusion
    from lightning_insight.metrics.detection import SlicedDetection
    from lightning_insight.sinks import CSVSink, MemorySink, SinkGroup, TensorBoardSink, WandbSink


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightning_insight' has no attribute {name!r}")
