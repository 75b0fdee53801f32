"""Results of sliced evaluation: :class:`SliceReport` and :class:`Alert` (plain, frozen, JSON-safe)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _from_json_number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def number_text(value: float) -> str:
    """A value for a markdown table: 3 significant digits, NaN as ``undefined``."""
    return "undefined" if math.isnan(value) else f"{value:.3g}"


def key_part(text: str) -> str:
    """A log-key component: ``/`` would add a level, so it becomes ``_`` (``dawn/dusk`` -> ``dawn_dusk``)."""
    return text.replace("/", "_")


def slice_value(name: str) -> str:
    """The value part of a slice name: ``weather=rainy&timeofday=night`` -> ``rainy&night``."""
    return "&".join(part.split("=", 1)[1] if "=" in part else part for part in name.split("&"))


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceReport:
    """Sliced metrics and fairness indicators of one evaluation.

    Attributes:
        task: ``"binary"``, ``"multiclass"`` or ``"detection"``.
        overall: metric name -> value over every sample.
        slices: slice name (``"weather=rainy"``) -> metric name -> value; each has ``"count"``.
        dimensions: dimension name -> names of its slices, in a stable order.
        indicators: dimension name -> indicator name -> value (NaN when undefined).
        excluded: slice name -> why it takes no part in indicators and alerts (``min_support``).
        epoch: the training epoch (``None`` outside a Trainer).
        step: the global step (``None`` outside a Trainer).
        source: what was evaluated (``"val"``, ``"val/dataloader_idx_1"``, ``"test"``, ``"data"``).
        reference: dimension name -> reference slice name, for indicators measured to a reference.
        bootstrap: bootstrap replicates behind the intervals (0: no intervals). With a bootstrap,
            every metric ``m`` of ``overall`` and ``slices`` (but ``count``) and every indicator has
            ``m_low`` and ``m_high``: the ``confidence`` percentile interval.
        confidence: the intervals' level, with a bootstrap.
        indicator_replicates: dimension -> indicator -> its ``bootstrap`` replicate values (what
            ``@ci`` alert rules and multiple-testing corrections use; not part of :meth:`to_dict`).
        schema_version: version of :meth:`to_dict`'s layout.
    """

    task: str
    overall: dict[str, float]
    slices: dict[str, dict[str, float]]
    dimensions: dict[str, tuple[str, ...]]
    indicators: dict[str, dict[str, float]]
    excluded: dict[str, str] = field(default_factory=dict)
    epoch: int | None = None
    step: int | None = None
    source: str = "data"
    reference: dict[str, str] = field(default_factory=dict)
    bootstrap: int = 0
    confidence: float | None = None
    indicator_replicates: dict[str, dict[str, tuple[float, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``); :meth:`from_dict` reads it back."""
        return {
            "schema_version": self.schema_version,
            "kind": "slice_report",
            "task": self.task,
            "epoch": self.epoch,
            "step": self.step,
            "source": self.source,
            "overall": {k: _json_number(v) for k, v in self.overall.items()},
            "slices": {
                s: {k: _json_number(v) for k, v in m.items()} for s, m in self.slices.items()
            },
            "dimensions": {d: list(names) for d, names in self.dimensions.items()},
            "indicators": {
                d: {k: _json_number(v) for k, v in m.items()} for d, m in self.indicators.items()
            },
            "excluded": dict(self.excluded),
            "reference": dict(self.reference),
            "bootstrap": self.bootstrap,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SliceReport:
        """Rebuild a report from :meth:`to_dict`'s output (e.g. from a checkpoint)."""
        return cls(
            task=str(data["task"]),
            overall={k: _from_json_number(v) for k, v in data["overall"].items()},
            slices={
                s: {k: _from_json_number(v) for k, v in m.items()}
                for s, m in data["slices"].items()
            },
            dimensions={d: tuple(names) for d, names in data["dimensions"].items()},
            indicators={
                d: {k: _from_json_number(v) for k, v in m.items()}
                for d, m in data["indicators"].items()
            },
            excluded=dict(data.get("excluded", {})),
            epoch=data.get("epoch"),
            step=data.get("step"),
            source=str(data.get("source", "data")),
            reference=dict(data.get("reference", {})),
            bootstrap=int(data.get("bootstrap", 0)),
            confidence=data.get("confidence"),
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
        )

    def rows(self) -> list[dict[str, Any]]:
        """Long-format rows (``epoch, step, source, dimension, slice, metric, value, count``).

        The overall metrics have dimension and slice ``"overall"``; indicators have an empty slice and
        the number of slices that took part as count.
        """
        base = {"epoch": self.epoch, "step": self.step, "source": self.source}
        rows: list[dict[str, Any]] = []
        overall_count = self.overall.get("count", float("nan"))
        for metric, value in self.overall.items():
            rows.append(
                {
                    **base,
                    "dimension": "overall",
                    "slice": "overall",
                    "metric": metric,
                    "value": value,
                    "count": overall_count,
                }
            )
        for dimension, names in self.dimensions.items():
            for name in names:
                values = self.slices[name]
                count = values.get("count", float("nan"))
                for metric, value in values.items():
                    rows.append(
                        {
                            **base,
                            "dimension": dimension,
                            "slice": name,
                            "metric": metric,
                            "value": value,
                            "count": count,
                        }
                    )
            taking_part = sum(1 for n in names if n not in self.excluded)
            for indicator, value in self.indicators.get(dimension, {}).items():
                rows.append(
                    {
                        **base,
                        "dimension": dimension,
                        "slice": "",
                        "metric": indicator,
                        "value": value,
                        "count": taking_part,
                    }
                )
        return rows

    def scalars(self, prefix: str = "insight", suffix: str = "") -> dict[str, float]:
        """Every value under the project's log keys.

        ``{prefix}/overall/{metric}``, ``{prefix}/slice/{dimension}/{value}/{metric}``,
        ``{prefix}/gap/{dimension}/{indicator}`` and ``{prefix}/worst/{metric}``; ``suffix`` (e.g.
        ``/dataloader_idx_1``) is appended to every key.
        """
        out = {f"{prefix}/overall/{key_part(m)}{suffix}": v for m, v in self.overall.items()}
        for dimension, names in self.dimensions.items():
            for name in names:
                for metric, value in self.slices[name].items():
                    key = f"{prefix}/slice/{key_part(dimension)}/{key_part(slice_value(name))}/{key_part(metric)}"
                    out[key + suffix] = value
            for indicator, value in self.indicators.get(dimension, {}).items():
                out[f"{prefix}/gap/{key_part(dimension)}/{indicator}{suffix}"] = value
        for metric, (_, value) in self.worst().items():
            out[f"{prefix}/worst/{metric}{suffix}"] = value
        return out

    def worst(self) -> dict[str, tuple[str, float]]:
        """The lowest accuracy-type value over every slice that takes part: metric -> (slice, value)."""
        metrics = ("map",) if self.task == "detection" else ("accuracy",)
        out: dict[str, tuple[str, float]] = {}
        for metric in metrics:
            best: tuple[str, float] | None = None
            for name, values in self.slices.items():
                value = values.get(metric, float("nan"))
                if name in self.excluded or math.isnan(value):
                    continue
                if best is None or value < best[1]:
                    best = (name, value)
            out[metric] = best if best is not None else ("", float("nan"))
        return out

    def summary(self, alerts: tuple[Alert, ...] | list[Alert] = (), *, top: int = 3) -> str:
        """A few lines for a terminal: worst slice, largest gaps, alerts fired.

        Example:
            >>> report = SliceReport(task="binary", overall={"accuracy": 0.8, "count": 20.0},
            ...     slices={"w=a": {"accuracy": 0.9, "count": 10.0}, "w=b": {"accuracy": 0.7, "count": 10.0}},
            ...     dimensions={"w": ("w=a", "w=b")}, indicators={"w": {"accuracy_difference": 0.2}}, epoch=0)
            >>> print(report.summary())
            [data epoch 0] accuracy 0.8 over 20 samples
              worst slice: w=b accuracy 0.7 (10 samples)
              largest gaps: w accuracy_difference 0.2
              alerts: none
        """
        main = "map" if self.task == "detection" else "accuracy"

        def support(values: Mapping[str, float]) -> str:
            if self.task != "detection":
                return f"{values.get('count', 0):.0f} samples"
            return f"{values.get('count', 0):.0f} images, {values.get('objects', 0):.0f} objects"

        lines = [
            f"[{self.source} epoch {self.epoch}] {main} {self.overall.get(main, float('nan')):.4g} over {support(self.overall)}"
        ]
        name, value = self.worst().get(main, ("", float("nan")))
        if name:
            lines.append(f"  worst slice: {name} {main} {value:.4g} ({support(self.slices[name])})")
        else:
            lines.append("  worst slice: undefined")
        gaps = [
            (v, d, k)
            for d, values in self.indicators.items()
            for k, v in values.items()
            if k.endswith("_difference") and not math.isnan(v)
        ]
        gaps.sort(reverse=True)
        shown = ", ".join(f"{d} {k} {v:.4g}" for v, d, k in gaps[:top]) or "undefined"
        lines.append(f"  largest gaps: {shown}")
        by_rule: dict[str, list[str]] = {}
        for alert in alerts:
            where = alert.slice or alert.dimension
            by_rule.setdefault(alert.rule, []).append(f"{where} {alert.value:.4g}")
        fired = "; ".join(f"{rule} on {', '.join(places)}" for rule, places in by_rule.items())
        lines.append(f"  alerts: {fired or 'none'}")
        return "\n".join(lines)

    def markdown(self, metrics: tuple[str, ...] | None = None) -> str:
        """A markdown table: one row per slice, one column per metric (``undefined`` for NaN)."""
        shown = metrics or tuple(self.overall)
        header = "| dimension | slice | " + " | ".join(shown) + " |"
        lines = [header, "|" + " --- |" * (len(shown) + 2)]

        def cell(value: float) -> str:
            if math.isnan(value):
                return "undefined"
            return (
                str(int(value)) if float(value).is_integer() and abs(value) >= 1 else f"{value:.4g}"
            )

        lines.append(
            "| overall | overall | "
            + " | ".join(cell(self.overall.get(m, float("nan"))) for m in shown)
            + " |"
        )
        for dimension, names in self.dimensions.items():
            for name in names:
                mark = " (excluded)" if name in self.excluded else ""
                values = self.slices[name]
                lines.append(
                    f"| {dimension} | {name}{mark} | "
                    + " | ".join(cell(values.get(m, float("nan"))) for m in shown)
                    + " |"
                )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """An alert rule that fired.

    Attributes:
        rule: the rule as written (``"weather: accuracy_ratio < 0.8"``).
        name: the indicator or metric it checks.
        dimension: the dimension whose value crossed the threshold.
        value: the value that crossed it.
        op: the comparison (``>``, ``>=``, ``<``, ``<=``).
        threshold: the rule's threshold.
        epoch: epoch of the report (``None`` outside a Trainer).
        step: global step of the report.
        source: the report's source.
        slice: for a metric rule, the slice whose value crossed (``None`` for indicators).
        streak: consecutive evaluations the rule has held.
        low: for an ``@ci`` rule, the lower end of the value's interval.
        high: for an ``@ci`` rule, the upper end.
        p_value: for an ``@ci`` indicator rule, the bootstrap p-value after the monitor's correction.
    """

    rule: str
    name: str
    dimension: str
    value: float
    op: str
    threshold: float
    epoch: int | None = None
    step: int | None = None
    source: str = "data"
    slice: str | None = None
    streak: int = 1
    low: float | None = None
    high: float | None = None
    p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "rule": self.rule,
            "name": self.name,
            "dimension": self.dimension,
            "value": _json_number(self.value),
            "op": self.op,
            "threshold": self.threshold,
            "epoch": self.epoch,
            "step": self.step,
            "source": self.source,
            "slice": self.slice,
            "streak": self.streak,
            "low": None if self.low is None else _json_number(self.low),
            "high": None if self.high is None else _json_number(self.high),
            "p_value": self.p_value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Rebuild an alert from :meth:`to_dict`'s output."""
        return cls(
            rule=str(data["rule"]),
            name=str(data["name"]),
            dimension=str(data["dimension"]),
            value=_from_json_number(data.get("value")),
            op=str(data["op"]),
            threshold=float(data["threshold"]),
            epoch=data.get("epoch"),
            step=data.get("step"),
            source=str(data.get("source", "data")),
            slice=data.get("slice"),
            streak=int(data.get("streak", 1)),
            low=None if data.get("low") is None else float(data["low"]),
            high=None if data.get("high") is None else float(data["high"]),
            p_value=data.get("p_value"),
        )

    def message(self) -> str:
        """One line for humans."""
        where = f"{self.dimension}" + (f" ({self.slice})" if self.slice else "")
        interval = (
            f" [{self.low:.4g}, {self.high:.4g}]"
            if self.low is not None and self.high is not None
            else ""
        )
        if self.op == "regression":
            return (
                f"[{self.source} epoch {self.epoch}] alert {self.rule!r}: {self.name} of {where} fell "
                f"by {-self.value:.4g} (more than {self.threshold:g}) while the overall {self.name} rose"
            )
        return (
            f"[{self.source} epoch {self.epoch}] alert {self.rule!r}: {self.name} = {self.value:.4g}"
            f"{interval} on {where} ({self.op} {self.threshold:g}, {self.streak} consecutive)"
        )
