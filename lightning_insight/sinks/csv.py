"""A sink that appends long-format result rows to a CSV file."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_insight.sinks.base import ROW_FIELDS

log = logging.getLogger(__name__)

#: The header line of every file :class:`CSVSink` writes.
CSV_HEADER = ",".join(ROW_FIELDS)


def check_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    """Check that every row is a mapping holding all of :data:`~lightning_insight.sinks.ROW_FIELDS`.

    Args:
        rows: Long-format rows.

    Raises:
        TypeError: If ``rows`` is not a sequence of mappings.
        ValueError: If a row lacks one of the fields.

    Example:
        >>> check_rows([{"epoch": 0, "step": 5, "source": "val", "dimension": "weather",
        ...              "slice": "weather=rainy", "metric": "accuracy", "value": 0.9, "count": 10}])
    """
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise TypeError(
            f"Expected argument `rows` to be a sequence of mappings, but got {type(rows).__name__}."
        )
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(
                f"Expected argument `rows` to hold mappings, but got {type(row).__name__} at index {index}."
            )
        missing = [field for field in ROW_FIELDS if field not in row]
        if missing:
            raise ValueError(
                f"Expected argument `rows` to hold the keys {list(ROW_FIELDS)}, but row {index} lacks"
                f" {missing}."
            )


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, np.generic):
        return value.item()
    return value


class CSVSink:
    """Append long-format result rows to a CSV file; every other kind of call is ignored.

    The header is exactly ``epoch,step,source,dimension,slice,metric,value,count``. Rows are buffered
    and written in :meth:`flush` with a single append, followed by ``fsync``, so a crash leaves at most
    one partial line, which the next flush cuts off (with a warning) before appending. Earlier complete
    rows are never rewritten. NaN values are written as ``nan``; a missing ``count`` as an empty field.

    The parent directory is created at the first flush. If it disappears later, :meth:`flush` raises
    ``FileNotFoundError`` instead of recreating it (a ``SinkGroup`` turns that into one warning).

    Args:
        path: The CSV file. An existing file with the same header is appended to.
        name: The sink's name in warnings and in ``SinkGroup.disabled``.

    Raises:
        TypeError: If ``path`` is not a path.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "insight" / "slices.csv"
        >>> sink = CSVSink(path)
        >>> sink.table("insight/slices", [{"epoch": 0, "step": 8, "source": "val", "dimension": "weather",
        ...     "slice": "weather=rainy", "metric": "accuracy", "value": float("nan"), "count": 0}], step=8)
        >>> sink.flush()
        >>> print(path.read_text(), end="")
        epoch,step,source,dimension,slice,metric,value,count
        0,8,val,weather,weather=rainy,accuracy,nan,0
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str = "csv") -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(
                f"Expected argument `path` to be a str or os.PathLike, but got {type(path).__name__}."
            )
        self.path = Path(path)
        self.name = name
        self._pending: list[list[Any]] = []
        self._created_parent = False

    @property
    def pending_rows(self) -> int:
        """Number of rows buffered since the last successful flush."""
        return len(self._pending)

    def scalars(self, values: Mapping[str, float], *, step: int) -> None:
        """Ignore scalars (the CSV holds table rows only)."""

    def table(self, key: str, rows: Sequence[Mapping[str, Any]], *, step: int) -> None:
        """Buffer the rows; they are written at the next :meth:`flush`."""
        check_rows(rows)
        self._pending.extend([_csv_value(row[field]) for field in ROW_FIELDS] for row in rows)

    def image(self, key: str, image: np.ndarray, *, step: int) -> None:
        """Ignore images."""

    def text(self, key: str, text: str, *, step: int) -> None:
        """Ignore text."""

    def json(self, key: str, payload: Mapping[str, Any], *, step: int) -> None:
        """Ignore JSON payloads."""

    def flush(self) -> None:
        """Append the buffered rows with one write and ``fsync``.

        Raises:
            FileNotFoundError: If the directory was removed after the first flush created it.
            ValueError: If the existing file has a different header.
        """
        if not self._pending:
            return
        if not self._created_parent:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._created_parent = True
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(self._pending)
        with open(self.path, "a+b") as handle:
            if self._repair(handle) == 0:
                handle.write((CSV_HEADER + "\n").encode("utf-8"))
            handle.write(buffer.getvalue().encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        self._pending.clear()

    def _repair(self, handle: Any) -> int:
        """Cut a partial last line off, check the header, and return the size of the file."""
        size: int = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) != b"\n":
            handle.seek(0)
            content = handle.read()
            size = content.rfind(b"\n") + 1
            log.warning(
                "%s ended in a partial line (an interrupted write); truncating it to its last complete"
                " line (%d of %d bytes kept) before appending.",
                self.path,
                size,
                len(content),
            )
            handle.truncate(size)
            if size == 0:
                return 0
        handle.seek(0)
        header = handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        if header != CSV_HEADER:
            raise ValueError(
                f"Expected the existing file {self.path} to have the header {CSV_HEADER!r}, but got"
                f" {header!r}. HINT: pass a new path to `CSVSink` or move the old file away."
            )
        handle.seek(0, os.SEEK_END)
        return size

    def close(self) -> None:
        """Write any buffered rows; the file is opened per flush, so nothing else stays open."""
        self.flush()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, name={self.name!r})"
