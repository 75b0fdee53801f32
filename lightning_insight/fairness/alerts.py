"""Alert rules (``"equalized_odds_difference > 0.1"``, ``"weather: accuracy_ratio < 0.8"``) and their state.

A rule names an indicator (checked per dimension) or a metric (checked per slice; it holds when any
slice that takes part crosses, and reports the worst one). A scope before ``:`` limits it to one
dimension. With ``patience=k`` a rule fires only once it has held for ``k`` consecutive evaluations, and
then at every evaluation while it keeps holding.

Options after the value:

- ``@ci``: the rule holds only when the whole bootstrap interval of the value is beyond the threshold
  (``low > t`` for ``>``/``>=``, ``high < t`` for ``<``/``<=``); it needs ``FairnessMonitor(bootstrap=B)``.
  With ``correction="holm"`` or ``"bh"``, an indicator rule's comparisons (one per dimension) are tested
  together instead: a one-sided bootstrap p-value per dimension, ``(1 + #replicates not beyond t) /
  (B + 1)``, adjusted by Holm (family-wise error <= ``1 - confidence``) or Benjamini-Hochberg (false
  discovery rate <= ``1 - confidence`` for independent or positively dependent tests).
- ``clear <v>``: hysteresis. Once it holds, the rule keeps holding until the value is back beyond ``v``
  (below ``v`` for ``>``, above it for ``<``), so a value hovering at the threshold does not flap.

``"regression: accuracy 0.05"`` fires for each slice whose metric fell by more than 0.05 since the
previous evaluation while the overall metric rose.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
        op: comparison operator, or ``"regression"`` for a regression rule.
        threshold: the value compared against (a regression rule: the drop that fires).
        ci: ``@ci``: the whole interval must be beyond the threshold.
        clear: ``clear <v>``: once holding, the rule holds until the value is back beyond ``v``.
    """

    text: str
    scope: str | None
    name: str
    op: str
    threshold: float
    ci: bool = False
    clear: float | None = None

    @property
    def key(self) -> str:
        """The rule without spaces, used in log keys (``insight/alert/{key}``)."""
        return re.sub(r"\s+", "", self.text).replace("/", "_")

    def holds(self, value: float) -> bool:
        """Whether ``value`` crosses the threshold (NaN never does)."""
        return not math.isnan(value) and OPERATORS[self.op](value, self.threshold)

    @property
    def upward(self) -> bool:
        """Whether the rule fires on large values (``>``, ``>=``)."""
        return self.op in (">", ">=")

    def interval_beyond(self, low: float, high: float) -> bool:
        """Whether the whole interval ``[low, high]`` crosses the threshold (NaN never does)."""
        return self.holds(low) if self.upward else self.holds(high)

    def cleared(self, value: float) -> bool:
        """Whether ``value`` is back beyond the ``clear`` level (NaN clears)."""
        if math.isnan(value) or self.clear is None:
            return True
        return value < self.clear if self.upward else value > self.clear


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
        AlertRule(text='weather: accuracy_ratio < 0.8', scope='weather', name='accuracy_ratio', op='<', threshold=0.8, ci=False, clear=None)
        >>> rule = parse_alert_rule("equalized_odds_difference > 0.1 clear 0.05 @ci")
        >>> rule.ci, rule.clear, rule.threshold
        (True, 0.05, 0.1)
    """
    if not isinstance(text, str):
        raise TypeError(
            f"Expected an alert rule to be a string like {_EXAMPLE}, but got {type(text).__name__}."
        )
    if re.match(r"\s*regression\s*:", text):
        return _parse_regression(text, known_names)
    body_text, ci, clear = _options(text)
    rule = _parse_threshold_rule(text, body_text, known_names)
    if clear is not None and (clear > rule.threshold if rule.upward else clear < rule.threshold):
        raise _fail(
            text,
            len(body_text),
            f"the clear level {clear:g} must be on the safe side of the threshold {rule.threshold:g}",
        )
    return AlertRule(
        text=text,
        scope=rule.scope,
        name=rule.name,
        op=rule.op,
        threshold=rule.threshold,
        ci=ci,
        clear=clear,
    )


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _options(text: str) -> tuple[str, bool, float | None]:
    """Split the trailing ``@ci`` and ``clear <v>`` options (in any order) off a rule."""
    body, ci, clear = text, False, None
    while True:
        m_ci = re.search(r"\s+@ci\s*$", body)
        m_clear = re.search(rf"\s+clear\s+(?P<value>{_NUMBER})\s*$", body)
        if m_ci is not None and not ci:
            body, ci = body[: m_ci.start()], True
        elif m_clear is not None and clear is None:
            body, clear = body[: m_clear.start()], float(m_clear.group("value"))
        else:
            return body, ci, clear


def _check_known(text: str, name: str, column: int, known_names: Iterable[str] | None) -> None:
    if known_names is not None:
        known = sorted(set(known_names))
        if name not in known:
            raise _fail(text, column, f"unknown name {name!r} (known: {known})")


def _parse_regression(text: str, known_names: Iterable[str] | None) -> AlertRule:
    m = re.fullmatch(
        rf"\s*regression\s*:\s*(?P<name>[A-Za-z_][\w\[\]]*)\s+(?P<value>{_NUMBER})\s*", text
    )
    if m is None:
        raise _fail(
            text, 0, "expected 'regression: <metric> <drop>', e.g. 'regression: accuracy 0.05'"
        )
    _check_known(text, m.group("name"), m.start("name"), known_names)
    drop = float(m.group("value"))
    if drop < 0:
        raise _fail(text, m.start("value"), f"the drop must be >= 0, found {drop:g}")
    return AlertRule(text=text, scope=None, name=m.group("name"), op="regression", threshold=drop)


def _parse_threshold_rule(full: str, text: str, known_names: Iterable[str] | None) -> AlertRule:
    """``[scope:] name op value`` (``text``: the rule without its options; errors quote ``full``)."""
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
            raise _fail(full, len(text) - len(text.lstrip()), f"bad dimension scope {scope!r}")
        scope = re.sub(r"\s*&\s*", "&", scope)
        body_start = colon + 1
    body = text[body_start:]
    m = re.match(r"\s*(?P<name>[A-Za-z_][\w\[\]]*)", body)
    if m is None:
        column = body_start + len(body) - len(body.lstrip())
        token = body.strip().split(" ")[0] if body.strip() else "end of rule"
        raise _fail(full, column, f"expected an indicator or metric name, found {token!r}")
    name = m.group("name")
    position = body_start + m.end()
    rest = text[position:]
    m_op = re.match(r"\s*(?P<op>[<>=!]+)", rest)
    if m_op is None or m_op.group("op") not in OPERATORS:
        column = position + len(rest) - len(rest.lstrip())
        found = m_op.group("op") if m_op else (rest.strip().split(" ")[0] or "end of rule")
        raise _fail(full, column, f"expected one of {list(OPERATORS)}, found {found!r}")
    op = m_op.group("op")
    position += m_op.end()
    rest = text[position:]
    m_value = re.fullmatch(r"\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*", rest)
    if m_value is None:
        column = position + len(rest) - len(rest.lstrip())
        raise _fail(full, column, f"expected a number, found {rest.strip() or 'end of rule'!r}")
    _check_known(full, name, body_start + (len(body) - len(body.lstrip())), known_names)
    return AlertRule(
        text=full, scope=scope, name=name, op=op, threshold=float(m_value.group("value"))
    )


@dataclass(frozen=True, slots=True)
class _Observation:
    """What a rule sees in one dimension of a report."""

    dimension: str
    value: float
    slice: str | None = None
    low: float = float("nan")
    high: float = float("nan")
    replicates: tuple[float, ...] = ()


def _observations(rule: AlertRule, report: SliceReport) -> list[_Observation]:
    """The value (and interval) the rule looks at in each of its dimensions of ``report``."""
    dimensions = [rule.scope] if rule.scope is not None else list(report.dimensions)
    out: list[_Observation] = []
    nan = float("nan")
    for dimension in dimensions:
        if dimension not in report.dimensions:
            continue
        indicators = report.indicators.get(dimension, {})
        if rule.name in indicators:
            out.append(
                _Observation(
                    dimension,
                    indicators[rule.name],
                    None,
                    indicators.get(f"{rule.name}_low", nan),
                    indicators.get(f"{rule.name}_high", nan),
                    report.indicator_replicates.get(dimension, {}).get(rule.name, ()),
                )
            )
            continue
        candidates = [
            _Observation(
                dimension,
                report.slices[s].get(rule.name, nan),
                s,
                report.slices[s].get(f"{rule.name}_low", nan),
                report.slices[s].get(f"{rule.name}_high", nan),
            )
            for s in report.dimensions[dimension]
            if s not in report.excluded
        ]
        crossing = [
            c
            for c in candidates
            if (rule.interval_beyond(c.low, c.high) if rule.ci else rule.holds(c.value))
        ]
        if crossing:
            pick = max if rule.upward else min
            out.append(pick(crossing, key=lambda c: c.value))
        else:
            defined = [c for c in candidates if not math.isnan(c.value)]
            worst = max(defined, key=lambda c: c.value) if defined else None
            out.append(
                _Observation(dimension, worst.value, None, worst.low, worst.high)
                if worst is not None
                else _Observation(dimension, nan)
            )
    return out


CORRECTIONS: tuple[str, ...] = ("holm", "bh")


def adjusted_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """Holm (step-down, family-wise error) or Benjamini-Hochberg (step-up, false discovery rate).

    Example:
        >>> [round(p, 3) for p in adjusted_p_values([0.01, 0.04, 0.03], "holm")]
        [0.03, 0.06, 0.06]
        >>> [round(p, 3) for p in adjusted_p_values([0.01, 0.04, 0.03], "bh")]
        [0.03, 0.04, 0.04]
    """
    values = np.asarray(p_values, dtype=np.float64)
    m = values.shape[0]
    if m == 0:
        return []
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        scaled = np.minimum(1.0, m * ranked / np.arange(1, m + 1))
        adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = adjusted
    return [float(v) for v in out]


def _p_value(rule: AlertRule, replicates: tuple[float, ...]) -> float:
    """One-sided bootstrap p-value that the value does not cross the threshold."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.shape[0] == 0:
        return 1.0
    not_beyond = sum(1 for v in values.tolist() if not rule.holds(v))
    return (1 + not_beyond) / (int(values.shape[0]) + 1)


class AlertTracker:
    """Checks rules against each report and keeps their streaks, hysteresis state and history.

    Args:
        rules: parsed rules.
        patience: evaluations a rule must hold in a row before it fires.
        correction: ``None``, ``"holm"`` or ``"bh"``: how ``@ci`` indicator rules test their
            dimensions together (see the module docstring).
        confidence: ``1 - alpha`` of the corrected tests.

    Example:
        >>> tracker = AlertTracker([parse_alert_rule("accuracy_difference > 0.1")], patience=2)
        >>> report = SliceReport(task="binary", overall={}, slices={}, dimensions={"weather": ()},
        ...                      indicators={"weather": {"accuracy_difference": 0.3}})
        >>> len(tracker.update(report)), len(tracker.update(report))
        (0, 1)
    """

    def __init__(
        self,
        rules: Sequence[AlertRule],
        *,
        patience: int = 1,
        correction: str | None = None,
        confidence: float = 0.95,
    ) -> None:
        if correction is not None and correction not in CORRECTIONS:
            raise ValueError(
                f"Expected argument `correction` to be None or one of {CORRECTIONS}, but got "
                f"{correction!r}."
            )
        self.rules = tuple(rules)
        self.patience = patience
        self.correction = correction
        self.confidence = confidence
        self.streaks: dict[str, int] = {}
        self.active: dict[str, bool] = {}
        self.previous: dict[str, dict[str, Any]] = {}

    def update(self, report: SliceReport) -> list[Alert]:
        """Advance every rule with ``report`` and return the alerts that fire now."""
        fired: list[Alert] = []
        for rule in self.rules:
            if rule.op == "regression":
                fired.extend(self._regressions(rule, report))
                continue
            observations = _observations(rule, report)
            p_values: list[float | None] = [None] * len(observations)
            if rule.ci and self.correction is not None:
                tested = [i for i, o in enumerate(observations) if o.replicates]
                adjusted = adjusted_p_values(
                    [_p_value(rule, observations[i].replicates) for i in tested], self.correction
                )
                for i, p in zip(tested, adjusted, strict=True):
                    p_values[i] = p
            for observation, p_value in zip(observations, p_values, strict=True):
                if p_value is not None:
                    beyond = p_value <= 1.0 - self.confidence
                elif rule.ci:
                    beyond = rule.interval_beyond(observation.low, observation.high)
                else:
                    beyond = rule.holds(observation.value)
                key = f"{report.source}|{rule.text}|{observation.dimension}"
                staying = self.active.get(key, False) and not rule.cleared(observation.value)
                if not (beyond or (rule.clear is not None and staying)):
                    self.streaks[key] = 0
                    self.active[key] = False
                    continue
                streak = self.streaks.get(key, 0) + 1
                self.streaks[key] = streak
                if streak < self.patience:
                    continue
                self.active[key] = True
                fired.append(
                    Alert(
                        rule=rule.text,
                        name=rule.name,
                        dimension=observation.dimension,
                        value=observation.value,
                        op=rule.op,
                        threshold=rule.threshold,
                        epoch=report.epoch,
                        step=report.step,
                        source=report.source,
                        slice=observation.slice,
                        streak=streak,
                        low=observation.low if rule.ci else None,
                        high=observation.high if rule.ci else None,
                        p_value=p_value,
                    )
                )
        self.previous[report.source] = {
            "overall": dict(report.overall),
            "slices": {name: dict(values) for name, values in report.slices.items()},
            "excluded": sorted(report.excluded),
        }
        return fired

    def _regressions(self, rule: AlertRule, report: SliceReport) -> list[Alert]:
        """Slices whose metric fell by more than the rule's drop while the overall metric rose."""
        before = self.previous.get(report.source)
        if before is None:
            return []
        nan = float("nan")
        overall_now = report.overall.get(rule.name, nan)
        overall_before = before["overall"].get(rule.name, nan)
        if not overall_now > overall_before:  # NaN compares False
            return []
        out: list[Alert] = []
        excluded = set(before["excluded"]) | set(report.excluded)
        for dimension, names in report.dimensions.items():
            for name in names:
                if name in excluded or name not in before["slices"]:
                    continue
                change = report.slices[name].get(rule.name, nan) - before["slices"][name].get(
                    rule.name, nan
                )
                if change < -rule.threshold:
                    out.append(
                        Alert(
                            rule=rule.text,
                            name=rule.name,
                            dimension=dimension,
                            value=change,
                            op=rule.op,
                            threshold=rule.threshold,
                            epoch=report.epoch,
                            step=report.step,
                            source=report.source,
                            slice=name,
                        )
                    )
        return out

    def state_dict(self) -> dict[str, Any]:
        """The streaks, the hysteresis state and each source's last values, as plain values."""
        return {
            "streaks": dict(self.streaks),
            "active": dict(self.active),
            "previous": {source: dict(values) for source, values in self.previous.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s state."""
        self.streaks = {str(k): int(v) for k, v in state.get("streaks", {}).items()}
        self.active = {str(k): bool(v) for k, v in state.get("active", {}).items()}
        self.previous = {str(k): dict(v) for k, v in state.get("previous", {}).items()}
