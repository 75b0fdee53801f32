"""The tensor summaries that InsightBoard reads: JSON in a string tensor, tagged with this plugin's name.

Both the writer (:class:`~lightning_insight.sinks.TensorBoardSink`) and the reader (the InsightBoard
TensorBoard plugin) import from here, so the format lives in one place.

Format of one summary value:

- ``metadata.plugin_data.plugin_name`` is :data:`PLUGIN_NAME`;
- ``metadata.plugin_data.content`` is a small JSON header, ``{"version": 1, "kind": "json"}`` for a
  report's ``to_dict()`` or ``{"version": 1, "kind": "table"}`` for long-format rows;
- ``metadata.data_class`` is ``DATA_CLASS_TENSOR`` (without it TensorBoard's data provider lists the
  tag but ``read_tensors`` returns nothing);
- the tensor is a scalar ``DT_STRING`` holding UTF-8 JSON. Non-finite floats are written as ``null``
  (strict JSON, which browsers parse). A ``table`` payload is
  ``{"columns": [...ROW_FIELDS], "rows": [[...], ...]}``.

Reading back through the data provider::

    datum = provider.read_tensors(...)[run][tag][-1]
    payload = decode_json_tensor(datum.numpy)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

#: The plugin name every InsightBoard summary carries; the TensorBoard plugin registers under it.
PLUGIN_NAME = "lightning_insight"

#: Version of the header in ``plugin_data.content``; bump it when the payload layout changes.
SCHEMA_VERSION = 1

#: The kinds of payload a summary may hold.
SummaryKind = Literal["json", "table"]


def json_safe(value: Any) -> Any:
    """Return ``value`` with NaN and infinities replaced by ``None`` and containers made JSON-native.

    Tuples become lists and NumPy scalars become Python scalars; mapping keys are kept as they are.

    Args:
        value: A nest of mappings, sequences, strings, numbers, bools and ``None``.

    Returns:
        An equivalent value that ``json.dumps(..., allow_nan=False)`` accepts.

    Example:
        >>> json_safe({"a": float("nan"), "b": (1, float("inf")), "c": "x"})
        {'a': None, 'b': [1, None], 'c': 'x'}
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return value


def encode_json(payload: Any) -> bytes:
    """Serialise ``payload`` to strict UTF-8 JSON, non-finite floats written as ``null``.

    Args:
        payload: A JSON-safe value (see :func:`json_safe`).

    Returns:
        The compact JSON bytes.

    Raises:
        TypeError: If ``payload`` holds a value JSON cannot represent.

    Example:
        >>> encode_json({"accuracy": float("nan"), "count": 3})
        b'{"accuracy":null,"count":3}'
    """
    text = json.dumps(json_safe(payload), allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def json_summary(tag: str, payload: Any, *, kind: SummaryKind = "json") -> summary_pb2.Summary:
    """Build the ``Summary`` proto that carries ``payload`` as JSON for InsightBoard.

    Args:
        tag: The summary tag (usually a log key such as ``insight/report``).
        payload: A JSON-safe value.
        kind: ``"json"`` for a report mapping, ``"table"`` for long-format rows.

    Returns:
        A ``Summary`` with one value, ready for ``writer._get_file_writer().add_summary(summary, step)``.

    Example:
        >>> summary = json_summary("insight/report", {"epoch": 0})
        >>> value = summary.value[0]
        >>> value.metadata.plugin_data.plugin_name, value.tensor.string_val[0]
        ('lightning_insight', b'{"epoch":0}')
    """
    content = json.dumps({"version": SCHEMA_VERSION, "kind": kind}).encode("utf-8")
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[encode_json(payload)],
    )
    return summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)]
    )


def parse_plugin_content(content: bytes) -> dict[str, Any]:
    """Read the JSON header stored in ``plugin_data.content``.

    Args:
        content: The raw bytes (``TensorTimeSeries.plugin_content`` from the data provider).

    Returns:
        The header, e.g. ``{"version": 1, "kind": "json"}``; ``{}`` for empty content.

    Example:
        >>> parse_plugin_content(b'{"version": 1, "kind": "table"}')
        {'version': 1, 'kind': 'table'}
    """
    if not content:
        return {}
    header = json.loads(content.decode("utf-8"))
    return header if isinstance(header, dict) else {}


def decode_json_tensor(value: np.ndarray | bytes | str) -> Any:
    """Decode the JSON held by one tensor datum (``TensorDatum.numpy`` from the data provider).

    Args:
        value: The scalar string array, or the bytes/str it holds.

    Returns:
        The decoded JSON value.

    Example:
        >>> decode_json_tensor(np.array(b'{"a": [1, null]}', dtype=object))
        {'a': [1, None]}
    """
    raw: Any = value.item() if isinstance(value, np.ndarray) else value
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw)
