"""Results of an attribution comparison: :class:`ComparisonCluster` and :class:`AttributionComparisonReport`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning_insight.fairness.results import _from_json_number, _json_number

__all__ = ["SCHEMA_VERSION", "AttributionComparisonReport", "ComparisonCluster", "Exemplar"]

SCHEMA_VERSION = 1

#: ``(sample_id, (x0, y0, x1, y1))``: a region of one probe image, in input pixels (end exclusive).
Exemplar = tuple[int, tuple[int, int, int, int]]

#: Per-cluster values in :meth:`AttributionComparisonReport.rows` and ``scalars``.
_CLUSTER_METRICS: tuple[str, ...] = (
    "difference",
    "lower",
    "upper",
    "effect_size",
    "attribution_a",
    "attribution_b",
    "accuracy_a",
    "accuracy_b",
    "regions",
    "images",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonCluster:
    """A cluster of image regions that look alike to the shared extractor, and how A and B attribute them.

    Attributes:
        cluster_id: Rank of the cluster: 0 has the largest ``|difference| x regions``.
        regions: Number of regions in the cluster (its support).
        images: Number of distinct probe images the regions come from.
        attribution_a: Mean share of model A's attribution (per image, summing to 1) that falls in a region.
        attribution_b: The same for model B.
        difference: ``attribution_b - attribution_a``: positive where B relies on these regions more than A.
        lower: Lower end of the 95% percentile bootstrap interval of ``difference`` (images resampled).
        upper: Upper end of that interval.
        effect_size: Standardised mean difference of the paired per-region differences (mean over
            standard deviation; 0 when every difference is 0, NaN for a single region).
        accuracy_a: Model A's accuracy on the contributing images.
        accuracy_b: Model B's accuracy on the contributing images.
        exemplars: Every region of the cluster as ``(sample_id, (x0, y0, x1, y1))``, the region whose
            difference lies furthest in the cluster's direction first.
    """

    cluster_id: int
    regions: int
    images: int
    attribution_a: float
    attribution_b: float
    difference: float
    lower: float
    upper: float
    effect_size: float
    accuracy_a: float
    accuracy_b: float
    exemplars: tuple[Exemplar, ...]

    @property
    def interval(self) -> tuple[float, float]:
        """``(lower, upper)``: the 95% bootstrap interval of ``difference``."""
        return (self.lower, self.upper)

    @property
    def support(self) -> tuple[int, int]:
        """``(regions, images)``."""
        return (self.regions, self.images)

    @property
    def name(self) -> str:
        """``cluster_{id}``, the name used in rows and log keys."""
        return f"cluster_{self.cluster_id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``)."""
        return {
            "cluster_id": self.cluster_id,
            "regions": self.regions,
            "images": self.images,
            "attribution_a": _json_number(self.attribution_a),
            "attribution_b": _json_number(self.attribution_b),
            "difference": _json_number(self.difference),
            "lower": _json_number(self.lower),
            "upper": _json_number(self.upper),
            "effect_size": _json_number(self.effect_size),
            "accuracy_a": _json_number(self.accuracy_a),
            "accuracy_b": _json_number(self.accuracy_b),
            "exemplars": [[sample_id, list(box)] for sample_id, box in self.exemplars],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparisonCluster:
        """Rebuild a cluster from :meth:`to_dict`'s output."""
        return cls(
            cluster_id=int(data["cluster_id"]),
            regions=int(data["regions"]),
            images=int(data["images"]),
            attribution_a=_from_json_number(data["attribution_a"]),
            attribution_b=_from_json_number(data["attribution_b"]),
            difference=_from_json_number(data["difference"]),
            lower=_from_json_number(data["lower"]),
            upper=_from_json_number(data["upper"]),
            effect_size=_from_json_number(data["effect_size"]),
            accuracy_a=_from_json_number(data["accuracy_a"]),
            accuracy_b=_from_json_number(data["accuracy_b"]),
            exemplars=tuple(
                (int(sample_id), _box(box)) for sample_id, box in data.get("exemplars", ())
            ),
        )


def _box(values: Any) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(value) for value in values)
    return (x0, y0, x1, y1)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributionComparisonReport:
    """Where two models' attributions differ, by clusters of similar image regions.

    Attributes:
        layer_a: Model A's layer (its feature map also embeds the regions).
        layer_b: Model B's layer.
        method: The attribution method.
        target: ``"label"`` or ``"predicted"`` (model A's prediction), the class both models attribute.
        grid: Regions are the cells of a ``grid x grid`` partition of the input.
        top_regions: Cells kept per image by each model's attribution mass.
        input_size: ``(H, W)`` of the inputs.
        num_samples: Probe images.
        num_regions: Regions clustered.
        accuracy_a: Model A's accuracy on the probe set.
        accuracy_b: Model B's accuracy on the probe set.
        random_state: Seed of the probe set, the clustering and the bootstrap.
        bootstrap: Bootstrap resamples per cluster.
        clusters: The clusters, ranked by ``|difference| x regions`` (largest first).
        epoch: Training epoch, when computed inside a Trainer.
        step: Global step, when computed inside a Trainer.
        source: Where the probe images came from (``"val"``), when known.
        reference: How model A was chosen inside a Trainer (``"module"``, a checkpoint path,
            ``"epoch:N"`` or ``"best"``), when known.
        reference_epoch: The training epoch model A was taken at, when known.
    """

    layer_a: str
    layer_b: str
    method: str
    target: str
    grid: int
    top_regions: int
    input_size: tuple[int, int]
    num_samples: int
    num_regions: int
    accuracy_a: float
    accuracy_b: float
    random_state: int
    bootstrap: int
    clusters: tuple[ComparisonCluster, ...]
    epoch: int | None = None
    step: int | None = None
    source: str | None = None
    reference: str | None = None
    reference_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with ``schema_version`` (NaN becomes ``None``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "layer_a": self.layer_a,
            "layer_b": self.layer_b,
            "method": self.method,
            "target": self.target,
            "grid": self.grid,
            "top_regions": self.top_regions,
            "input_size": list(self.input_size),
            "num_samples": self.num_samples,
            "num_regions": self.num_regions,
            "accuracy_a": _json_number(self.accuracy_a),
            "accuracy_b": _json_number(self.accuracy_b),
            "random_state": self.random_state,
            "bootstrap": self.bootstrap,
            "clusters": [cluster.to_dict() for cluster in self.clusters],
            "epoch": self.epoch,
            "step": self.step,
            "source": self.source,
            "reference": self.reference,
            "reference_epoch": self.reference_epoch,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributionComparisonReport:
        """Rebuild a report from :meth:`to_dict`'s output.

        Raises:
            ValueError: If ``schema_version`` is newer than this version reads.
        """
        version = data.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"Expected `schema_version` <= {SCHEMA_VERSION}, but got {version!r}. HINT: upgrade "
                "lightning_insight to read this report."
            )
        height, width = (int(value) for value in data["input_size"])
        return cls(
            layer_a=str(data["layer_a"]),
            layer_b=str(data["layer_b"]),
            method=str(data["method"]),
            target=str(data["target"]),
            grid=int(data["grid"]),
            top_regions=int(data["top_regions"]),
            input_size=(height, width),
            num_samples=int(data["num_samples"]),
            num_regions=int(data["num_regions"]),
            accuracy_a=_from_json_number(data["accuracy_a"]),
            accuracy_b=_from_json_number(data["accuracy_b"]),
            random_state=int(data["random_state"]),
            bootstrap=int(data["bootstrap"]),
            clusters=tuple(ComparisonCluster.from_dict(c) for c in data.get("clusters", ())),
            epoch=data.get("epoch"),
            step=data.get("step"),
            source=data.get("source"),
            reference=data.get("reference"),
            reference_epoch=data.get("reference_epoch"),
        )

    def rows(self) -> list[dict[str, Any]]:
        """Long-format rows (``epoch, step, source, dimension, slice, metric, value, count``).

        Dimension is ``"comparison"``; slice ``cluster_{id}`` (``"overall"`` for the probe set's
        accuracies); metrics ``difference``, ``lower``, ``upper``, ``effect_size``, ``attribution_a``,
        ``attribution_b``, ``accuracy_a``, ``accuracy_b``, ``regions`` and ``images``; ``count`` is the
        cluster's number of regions (the probe set's number of images for ``"overall"``).
        """
        base = {"epoch": self.epoch, "step": self.step, "source": self.source}
        rows: list[dict[str, Any]] = [
            {
                **base,
                "dimension": "comparison",
                "slice": "overall",
                "metric": metric,
                "value": value,
                "count": self.num_samples,
            }
            for metric, value in (("accuracy_a", self.accuracy_a), ("accuracy_b", self.accuracy_b))
        ]
        for cluster in self.clusters:
            rows.extend(
                {
                    **base,
                    "dimension": "comparison",
                    "slice": cluster.name,
                    "metric": metric,
                    "value": float(getattr(cluster, metric)),
                    "count": cluster.regions,
                }
                for metric in _CLUSTER_METRICS
            )
        return rows

    def scalars(self, prefix: str = "insight") -> dict[str, float]:
        """Headline values under ``{prefix}/comparison/...``.

        Every metric of :meth:`rows` per cluster (``cluster_{id}/difference``, ``cluster_{id}/lower``,
        ...); ``top/difference`` and ``top/effect_size`` of the top-ranked cluster (NaN when there is
        none); ``overall/accuracy_a``, ``overall/accuracy_b`` and ``num_clusters``.
        """
        root = f"{prefix}/comparison"
        out: dict[str, float] = {}
        for cluster in self.clusters:
            for metric in _CLUSTER_METRICS:
                out[f"{root}/{cluster.name}/{metric}"] = float(getattr(cluster, metric))
        top = self.clusters[0] if self.clusters else None
        for metric in ("difference", "effect_size"):
            out[f"{root}/top/{metric}"] = math.nan if top is None else float(getattr(top, metric))
        out[f"{root}/overall/accuracy_a"] = self.accuracy_a
        out[f"{root}/overall/accuracy_b"] = self.accuracy_b
        out[f"{root}/num_clusters"] = float(len(self.clusters))
        return out
