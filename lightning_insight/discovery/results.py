"""Results of metadata-free slice discovery: :class:`DiscoveredSlice` and :class:`SliceDiscoveryReport`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_insight.fairness.results import _from_json_number, _json_number, number_text

__all__ = ["ANNOTATION_KINDS", "DiscoveredSlice", "SliceDiscoveryReport"]

SCHEMA_VERSION = 1

#: What a reviewer can say about a slice.
ANNOTATION_KINDS: tuple[str, ...] = ("core", "spurious", "mislabel")

#: Per-slice values in :meth:`SliceDiscoveryReport.rows` (plus ``count`` and the confusion counts).
_SLICE_METRICS: tuple[str, ...] = ("error_rate", "accuracy", "lift", "mean_confidence", "score")


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveredSlice:
    """One discovered slice: a cluster of samples the model treats alike.

    Attributes:
        slice_id: Stable id: a slice keeps it across epochs while its members mostly stay.
        sample_ids: Member sample ids, most central (closest to the cluster centre) first.
        size: Number of members.
        accuracy: Fraction of members predicted as labelled.
        error_rate: ``1 - accuracy``.
        lift: ``error_rate / overall error rate`` (NaN when the overall error rate is 0).
        mean_confidence: Mean of the top softmax probability.
        confusion: Confusion counts (``tn``, ``fp``, ``fn``, ``tp`` for a binary task; ``true{t}_pred{p}``
            otherwise), given labels against predictions.
        score: The ranking score: the 95% Wilson lower bound of the error rate.
        first_seen_epoch: The epoch the slice id first appeared (``None`` outside a Trainer).
        mislabel_candidates: Members flagged as possibly mislabelled, most suspicious first.
        annotation: ``"core"``, ``"spurious"``, ``"mislabel"`` or ``None``.
    """

    slice_id: int
    sample_ids: tuple[int, ...]
    size: int
    accuracy: float
    error_rate: float
    lift: float
    mean_confidence: float
    confusion: dict[str, int]
    score: float
    first_seen_epoch: int | None = None
    mislabel_candidates: tuple[int, ...] = ()
    annotation: str | None = None

    @property
    def name(self) -> str:
        """``slice_{id}``, the name used in rows and log keys."""
        return f"slice_{self.slice_id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``)."""
        return {
            "slice_id": self.slice_id,
            "sample_ids": list(self.sample_ids),
            "size": self.size,
            "accuracy": _json_number(self.accuracy),
            "error_rate": _json_number(self.error_rate),
            "lift": _json_number(self.lift),
            "mean_confidence": _json_number(self.mean_confidence),
            "confusion": dict(self.confusion),
            "score": _json_number(self.score),
            "first_seen_epoch": self.first_seen_epoch,
            "mislabel_candidates": list(self.mislabel_candidates),
            "annotation": self.annotation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscoveredSlice:
        """Rebuild a slice from :meth:`to_dict`'s output."""
        first_seen = data.get("first_seen_epoch")
        return cls(
            slice_id=int(data["slice_id"]),
            sample_ids=tuple(int(i) for i in data["sample_ids"]),
            size=int(data["size"]),
            accuracy=_from_json_number(data.get("accuracy")),
            error_rate=_from_json_number(data.get("error_rate")),
            lift=_from_json_number(data.get("lift")),
            mean_confidence=_from_json_number(data.get("mean_confidence")),
            confusion={str(k): int(v) for k, v in data.get("confusion", {}).items()},
            score=_from_json_number(data.get("score")),
            first_seen_epoch=None if first_seen is None else int(first_seen),
            mislabel_candidates=tuple(int(i) for i in data.get("mislabel_candidates", ())),
            annotation=data.get("annotation"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceDiscoveryReport:
    """The slices found in one pass over a probe set, worst first.

    Attributes:
        slices: The slices, ranked by ``score`` (worst first; ties by slice id).
        num_samples: Probe samples clustered.
        overall_error_rate: Error rate over the probe set.
        method: Attribution method (``"gradcam"``, ...).
        layer: The layer the attributions and features come from.
        epoch: The training epoch (``None`` outside a Trainer).
        step: The global step (``None`` outside a Trainer).
        source: What was evaluated (``"val"``, ``"test"``, ``"data"``).
        schema_version: Version of :meth:`to_dict`'s layout.

    Example:
        >>> bad = DiscoveredSlice(slice_id=3, sample_ids=(7, 8), size=2, accuracy=0.0, error_rate=1.0,
        ...     lift=4.0, mean_confidence=0.9, confusion={"tn": 0, "fp": 2, "fn": 0, "tp": 0}, score=0.34)
        >>> report = SliceDiscoveryReport(slices=(bad,), num_samples=8, overall_error_rate=0.25,
        ...     method="gradcam", layer="backbone.2")
        >>> report.scalars()["insight/discovery/worst/lift"]
        4.0
    """

    slices: tuple[DiscoveredSlice, ...]
    num_samples: int
    overall_error_rate: float
    method: str
    layer: str
    epoch: int | None = None
    step: int | None = None
    source: str = "data"
    schema_version: int = field(default=SCHEMA_VERSION)

    def slice(self, slice_id: int) -> DiscoveredSlice:
        """The slice with this id.

        Raises:
            KeyError: If the report has no such slice.
        """
        for found in self.slices:
            if found.slice_id == slice_id:
                return found
        raise KeyError(
            f"Expected a slice id among {sorted(s.slice_id for s in self.slices)}, but got {slice_id!r}."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``); :meth:`from_dict` reads it back."""
        return {
            "schema_version": self.schema_version,
            "kind": "slice_discovery_report",
            "epoch": self.epoch,
            "step": self.step,
            "source": self.source,
            "num_samples": self.num_samples,
            "overall_error_rate": _json_number(self.overall_error_rate),
            "method": self.method,
            "layer": self.layer,
            "slices": [found.to_dict() for found in self.slices],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SliceDiscoveryReport:
        """Rebuild a report from :meth:`to_dict`'s output (e.g. from a checkpoint)."""
        return cls(
            slices=tuple(DiscoveredSlice.from_dict(found) for found in data["slices"]),
            num_samples=int(data["num_samples"]),
            overall_error_rate=_from_json_number(data.get("overall_error_rate")),
            method=str(data["method"]),
            layer=str(data["layer"]),
            epoch=data.get("epoch"),
            step=data.get("step"),
            source=str(data.get("source", "data")),
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
        )

    def rows(self) -> list[dict[str, Any]]:
        """Long-format rows (``epoch, step, source, dimension, slice, metric, value, count``).

        Dimension is ``"discovered"``; slice ``slice_{id}`` (``"overall"`` for the probe set's error
        rate); metrics ``count``, ``error_rate``, ``accuracy``, ``lift``, ``mean_confidence``,
        ``score``, ``mislabel_candidates`` and the confusion counts; ``count`` is the slice's size.
        """
        base = {"epoch": self.epoch, "step": self.step, "source": self.source}
        rows: list[dict[str, Any]] = [
            {
                **base,
                "dimension": "discovered",
                "slice": "overall",
                "metric": "error_rate",
                "value": self.overall_error_rate,
                "count": self.num_samples,
            }
        ]
        for found in self.slices:
            values: dict[str, float] = {"count": float(found.size)}
            values.update({metric: getattr(found, metric) for metric in _SLICE_METRICS})
            values["mislabel_candidates"] = float(len(found.mislabel_candidates))
            values.update({key: float(count) for key, count in found.confusion.items()})
            rows.extend(
                {
                    **base,
                    "dimension": "discovered",
                    "slice": found.name,
                    "metric": metric,
                    "value": value,
                    "count": found.size,
                }
                for metric, value in values.items()
            )
        return rows

    def scalars(self, prefix: str = "insight") -> dict[str, float]:
        """Headline values under ``{prefix}/discovery/...``.

        ``slice_{id}/error_rate``, ``slice_{id}/lift`` and ``slice_{id}/count`` per slice;
        ``worst/error_rate``, ``worst/lift`` and ``worst/score`` of the top-ranked slice (NaN when
        there is none); ``overall/error_rate`` and ``num_slices``.
        """
        root = f"{prefix}/discovery"
        out: dict[str, float] = {}
        for found in self.slices:
            out[f"{root}/{found.name}/error_rate"] = found.error_rate
            out[f"{root}/{found.name}/lift"] = found.lift
            out[f"{root}/{found.name}/count"] = float(found.size)
        worst = self.slices[0] if self.slices else None
        for metric in ("error_rate", "lift", "score"):
            out[f"{root}/worst/{metric}"] = (
                float("nan") if worst is None else float(getattr(worst, metric))
            )
        out[f"{root}/overall/error_rate"] = self.overall_error_rate
        out[f"{root}/num_slices"] = float(len(self.slices))
        return out

    def markdown(self, top: int | None = 10) -> str:
        """A markdown table of the ``top`` worst slices (all with ``None``)."""
        lines = [
            "| slice | size | error rate | lift | score | confidence | mislabel candidates | annotation |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        shown = self.slices if top is None else self.slices[:top]
        lines.extend(
            f"| {s.name} | {s.size} | {number_text(s.error_rate)} | {number_text(s.lift)} | {number_text(s.score)} | "
            f"{number_text(s.mean_confidence)} | {len(s.mislabel_candidates)} | {s.annotation or ''} |"
            for s in shown
        )
        return "\n".join(lines)
