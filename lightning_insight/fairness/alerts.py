"""Alert rules (``"equalized_odds_difference > 0.1"``, ``"weather: accuracy_ratio < 0.8"``) and their state.

A rule names an indicator (checked per dimension) or a metric (checked per slice; it holds when any
slice that takes part crosses, and reports the worst one). A scope before ``:`` limits it to one
dimension. With ``patience=k`` a rule fires only once it has held for ``k`` consecutive evaluations, and
then at every evaluation while it keeps holding.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_insight.fairness.results import Alert, SliceReport

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_EXAMPLE = '"equalized_odds_difference > 0.1" or "weather: accuracy_ratio < 0.8"'


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRule:
    """A parsed rule.

    Attributes:
        text: the rule as written.
        scope: the dimension it is limited to, or ``None`` for every dimension.
        name: indicator or metric name.
        op: comparison operator.
        threshold: the value compared against.
    """

    text: str
    scope: str | None
    name: str
    op: str
    threshold: float

    @property
    def key(self) -> str:
        """The rule without spaces, used in log keys (``insight/alert/{key}``)."""
        return re.sub(r"\s+", "", self.text).replace("/", "_")

    def holds(self, value: float) -> bool:
        """Whether ``value`` crosses the threshold (NaN never does)."""
        return not math.isnan(value) and OPERATORS[self.op](value, self.threshold)


def _fail(text: str, column: int, problem: str) -> ValueError:
    pointer = " " * column + "^"
    return ValueError(
        f"Expected an alert rule like {_EXAMPLE}, but got {text!r}: {problem} at column {column}.\n"
        f"  {text}\n  {pointer}"
    )


def parse_alert_rule(text: str, *, known_names: Iterable[str] | None = None) -> AlertRule:
    """Parse one rule string.

    Args:
        text: ``"[dimension:] name op value"`` with op one of ``> >= < <=``.
        known_names: indicator and metric names the rule may use (not checked when ``None``).

    Raises:
        TypeError: if ``text`` is not a string.
        ValueError: naming and pointing at the bad token.

    Example:
        >>> parse_alert_rule("weather: accuracy_ratio < 0.8")
        AlertRule(text='weather: accuracy_ratio < 0.8', scope='weather', name='accuracy_ratio', op='<', threshold=0.8)
    """
    if not isinstance(text, str):
        raise TypeError(
            f"Expected an alert rule to be a string like {_EXAMPLE}, but got {type(text).__name__}."
        )
    scope: str | None = None
    body_start = 0
    first_op = min((i for i, ch in enumerate(text) if ch in "<>=!"), default=len(text))
    colon = text.rfind(":", 0, first_op)
    if colon >= 0:
        scope = text[:colon].strip()
        if not re.fullmatch(
            r"[A-Za-z_][\w.\-]*(?::[\w.,+\-]+)?(?:&[A-Za-z_][\w.\-]*(?::[\w.,+\-]+)?)*",
            re.sub(r"\s*&\s*", "&", scope),
        ):
            raise _fail(text, len(text) - len(text.lstrip()), f"bad dimension scope {scope!r}")
        scope = re.sub(r"\s*&\s*", "&", scope)
        body_start = colon + 1
    body = text[body_start:]
    m = re.match(r"\s*(?P<name>[A-Za-z_][\w\[\]]*)", body)
    if m is None:
        column = body_start + len(body) - len(body.lstrip())
        token = body.strip().split(" ")[0] if body.strip() else "end of rule"
        raise _fail(text, column, f"expected an indicator or metric name, found {token!r}")
    name = m.group("name")
    position = body_start + m.end()
    rest = text[position:]
    m_op = re.match(r"\s*(?P<op>[<>=!]+)", rest)
    if m_op is None or m_op.group("op") not in OPERATORS:
        column = position + len(rest) - len(rest.lstrip())
        found = m_op.group("op") if m_op else (rest.strip().split(" ")[0] or "end of rule")
        raise _fail(text, column, f"expected one of {list(OPERATORS)}, found {found!r}")
    op = m_op.group("op")
    position += m_op.end()
    rest = text[position:]
    m_value = re.fullmatch(r"\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*", rest)
    if m_value is None:
        column = position + len(rest) - len(rest.lstrip())
        raise _fail(text, column, f"expected a number, found {rest.strip() or 'end of rule'!r}")
    if known_names is not None:
        known = sorted(set(known_names))
        if name not in known:
            raise _fail(
                text,
                body_start + (len(body) - len(body.lstrip())),
                f"unknown name {name!r} (known: {known})",
            )
    return AlertRule(
        text=text, scope=scope, name=name, op=op, threshold=float(m_value.group("value"))
    )


def _observations(rule: AlertRule, report: SliceReport) -> list[tuple[str, float, str | None]]:
    """(dimension, value, slice) pairs the rule looks at in ``report``."""
    dimensions = [rule.scope] if rule.scope is not None else list(report.dimensions)
    out: list[tuple[str, float, str | None]] = []
    for dimension in dimensions:
        if dimension not in report.dimensions:
            continue
        indicators = report.indicators.get(dimension, {})
        if rule.name in indicators:
            out.append((dimension, indicators[rule.name], None))
            continue
        candidates = [
            (report.slices[s].get(rule.name, float("nan")), s)
            for s in report.dimensions[dimension]
            if s not in report.excluded
        ]
        crossing = [(v, s) for v, s in candidates if rule.holds(v)]
        if crossing:
            worst = max(crossing) if rule.op in (">", ">=") else min(crossing)
            out.append((dimension, worst[0], worst[1]))
        else:
            defined = [(v, s) for v, s in candidates if not math.isnan(v)]
            out.append((dimension, max(defined)[0] if defined else float("nan"), None))
    return out


class AlertTracker:
    """Checks rules against each report and keeps the consecutive-evaluation streaks.

    Args:
        rules: parsed rules.
        patience: evaluations a rule must hold in a row before it fires.

    Example:
        >>> tracker = AlertTracker([parse_alert_rule("accuracy_difference > 0.1")], patience=2)
        >>> report = SliceReport(task="binary", overall={}, slices={}, dimensions={"weather": ()},
        ...                      indicators={"weather": {"accuracy_difference": 0.3}})
        >>> len(tracker.update(report)), len(tracker.update(report))
        (0, 1)
    """

    def __init__(self, rules: Sequence[AlertRule], *, patience: int = 1) -> None:
        self.rules = tuple(rules)
        self.patience = patience
        self.streaks: dict[str, int] = {}

    def update(self, report: SliceReport) -> list[Alert]:
        """Advance every streak with ``report`` and return the alerts that fire now."""
        fired: list[Alert] = []
        for rule in self.rules:
            for dimension, value, slice_name in _observations(rule, report):
                key = f"{report.source}|{rule.text}|{dimension}"
                if rule.holds(value):
                    streak = self.streaks.get(key, 0) + 1
                    self.streaks[key] = streak
                    if streak >= self.patience:
                        fired.append(
                            Alert(
                                rule=rule.text,
                                name=rule.name,
                                dimension=dimension,
                                value=value,
                                op=rule.op,
                                threshold=rule.threshold,
                                epoch=report.epoch,
                                step=report.step,
                                source=report.source,
                                slice=slice_name,
                                streak=streak,
                            )
                        )
                else:
                    self.streaks[key] = 0
        return fired

    def state_dict(self) -> dict[str, Any]:
        """The streaks, as plain values."""
        return {"streaks": dict(self.streaks)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s streaks."""
        self.streaks = {str(k): int(v) for k, v in state.get("streaks", {}).items()}
