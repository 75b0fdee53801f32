"""Reading predictions, targets, attributes and sample ids out of ``(outputs, batch)``.

Defaults, tried in order:

- ``outputs`` (what ``validation_step`` returns): a dict with ``preds`` (and optionally ``target``), or a
  tensor of predictions.
- ``batch``: a dict with ``target`` (if ``outputs`` has none), ``attributes`` (a dict of attribute name ->
  values) or the attribute names as top-level keys, and ``sample_id``; or a tuple ``(x, y, meta)`` whose
  ``meta`` dict holds the attributes (and ``sample_id``).

For anything else pass an ``adapter``: a callable ``(outputs, batch) -> BatchData`` (or a mapping with the
keys ``preds``, ``target``, ``attributes`` and optionally ``sample_ids``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SAMPLE_ID_KEYS = ("sample_id", "sample_ids")


@dataclass(frozen=True, slots=True)
class BatchData:
    """What a sliced metric needs from one batch.

    Attributes:
        preds: predictions (tensor or list of per-image dicts for detection).
        target: targets.
        attributes: attribute name -> one value per sample.
        sample_ids: one integer id per sample, or ``None``.
    """

    preds: Any
    target: Any
    attributes: Mapping[str, Any]
    sample_ids: Any | None = None


Adapter = Callable[[Any, Any], "BatchData | Mapping[str, Any]"]


def _keys(obj: Any) -> list[str]:
    return sorted(str(k) for k in obj) if isinstance(obj, Mapping) else []


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {_keys(obj)}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return type(obj).__name__


def _from_mapping(data: Mapping[str, Any], origin: str) -> BatchData:
    missing = [k for k in ("preds", "target", "attributes") if k not in data]
    if missing:
        raise RuntimeError(
            f"Expected the `adapter` {origin} to provide {missing}, but it gave keys {_keys(data)}."
        )
    return BatchData(
        preds=data["preds"],
        target=data["target"],
        attributes=data["attributes"],
        sample_ids=data.get("sample_ids"),
    )


def read_batch(
    outputs: Any,
    batch: Any,
    *,
    attribute_names: Sequence[str],
    adapter: Adapter | None = None,
    optional_names: Collection[str] = (),
) -> BatchData:
    """Extract :class:`BatchData` from a step's outputs and its batch.

    Args:
        outputs: what ``validation_step``/``test_step`` returned.
        batch: the batch it received.
        attribute_names: attributes the slices need (looked up as top-level batch keys when the batch
            has no ``attributes`` dict).
        adapter: a user callable for other layouts.
        optional_names: attributes that may be absent from the batch (detection: they may be per-box
            keys of the targets instead); those present are returned.

    Raises:
        RuntimeError: naming the keys that were found when something needed is missing.
        TypeError: when an adapter returns something other than BatchData or a mapping.

    Example:
        >>> data = read_batch({"preds": [0.2]}, {"target": [0], "attributes": {"weather": ["fog"]}, "sample_id": [7]},
        ...                   attribute_names=["weather"])
        >>> data.target, dict(data.attributes), data.sample_ids
        ([0], {'weather': ['fog']}, [7])
    """
    if adapter is not None:
        result = adapter(outputs, batch)
        if isinstance(result, BatchData):
            return result
        if isinstance(result, Mapping):
            return _from_mapping(result, "result")
        raise TypeError(
            f"Expected the `adapter` to return BatchData or a mapping, but got {type(result).__name__}."
        )

    meta: Mapping[str, Any] | None = None
    y: Any = None
    if isinstance(batch, Mapping):
        meta = batch
        y = batch.get("target")
    elif isinstance(batch, (tuple, list)) and len(batch) >= 3 and isinstance(batch[2], Mapping):
        meta = batch[2]
        y = batch[1]

    if isinstance(outputs, Mapping):
        if "preds" not in outputs:
            raise RuntimeError(
                f"Expected the step's outputs to hold 'preds', but found keys {_keys(outputs)}. HINT: return "
                "{'preds': ..., 'target': ...} from validation_step, or pass `adapter`."
            )
        preds = outputs["preds"]
        y = outputs.get("target", y)
    elif outputs is not None and hasattr(outputs, "shape"):
        preds = outputs
    else:
        raise RuntimeError(
            f"Expected the step's outputs to be a dict with 'preds' or a tensor of predictions, but got "
            f"{_describe(outputs)}. HINT: return {{'preds': ..., 'target': ...}} from validation_step, or pass `adapter`."
        )
    if y is None:
        raise RuntimeError(
            f"Expected a target in the outputs ('target') or the batch ('target' key or (x, y, meta)), but the "
            f"outputs are {_describe(outputs)} and the batch is {_describe(batch)}. HINT: pass `adapter`."
        )
    if meta is None:
        raise RuntimeError(
            f"Expected a batch that is a dict or an (x, y, meta) tuple carrying attributes, but got "
            f"{_describe(batch)}. HINT: pass `adapter`."
        )
    nested = meta.get("attributes")
    attributes: Mapping[str, Any] = nested if isinstance(nested, Mapping) else meta
    missing = [
        name for name in attribute_names if name not in attributes and name not in optional_names
    ]
    if missing:
        where = "batch['attributes']" if attributes is not meta else "the batch"
        raise RuntimeError(
            f"Expected attributes {missing} (needed by argument `slices`) in {where}, but found keys "
            f"{_keys(attributes)}."
        )
    sample_ids = next((meta[k] for k in _SAMPLE_ID_KEYS if k in meta), None)
    if sample_ids is None and attributes is not meta:
        sample_ids = next((attributes[k] for k in _SAMPLE_ID_KEYS if k in attributes), None)
    return BatchData(
        preds=preds,
        target=y,
        # with optional names, a nested attributes dict is passed whole so an error can list it
        attributes=dict(attributes)
        if optional_names and attributes is not meta
        else {n: attributes[n] for n in attribute_names if n in attributes},
        sample_ids=sample_ids,
    )
