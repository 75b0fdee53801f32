"""The Sink protocol: where callbacks' results go.

Callbacks never call a logger API. They hand results to a :class:`~lightning_insight.sinks.SinkGroup`,
which forwards each call to every sink it holds. A sink receives plain Python values only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Columns of a long-format results row, in the order the CSV file writes them.
ROW_FIELDS: tuple[str, ...] = (
    "epoch",
    "step",
    "source",
    "dimension",
    "slice",
    "metric",
    "value",
    "count",
)


@runtime_checkable
class Sink(Protocol):
    """A destination for results.

    Every method receives the global step the values belong to (Lightning's ``trainer.global_step``
    as seen at validation epoch end), so sinks' points line up with Lightning's own scalars.
    ``flush`` is called once after all the calls that belong to one emission (one validation epoch of
    one callback): a sink that batches (W&B writes one history row per call) writes there.
    """

    name: str

    def scalars(self, values: Mapping[str, float], *, step: int) -> None:
        """Record scalar values keyed by their full log key (``insight/slice/weather/rainy/accuracy``)."""

    def table(self, key: str, rows: Sequence[Mapping[str, Any]], *, step: int) -> None:
        """Record long-format rows; each row has the keys in :data:`ROW_FIELDS`."""

    def image(self, key: str, image: np.ndarray, *, step: int) -> None:
        """Record an RGB image, ``uint8`` array of shape ``(H, W, 3)``."""

    def text(self, key: str, text: str, *, step: int) -> None:
        """Record markdown text."""

    def json(self, key: str, payload: Mapping[str, Any], *, step: int) -> None:
        """Record a JSON-safe mapping (a report's ``to_dict()``); InsightBoard reads these."""

    def flush(self) -> None:
        """Make everything recorded so far durable."""

    def close(self) -> None:
        """Release files and handles; later calls may reopen them."""
