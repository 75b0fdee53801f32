"""Sinks: where callbacks' results go (TensorBoard, W&B, CSV, memory), fanned out by a ``SinkGroup``.

Callbacks never call a logger API: they hand plain values to a :class:`SinkGroup`, which forwards them to
each sink on global rank 0 and keeps going when one sink fails. :func:`sinks_for_trainer` builds the default
sinks from the loggers attached to a ``Trainer``.
"""

from __future__ import annotations

from lightning_insight.sinks.base import ROW_FIELDS, Sink
from lightning_insight.sinks.csv import CSVSink
from lightning_insight.sinks.group import SinkGroup, sinks_for_trainer
from lightning_insight.sinks.memory import MemorySink
from lightning_insight.sinks.tensorboard import TensorBoardSink
from lightning_insight.sinks.wandb import WandbSink

__all__ = [
    "ROW_FIELDS",
    "CSVSink",
    "MemorySink",
    "Sink",
    "SinkGroup",
    "TensorBoardSink",
    "WandbSink",
    "sinks_for_trainer",
]
