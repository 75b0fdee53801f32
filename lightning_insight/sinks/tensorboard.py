"""A sink that writes to TensorBoard event files (scalars, markdown tables, images, InsightBoard JSON)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tensorboard.compat.proto import summary_pb2

from lightning_insight.sinks._tb_summary import json_summary
from lightning_insight.sinks.base import ROW_FIELDS

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

_WRITER_METHODS = ("add_scalar", "add_text", "add_image", "flush", "_get_file_writer")


def format_value(value: Any) -> str:
    """Format one table cell: floats to 4 significant digits, NaN as ``undefined``, missing as empty.

    Integers (counts) are written in full.

    Args:
        value: A number, ``None`` or anything printable.

    Returns:
        The cell text.

    Example:
        >>> format_value(0.833333), format_value(float("nan")), format_value(1234567.0), format_value(12)
        ('0.8333', 'undefined', '1.235e+06', '12')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "undefined" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows_to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Render long-format rows as a wide markdown table: one row per (source, slice), one column per metric.

    Rows and metric columns keep the order of first appearance. A ``count`` column (the slice's support)
    comes first unless ``count`` is already one of the metrics.

    Args:
        rows: Long-format rows with the keys in :data:`~lightning_insight.sinks.ROW_FIELDS`.

    Returns:
        Markdown text that TensorBoard's text dashboard renders as a table.

    Example:
        >>> rows = [
        ...     {"source": "val", "slice": "weather=rainy", "metric": "accuracy", "value": 0.912345, "count": 40},
        ...     {"source": "val", "slice": "weather=rainy", "metric": "tpr", "value": float("nan"), "count": 40},
        ... ]
        >>> print(rows_to_markdown(rows))
        | source | slice | count | accuracy | tpr |
        | --- | --- | --- | --- | --- |
        | val | weather=rainy | 40 | 0.9123 | undefined |
    """
    if not rows:
        return "*(no rows)*"
    metrics: dict[str, None] = {}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        metric = str(row.get("metric", ""))
        metrics.setdefault(metric, None)
        line = cells.setdefault((str(row.get("source", "")), str(row.get("slice", ""))), {})
        line[metric] = row.get("value")
        if line.get("\0count") is None:
            line["\0count"] = row.get("count")
    with_count = "count" not in metrics
    header = ["source", "slice", *(["count"] if with_count else []), *metrics]
    lines = [
        "| " + " | ".join(_cell(name) for name in header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for (source, slice_name), line in cells.items():
        values = [line.get("\0count")] if with_count else []
        values += [line.get(metric) for metric in metrics]
        texts = [_cell(source), _cell(slice_name), *(_cell(format_value(v)) for v in values)]
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines)


class TensorBoardSink:
    """Write results to TensorBoard event files.

    ``scalars`` become scalar summaries (one tag per key); ``table`` becomes a markdown table in the
    Text dashboard (tag ``<key>/text_summary``) and an InsightBoard JSON summary under ``<key>``;
    ``image`` an image summary; ``text`` a text summary; ``json`` an InsightBoard JSON summary
    (format in :mod:`lightning_insight.sinks._tb_summary`).

    Args:
        writer_or_log_dir: A ``torch.utils.tensorboard.SummaryWriter`` (what
            ``TensorBoardLogger.experiment`` is), or a directory in which the sink opens its own
            writer on first use.
        name: The sink's name in warnings and in ``SinkGroup.disabled``.

    Raises:
        TypeError: If ``writer_or_log_dir`` is neither a path nor a SummaryWriter-like object.

    Example:
        >>> import tempfile
        >>> sink = TensorBoardSink(tempfile.mkdtemp())
        >>> sink.scalars({"insight/worst/accuracy": 0.75}, step=3)
        >>> sink.json("insight/report", {"epoch": 0, "overall": {"accuracy": 0.8}}, step=3)
        >>> sink.close()
    """

    def __init__(
        self,
        writer_or_log_dir: SummaryWriter | str | os.PathLike[str],
        *,
        name: str = "tensorboard",
    ) -> None:
        self.name = name
        self._log_dir: str | None = None
        self._writer: Any = None
        if isinstance(writer_or_log_dir, str | os.PathLike):
            self._log_dir = os.fspath(writer_or_log_dir)
        elif all(hasattr(writer_or_log_dir, attr) for attr in _WRITER_METHODS):
            self._writer = writer_or_log_dir
        else:
            raise TypeError(
                "Expected argument `writer_or_log_dir` to be a torch.utils.tensorboard.SummaryWriter or a"
                f" directory path, but got {type(writer_or_log_dir).__name__}."
                " HINT: pass `TensorBoardLogger.experiment` or a log directory."
            )

    @property
    def owns_writer(self) -> bool:
        """Whether the sink opened its writer itself (and so closes it in :meth:`close`)."""
        return self._log_dir is not None

    @property
    def writer(self) -> SummaryWriter:
        """The SummaryWriter, opened on first access when the sink was given a directory."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            assert self._log_dir is not None
            self._writer = SummaryWriter(log_dir=self._log_dir)
            log.debug("TensorBoardSink %r opened a SummaryWriter in %s", self.name, self._log_dir)
        writer: SummaryWriter = self._writer
        return writer

    def _add_summary(self, summary: summary_pb2.Summary, step: int) -> None:
        # The public add_* methods cannot set `data_class`, which the data provider needs.
        writer: Any = self.writer
        writer._get_file_writer().add_summary(summary, step)

    def scalars(self, values: Mapping[str, float], *, step: int) -> None:
        """Write one scalar summary per key."""
        writer = self.writer
        for key, value in values.items():
            writer.add_scalar(key, float(value), global_step=step)

    def table(self, key: str, rows: Sequence[Mapping[str, Any]], *, step: int) -> None:
        """Write the rows as a wide markdown table and as an InsightBoard JSON table summary."""
        writer = self.writer
        writer.add_text(key, rows_to_markdown(rows), global_step=step)
        payload = {
            "columns": list(ROW_FIELDS),
            "rows": [[row.get(field) for field in ROW_FIELDS] for row in rows],
        }
        self._add_summary(json_summary(key, payload, kind="table"), step)

    def image(self, key: str, image: np.ndarray, *, step: int) -> None:
        """Write an ``(H, W, 3)`` ``uint8`` image."""
        self.writer.add_image(key, image, global_step=step, dataformats="HWC")

    def text(self, key: str, text: str, *, step: int) -> None:
        """Write markdown text."""
        self.writer.add_text(key, text, global_step=step)

    def json(self, key: str, payload: Mapping[str, Any], *, step: int) -> None:
        """Write an InsightBoard JSON summary (NaN and infinities become ``null``)."""
        self._add_summary(json_summary(key, payload, kind="json"), step)

    def flush(self) -> None:
        """Flush the writer's pending events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush; close the writer when the sink opened it (a later call opens a new one)."""
        if self._writer is None:
            return
        if self.owns_writer:
            self._writer.close()
            self._writer = None
        else:
            self._writer.flush()

    def __repr__(self) -> str:
        target = self._log_dir if self._log_dir is not None else type(self._writer).__name__
        return f"{type(self).__name__}({target!r}, name={self.name!r})"
