"""YOLOX for lightning_insight's detection case study (``examples/yolox``).

:class:`YOLOXDetector` is a LightningModule around the YOLOX network of the ``yolox`` package
(pixeltable-yolox), trained from scratch on ``lightning_insight.datasets.BDDDataModule`` batches.
:mod:`insight_yolox.nms` holds the pure-torch NMS that stands in for torchvision's.
"""

from __future__ import annotations

from insight_yolox.detector import YOLOXDetector
from insight_yolox.nms import batched_nms, box_iou, nms

__all__ = ["YOLOXDetector", "batched_nms", "box_iou", "nms"]
