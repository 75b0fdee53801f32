"""Results of failure-mode mining: :class:`FailureModeReport` and its parts.

A report holds, per group, a :class:`FailureModeGroup` (counts, BER, ALER, status, the tree as
:class:`TreeNode` rows) and, over all groups, the leaves as :class:`FailureMode` ranked by importance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_insight.fairness.results import (
    _from_json_number,
    _json_number,
    key_part,
    number_text,
)

__all__ = [
    "DIRECTIONS",
    "FITTED",
    "GROUP_STATUSES",
    "NOT_ENOUGH_FAILURES",
    "NO_SUCCESSES",
    "Condition",
    "FailureMode",
    "FailureModeGroup",
    "FailureModeReport",
    "Group",
    "TreeNode",
]

SCHEMA_VERSION = 1

#: A decision path step: ``(original feature index, threshold, direction)``.
Condition = tuple[int, float, str]

#: ``"<="``: the sample went to the left child (``x[feature] <= threshold``); ``">"``: the right one.
DIRECTIONS: tuple[str, ...] = ("<=", ">")

#: A group key: a class id (``int``) or the string of an explicit group value (``"all"`` for one group).
Group = int | str

#: A tree was fit and the group's leaves are failure modes.
FITTED = "fitted"
#: Fewer failures than ``min_failures``: no tree, no modes (the counts are still reported).
NOT_ENOUGH_FAILURES = "not enough failures"
#: Every sample of the group failed: nothing to separate failures from.
NO_SUCCESSES = "no successes"
#: Every status a :class:`FailureModeGroup` can have.
GROUP_STATUSES: tuple[str, ...] = (FITTED, NOT_ENOUGH_FAILURES, NO_SUCCESSES)


def _condition_text(condition: Condition, feature_names: Sequence[str] | None) -> str:
    feature, threshold, direction = condition
    name = feature_names[feature] if feature_names is not None else f"feature[{feature}]"
    return f"{name} {direction} {threshold:.4g}"


def _path_to_json(path: tuple[Condition, ...]) -> list[list[Any]]:
    return [[feature, threshold, direction] for feature, threshold, direction in path]


def _path_from_json(data: Sequence[Sequence[Any]]) -> tuple[Condition, ...]:
    return tuple((int(f), float(t), str(d)) for f, t, d in data)


def _group_from_json(value: Any) -> Group:
    return value if isinstance(value, str) else int(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureMode:
    """One leaf of a group's failure tree.

    Attributes:
        group: The group (predicted class, label or explicit group value) the tree was fit on.
        leaf_id: The leaf's node id in the group's tree (``trees_[group].tree_``).
        path: Conditions from the root, ``(original feature index, threshold, direction)`` with
            direction ``"<="`` or ``">"``; ``()`` when the tree is a single leaf.
        size: Samples in the leaf.
        failures: Failures in the leaf.
        error_rate: ``ER``: ``failures / size``.
        error_coverage: ``EC``: the leaf's share of the group's failures.
        importance: ``IV = ER * EC``, the ranking key.
        sample_ids: Ids of the leaf's samples, ascending.
        path_error_rates: The true error rate at each node on the path, root (the group's base error
            rate) first and the leaf last (``len(path) + 1`` values).
    """

    group: Group
    leaf_id: int
    path: tuple[Condition, ...]
    size: int
    failures: int
    error_rate: float
    error_coverage: float
    importance: float
    sample_ids: tuple[int, ...]
    path_error_rates: tuple[float, ...] = ()

    def describe(self, feature_names: Sequence[str] | None = None) -> str:
        """The path as text: ``feature[7] > 0.5 and feature[23] <= -0.3`` (``all samples`` if empty)."""
        if not self.path:
            return "all samples"
        return " and ".join(_condition_text(condition, feature_names) for condition in self.path)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``; a path step becomes ``[feature, threshold, direction]``)."""
        return {
            "group": self.group,
            "leaf_id": self.leaf_id,
            "path": _path_to_json(self.path),
            "size": self.size,
            "failures": self.failures,
            "error_rate": _json_number(self.error_rate),
            "error_coverage": _json_number(self.error_coverage),
            "importance": _json_number(self.importance),
            "sample_ids": list(self.sample_ids),
            "path_error_rates": [_json_number(rate) for rate in self.path_error_rates],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailureMode:
        """Rebuild a mode from :meth:`to_dict`'s output."""
        return cls(
            group=_group_from_json(data["group"]),
            leaf_id=int(data["leaf_id"]),
            path=_path_from_json(data["path"]),
            size=int(data["size"]),
            failures=int(data["failures"]),
            error_rate=_from_json_number(data.get("error_rate")),
            error_coverage=_from_json_number(data.get("error_coverage")),
            importance=_from_json_number(data.get("importance")),
            sample_ids=tuple(int(i) for i in data["sample_ids"]),
            path_error_rates=tuple(_from_json_number(r) for r in data.get("path_error_rates", ())),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeNode:
    """One node of a group's failure tree, with its true (unweighted) error rate.

    Attributes:
        node_id: The node id in the tree.
        depth: 0 for the root.
        size: Samples reaching the node.
        failures: Failures among them.
        error_rate: ``failures / size`` (NaN when no sample reaches it).
        feature: Original feature index of the split; ``None`` for a leaf.
        threshold: The split threshold (left child: ``<=``); ``None`` for a leaf.
        left: Node id of the ``<=`` child; ``None`` for a leaf.
        right: Node id of the ``>`` child; ``None`` for a leaf.
    """

    node_id: int
    depth: int
    size: int
    failures: int
    error_rate: float
    feature: int | None = None
    threshold: float | None = None
    left: int | None = None
    right: int | None = None

    @property
    def is_leaf(self) -> bool:
        """Whether the node has no children."""
        return self.left is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``)."""
        return {
            "node_id": self.node_id,
            "depth": self.depth,
            "size": self.size,
            "failures": self.failures,
            "error_rate": _json_number(self.error_rate),
            "feature": self.feature,
            "threshold": self.threshold,
            "left": self.left,
            "right": self.right,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeNode:
        """Rebuild a node from :meth:`to_dict`'s output."""

        def optional_int(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        threshold = data.get("threshold")
        return cls(
            node_id=int(data["node_id"]),
            depth=int(data["depth"]),
            size=int(data["size"]),
            failures=int(data["failures"]),
            error_rate=_from_json_number(data.get("error_rate")),
            feature=optional_int("feature"),
            threshold=None if threshold is None else float(threshold),
            left=optional_int("left"),
            right=optional_int("right"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureModeGroup:
    """What was found for one group: counts, BER, ALER, the selected features and the tree.

    Attributes:
        group: The group key.
        status: ``"fitted"``, ``"not enough failures"`` or ``"no successes"`` (see
            :data:`GROUP_STATUSES`); only a fitted group has a tree and modes.
        size: Samples in the group.
        failures: Failures in the group.
        base_error_rate: ``BER = failures / size``.
        aler: ``ALER = sum over leaves of EC * ER``; NaN when no tree was fit.
        min_failures: The threshold the status was decided against.
        selected_features: Original indices of the features the tree chose from, most informative
            first; ``()`` when no tree was fit.
        nodes: The tree's nodes in node-id order, with their true error rates; ``()`` when no tree was fit.
    """

    group: Group
    status: str
    size: int
    failures: int
    base_error_rate: float
    aler: float
    min_failures: int
    selected_features: tuple[int, ...] = ()
    nodes: tuple[TreeNode, ...] = ()

    @property
    def fitted(self) -> bool:
        """Whether a tree was fit (``status == "fitted"``)."""
        return self.status == FITTED

    @property
    def reason(self) -> str:
        """The status in words with the counts: ``not enough failures (3 < min_failures=10 of 200 samples)``."""
        if self.status == NOT_ENOUGH_FAILURES:
            return (
                f"not enough failures ({self.failures} < min_failures={self.min_failures} "
                f"of {self.size} samples)"
            )
        if self.status == NO_SUCCESSES:
            return f"no successes (all {self.size} samples failed)"
        return f"fitted ({self.failures} failures of {self.size} samples)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``)."""
        return {
            "group": self.group,
            "status": self.status,
            "reason": self.reason,
            "size": self.size,
            "failures": self.failures,
            "base_error_rate": _json_number(self.base_error_rate),
            "aler": _json_number(self.aler),
            "min_failures": self.min_failures,
            "selected_features": list(self.selected_features),
            "nodes": [node.to_dict() for node in self.nodes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailureModeGroup:
        """Rebuild a group from :meth:`to_dict`'s output."""
        return cls(
            group=_group_from_json(data["group"]),
            status=str(data["status"]),
            size=int(data["size"]),
            failures=int(data["failures"]),
            base_error_rate=_from_json_number(data.get("base_error_rate")),
            aler=_from_json_number(data.get("aler")),
            min_failures=int(data["min_failures"]),
            selected_features=tuple(int(i) for i in data.get("selected_features", ())),
            nodes=tuple(TreeNode.from_dict(node) for node in data.get("nodes", ())),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureModeReport:
    """Failure modes of every group, ranked by importance.

    Attributes:
        modes: Every fitted group's leaves, by importance descending (ties: group order, then leaf id).
        groups: One entry per group, in group order (ascending keys), fitted or not.
        num_samples: Samples mined.
        grouping: ``"prediction"``, ``"label"``, ``"all"`` or ``"explicit"`` (groups passed to ``fit``).
        feature_names: Names of the original feature columns, if known (used by :meth:`describe`).
        epoch: The training epoch (``None`` outside a Trainer).
        step: The global step (``None`` outside a Trainer).
        source: What was evaluated (``"val"``, ``"test"``, ``"data"``).
        schema_version: Version of :meth:`to_dict`'s layout.

    Example:
        >>> mode = FailureMode(group=1, leaf_id=2, path=((7, 0.5, ">"),), size=4, failures=3,
        ...     error_rate=0.75, error_coverage=1.0, importance=0.75, sample_ids=(3, 5, 8, 9))
        >>> group = FailureModeGroup(group=1, status="fitted", size=10, failures=3, base_error_rate=0.3,
        ...     aler=0.75, min_failures=2)
        >>> report = FailureModeReport(modes=(mode,), groups=(group,), num_samples=10, grouping="prediction")
        >>> report.base_error_rate, report.aler, report.describe(mode)
        ({1: 0.3}, {1: 0.75}, 'feature[7] > 0.5')
    """

    modes: tuple[FailureMode, ...]
    groups: tuple[FailureModeGroup, ...]
    num_samples: int
    grouping: str
    feature_names: tuple[str, ...] | None = None
    epoch: int | None = None
    step: int | None = None
    source: str = "data"
    schema_version: int = field(default=SCHEMA_VERSION)

    @property
    def base_error_rate(self) -> dict[Group, float]:
        """``BER`` of every group, keyed by group."""
        return {entry.group: entry.base_error_rate for entry in self.groups}

    @property
    def aler(self) -> dict[Group, float]:
        """``ALER`` of every group, keyed by group (NaN where no tree was fit)."""
        return {entry.group: entry.aler for entry in self.groups}

    @property
    def status(self) -> dict[Group, str]:
        """Status of every group (see :data:`GROUP_STATUSES`), keyed by group."""
        return {entry.group: entry.status for entry in self.groups}

    def group(self, key: Group) -> FailureModeGroup:
        """The entry of one group.

        Raises:
            KeyError: If the report has no such group.
        """
        for entry in self.groups:
            if entry.group == key:
                return entry
        raise KeyError(
            f"Expected a group among {[entry.group for entry in self.groups]}, but got {key!r}."
        )

    def modes_of(self, key: Group) -> tuple[FailureMode, ...]:
        """The modes of one group, by importance descending (``()`` for an unfitted group)."""
        return tuple(mode for mode in self.modes if mode.group == key)

    def describe(self, mode: FailureMode) -> str:
        """A mode's path as text, with :attr:`feature_names` where known."""
        return mode.describe(self.feature_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``; keys of the BER/ALER maps are ``str(group)``).

        :meth:`from_dict` reads it back; group keys keep their type through the ``groups`` entries.
        """
        return {
            "schema_version": self.schema_version,
            "kind": "failure_mode_report",
            "epoch": self.epoch,
            "step": self.step,
            "source": self.source,
            "num_samples": self.num_samples,
            "grouping": self.grouping,
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "base_error_rate": {str(g): _json_number(v) for g, v in self.base_error_rate.items()},
            "aler": {str(g): _json_number(v) for g, v in self.aler.items()},
            "groups": [entry.to_dict() for entry in self.groups],
            "modes": [mode.to_dict() for mode in self.modes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailureModeReport:
        """Rebuild a report from :meth:`to_dict`'s output (e.g. from a checkpoint)."""
        names = data.get("feature_names")
        return cls(
            modes=tuple(FailureMode.from_dict(mode) for mode in data["modes"]),
            groups=tuple(FailureModeGroup.from_dict(entry) for entry in data["groups"]),
            num_samples=int(data["num_samples"]),
            grouping=str(data["grouping"]),
            feature_names=None if names is None else tuple(str(n) for n in names),
            epoch=data.get("epoch"),
            step=data.get("step"),
            source=str(data.get("source", "data")),
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
        )

    def rows(self) -> list[dict[str, Any]]:
        """Long-format rows (``epoch, step, source, dimension, slice, metric, value, count``).

        Dimension ``"failure_modes"``. Per group, slice ``group={g}`` with metrics ``base_error_rate``,
        ``aler``, ``failures`` and ``count``; per mode, slice ``group={g}&leaf={leaf_id}`` with
        ``error_rate``, ``error_coverage``, ``importance``, ``failures``, ``count`` and ``rank`` (1 =
        most important overall). ``count`` is the group's or leaf's size.
        """
        base = {"epoch": self.epoch, "step": self.step, "source": self.source}
        rows: list[dict[str, Any]] = []
        for entry in self.groups:
            values = {
                "base_error_rate": entry.base_error_rate,
                "aler": entry.aler,
                "failures": float(entry.failures),
                "count": float(entry.size),
            }
            rows.extend(
                {
                    **base,
                    "dimension": "failure_modes",
                    "slice": f"group={entry.group}",
                    "metric": metric,
                    "value": value,
                    "count": entry.size,
                }
                for metric, value in values.items()
            )
        for rank, mode in enumerate(self.modes, start=1):
            values = {
                "error_rate": mode.error_rate,
                "error_coverage": mode.error_coverage,
                "importance": mode.importance,
                "failures": float(mode.failures),
                "count": float(mode.size),
                "rank": float(rank),
            }
            rows.extend(
                {
                    **base,
                    "dimension": "failure_modes",
                    "slice": f"group={mode.group}&leaf={mode.leaf_id}",
                    "metric": metric,
                    "value": value,
                    "count": mode.size,
                }
                for metric, value in values.items()
            )
        return rows

    def scalars(self, prefix: str = "insight") -> dict[str, float]:
        """Headline values under ``{prefix}/failure_modes/...``.

        ``group/{g}/base_error_rate``, ``group/{g}/aler`` and ``group/{g}/failures`` per group;
        ``top/error_rate``, ``top/error_coverage``, ``top/importance`` and ``top/lift`` (ER - BER of
        its group) of the top-ranked mode (NaN when there is none); ``num_modes``.
        """
        root = f"{prefix}/failure_modes"
        out: dict[str, float] = {}
        for entry in self.groups:
            name = key_part(str(entry.group))
            out[f"{root}/group/{name}/base_error_rate"] = entry.base_error_rate
            out[f"{root}/group/{name}/aler"] = entry.aler
            out[f"{root}/group/{name}/failures"] = float(entry.failures)
        top = self.modes[0] if self.modes else None
        for metric in ("error_rate", "error_coverage", "importance"):
            out[f"{root}/top/{metric}"] = float("nan") if top is None else getattr(top, metric)
        out[f"{root}/top/lift"] = (
            float("nan") if top is None else top.error_rate - self.group(top.group).base_error_rate
        )
        out[f"{root}/num_modes"] = float(len(self.modes))
        return out

    def markdown(self, top: int | None = 10) -> str:
        """A markdown table of the ``top`` most important modes (all with ``None``), then skipped groups."""
        lines = [
            "| rank | group | path | size | ER | EC | IV | group BER |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        shown = self.modes if top is None else self.modes[:top]
        ber = self.base_error_rate
        lines.extend(
            f"| {rank} | {mode.group} | {self.describe(mode)} | {mode.size} | {number_text(mode.error_rate)} | "
            f"{number_text(mode.error_coverage)} | {number_text(mode.importance)} | {number_text(ber[mode.group])} |"
            for rank, mode in enumerate(shown, start=1)
        )
        skipped = [entry for entry in self.groups if not entry.fitted]
        if skipped:
            lines.append("")
            lines.extend(f"- group {entry.group}: {entry.reason}" for entry in skipped)
        return "\n".join(lines)
