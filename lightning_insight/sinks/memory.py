"""A sink that keeps everything in memory, for tests and notebooks."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class MemorySink:
    """Keep every call's values in public lists.

    Values are copied on the way in, so later changes by the caller do not alter what was recorded.

    Args:
        name: The sink's name in warnings and in ``SinkGroup.disabled``.

    Attributes:
        scalars_log: ``(step, {key: value})`` per ``scalars`` call.
        tables: ``(step, key, rows)`` per ``table`` call (rows as a list of dicts).
        images: ``(step, key, image)`` per ``image`` call.
        texts: ``(step, key, text)`` per ``text`` call.
        jsons: ``(step, key, payload)`` per ``json`` call.
        flushes: Number of ``flush`` calls.
        closes: Number of ``close`` calls.

    Example:
        >>> sink = MemorySink()
        >>> sink.scalars({"insight/worst/accuracy": 0.7}, step=1)
        >>> sink.scalars({"insight/worst/accuracy": 0.8, "insight/gap/weather/accuracy_ratio": 0.9}, step=2)
        >>> sink.last_scalars()["insight/worst/accuracy"], sorted(sink.scalar_keys())
        (0.8, ['insight/gap/weather/accuracy_ratio', 'insight/worst/accuracy'])
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.scalars_log: list[tuple[int, dict[str, float]]] = []
        self.tables: list[tuple[int, str, list[dict[str, Any]]]] = []
        self.images: list[tuple[int, str, np.ndarray]] = []
        self.texts: list[tuple[int, str, str]] = []
        self.jsons: list[tuple[int, str, dict[str, Any]]] = []
        self.flushes = 0
        self.closes = 0

    def scalars(self, values: Mapping[str, float], *, step: int) -> None:
        """Record the scalars as floats."""
        self.scalars_log.append((step, {key: float(value) for key, value in values.items()}))

    def table(self, key: str, rows: Sequence[Mapping[str, Any]], *, step: int) -> None:
        """Record a copy of the rows."""
        self.tables.append((step, key, [dict(row) for row in rows]))

    def image(self, key: str, image: np.ndarray, *, step: int) -> None:
        """Record a copy of the image."""
        self.images.append((step, key, np.array(image, copy=True)))

    def text(self, key: str, text: str, *, step: int) -> None:
        """Record the text."""
        self.texts.append((step, key, text))

    def json(self, key: str, payload: Mapping[str, Any], *, step: int) -> None:
        """Record a deep copy of the payload."""
        self.jsons.append((step, key, copy.deepcopy(dict(payload))))

    def flush(self) -> None:
        """Count the flush."""
        self.flushes += 1

    def close(self) -> None:
        """Count the close; the recorded values stay."""
        self.closes += 1

    def scalar_keys(self) -> set[str]:
        """Every scalar key recorded so far."""
        return {key for _, values in self.scalars_log for key in values}

    def last_scalars(self) -> dict[str, float]:
        """Scalars merged over all steps in call order, a later value replacing an earlier one."""
        merged: dict[str, float] = {}
        for _, values in self.scalars_log:
            merged.update(values)
        return merged

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
