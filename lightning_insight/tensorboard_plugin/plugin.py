"""InsightBoard's backend: a TensorBoard plugin that serves the monitors' reports and the run's scalars.

Every route lives under ``/data/plugin/lightning_insight/`` and is documented, with its answer, in
``docs/insightboard.md`` ("HTTP API"). Each route has one ``*_impl`` method that returns plain data
(tests call them directly) and raises :class:`UnknownError` (404) or :class:`BadParameterError` (400);
the route wrappers turn the data into JSON through ``http_util.Respond``.

Data comes only from ``context.data_provider``: scalars (plugin ``scalars``), this plugin's JSON tensor
summaries (format in :mod:`lightning_insight.sinks._tb_summary`) and image summaries (plugin
``images``). Parsed reports and per-epoch scalar tables are cached per run and invalidated when the
data provider's last ``(step, wall_time)`` of a tag changes.
"""

from __future__ import annotations

import functools
import json
import logging
import mimetypes
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from lightning_insight.fairness.results import Alert
from lightning_insight.sinks._tb_summary import (
    PLUGIN_NAME,
    decode_json_tensor,
    encode_json,
    parse_plugin_content,
)
from lightning_insight.tensorboard_plugin.series import (
    EpochAxis,
    correlation,
    lagged_pairs,
    last_per_epoch,
)

log = logging.getLogger(__name__)

#: The frontend's files (``index.js`` and what it imports); tests may point it elsewhere.
STATIC_DIR = Path(__file__).parent / "static"

#: ``downsample`` for every read: far more than any run's epochs, so nothing is sampled away.
DOWNSAMPLE = 1_000_000_000

#: The report kinds the ``report`` route serves.
KINDS = ("fairness", "discovery", "comparison", "failure_modes")

_SCALARS_PLUGIN = "scalars"
_IMAGES_PLUGIN = "images"
_EPOCH_TAG = "epoch"
_DEFAULT_SOURCE = "val"
_FAIRNESS_TAG = re.compile(r"(?:^|/)report(?:/test)?(?:/dataloader_idx_\d+)?$")
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}

T = TypeVar("T")


class UnknownError(errors.NotFoundError):  # type: ignore[misc]
    """An unknown run, tag, kind, epoch, dimension, metric or file (HTTP 404)."""


class BadParameterError(errors.InvalidArgumentError):  # type: ignore[misc]
    """A missing or malformed request parameter (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Report:
    """One JSON report as the data provider holds it.

    Attributes:
        kind: One of :data:`KINDS`.
        tag: The summary tag (``insight/report``, ``insight/discovery/report``, ...).
        step: The summary's step.
        wall_time: The summary's wall time.
        epoch: The report's ``epoch`` (``None`` when it has none).
        source: The report's ``source`` (``val``, ``test``, ...; ``""`` when it has none or null).
        payload: The decoded JSON.
    """

    kind: str
    tag: str
    step: int
    wall_time: float
    epoch: int | None
    source: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _ScalarTable:
    epochs: list[int]
    tags: list[str]
    values: np.ndarray  # (len(tags), len(epochs)), NaN where none


def report_kind(tag: str) -> str | None:
    """The report kind a JSON summary tag holds, ``None`` for other tags.

    Example:
        >>> [report_kind(t) for t in ("insight/report", "insight/report/dataloader_idx_1",
        ...     "insight/report/test", "insight/discovery/report", "insight/slices")]
        ['fairness', 'fairness', 'fairness', 'discovery', None]
    """
    for kind in KINDS[1:]:
        if tag.endswith(f"/{kind}/report") or tag == f"{kind}/report":
            return kind
    return "fairness" if _FAIRNESS_TAG.search(tag) else None


def _none_if_nan(values: np.ndarray) -> list[float | None]:
    cells = values.astype(object)
    cells[~np.isfinite(values)] = None
    out: list[float | None] = cells.tolist()
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if np.isfinite(value) else None


def _alert_message(alert: Mapping[str, Any]) -> str:
    try:
        return Alert.from_dict(alert).message()
    except (KeyError, TypeError, ValueError):
        return str(alert.get("rule", ""))


class InsightBoardPlugin(base_plugin.TBPlugin):  # type: ignore[misc]
    """The InsightBoard tab: linked views of scalars, slices, fairness, correlations and reports.

    Args:
        context: TensorBoard's ``TBContext``; only its ``data_provider`` is used.

    Example:
        >>> from tensorboard.plugins import base_plugin
        >>> plugin = InsightBoardPlugin(base_plugin.TBContext(data_provider=None))
        >>> plugin.frontend_metadata().es_module_path, sorted(plugin.get_plugin_apps())[:3]
        ('/index.js', ['/correlation', '/fairness', '/image'])
    """

    plugin_name = PLUGIN_NAME

    def __init__(
        self, context: base_plugin.TBContext, *, warm_interval: float | None = None
    ) -> None:
        self._provider = context.data_provider
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], tuple[Hashable, Any]] = {}
        if warm_interval is not None and self._provider is not None:
            thread = threading.Thread(
                target=self._keep_warm,
                args=(warm_interval,),
                name="InsightBoardWarmer",
                daemon=True,
            )
            thread.start()

    def _keep_warm(self, interval: float) -> None:
        """Parse new reports and scalars as TensorBoard loads them, so the first page is fast.

        TensorBoard's Python loader converts every scalar event on each read (about 10 us each): a
        run with 2,000 scalar tags x 100 epochs takes seconds to read the first time. Reading it here,
        in the background, leaves the requests only the cheap check that nothing changed.
        """
        from tensorboard import context as tb_context

        while True:
            try:
                ctx = tb_context.RequestContext()
                for run in self._run_names(ctx, ""):
                    self._scalar_table(ctx, "", run)
            except Exception:  # never let the warmer die on a half-loaded log directory
                log.debug("InsightBoard warm-up failed; retrying", exc_info=True)
            time.sleep(interval)

    # ------------------------------------------------------------------ TensorBoard hooks
    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        """The routes, relative to ``/data/plugin/lightning_insight``."""
        return {
            "/runs": self._route(lambda r, c, e: self.runs_impl(c, e)),
            "/scalars": self._route(lambda r, c, e: self.scalars_impl(c, e, run=_text(r, "run"))),
            "/slices": self._route(
                lambda r, c, e: self.slices_impl(
                    c,
                    e,
                    run=_text(r, "run"),
                    dimension=_text(r, "dimension"),
                    metric=_text(r, "metric"),
                    source=_text(r, "source", _DEFAULT_SOURCE),
                )
            ),
            "/slice_table": self._route(
                lambda r, c, e: self.slice_table_impl(
                    c,
                    e,
                    run=_text(r, "run"),
                    epoch=_integer(r, "epoch"),
                    source=_text(r, "source", _DEFAULT_SOURCE),
                )
            ),
            "/fairness": self._route(
                lambda r, c, e: self.fairness_impl(
                    c, e, run=_text(r, "run"), source=_text(r, "source", _DEFAULT_SOURCE)
                )
            ),
            "/correlation": self._route(
                lambda r, c, e: self.correlation_impl(
                    c,
                    e,
                    run=_text(r, "run"),
                    series=_series_list(r),
                    lag=_integer(r, "lag", 0),
                    start=_optional_integer(r, "start"),
                    end=_optional_integer(r, "end"),
                )
            ),
            "/scatter": self._route(
                lambda r, c, e: self.scatter_impl(
                    c,
                    e,
                    run=_text(r, "run"),
                    x=_text(r, "x"),
                    y=_text(r, "y"),
                    lag=_integer(r, "lag", 0),
                    start=_optional_integer(r, "start"),
                    end=_optional_integer(r, "end"),
                )
            ),
            "/report": self._route(
                lambda r, c, e: self.report_impl(
                    c,
                    e,
                    run=_text(r, "run"),
                    kind=_text(r, "kind"),
                    epoch=_integer(r, "epoch"),
                    source=r.args.get("source"),
                )
            ),
            "/image": self._route(
                lambda r, c, e: (
                    self.image_impl(
                        c,
                        e,
                        run=_text(r, "run"),
                        tag=_text(r, "tag"),
                        step=_integer(r, "step"),
                        index=_integer(r, "index", 0),
                    ),
                    "image/png",
                )
            ),
            "/index.js": self._route(lambda r, c, e: self.static_impl(_plugin_path(r))),
            "/static/*": self._route(lambda r, c, e: self.static_impl(_plugin_path(r))),
        }

    def is_active(self) -> bool:
        """Whether any run holds this plugin's summaries (TensorBoard also checks the data itself)."""
        from tensorboard import context as tb_context

        if self._provider is None:
            return False
        listing = self._provider.list_tensors(
            tb_context.RequestContext(), experiment_id="", plugin_name=PLUGIN_NAME
        )
        return any(listing.values())

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        """An ES-module frontend (``index.js``) in the tab "InsightBoard"."""
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="InsightBoard")

    # ------------------------------------------------------------------ route wrappers
    def _route(self, handler: Callable[[Any, Any, str], Any]) -> Callable[..., Any]:
        @wrappers.Request.application  # type: ignore[untyped-decorator]
        def app(request: wrappers.Request) -> wrappers.Response:
            return self._respond(request, lambda c, e: handler(request, c, e))

        return app

    def _respond(
        self, request: wrappers.Request, compute: Callable[[Any, str], Any]
    ) -> wrappers.Response:
        ctx = plugin_util.context(request.environ)
        experiment = plugin_util.experiment_id(request.environ)
        try:
            payload = compute(ctx, experiment)
        except UnknownError as error:
            return _error(request, str(error), 404)
        except BadParameterError as error:
            return _error(request, str(error), 400)
        if isinstance(payload, tuple):  # (bytes, content type) from the image and static routes
            content, content_type = payload
        else:
            content, content_type = _encode(payload), "application/json"
        response: wrappers.Response = http_util.Respond(request, content, content_type)
        return response

    # ------------------------------------------------------------------ reading, with caches
    def _cached(self, key: tuple[str, ...], version: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            value: T = hit[1]
            return value
        value = compute()
        with self._lock:
            self._cache[key] = (version, value)
        return value

    def _run_names(self, ctx: Any, experiment: str) -> list[str]:
        runs = self._provider.list_runs(ctx, experiment_id=experiment)
        return sorted(run.run_name for run in runs)

    def _check_run(self, ctx: Any, experiment: str, run: str) -> None:
        if run not in self._run_names(ctx, experiment):
            raise UnknownError(f"Unknown run {run!r}.")

    def _reports(self, ctx: Any, experiment: str, run: str) -> list[Report]:
        """Every JSON report of ``run``, ordered by ``(step, wall_time)``."""
        listing = self._provider.list_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        ).get(run, {})
        reports: list[Report] = []
        for tag, meta in sorted(listing.items()):
            kind = report_kind(tag)
            if kind is None or parse_plugin_content(meta.plugin_content).get("kind") != "json":
                continue
            version = (meta.max_step, meta.max_wall_time)
            reports += self._cached(
                ("reports", experiment, run, tag),
                version,
                functools.partial(self._read_reports, ctx, experiment, run, tag, kind),
            )
        reports.sort(key=lambda r: (r.step, r.wall_time))
        return reports

    def _read_reports(
        self, ctx: Any, experiment: str, run: str, tag: str, kind: str
    ) -> list[Report]:
        data = self._provider.read_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=PLUGIN_NAME,
            downsample=DOWNSAMPLE,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        out = []
        for datum in data.get(run, {}).get(tag, []):
            try:
                payload = decode_json_tensor(datum.numpy)
            except (ValueError, UnicodeDecodeError):
                log.warning(
                    "InsightBoard skips an unreadable report %r at step %d", tag, datum.step
                )
                continue
            if not isinstance(payload, dict):
                continue
            epoch = payload.get("epoch")
            out.append(
                Report(
                    kind=kind,
                    tag=tag,
                    step=int(datum.step),
                    wall_time=float(datum.wall_time),
                    epoch=int(epoch) if isinstance(epoch, int | float) else None,
                    source=str(payload.get("source") or ""),
                    payload=payload,
                )
            )
        return out

    def _by_epoch(
        self, ctx: Any, experiment: str, run: str, kind: str, source: str | None
    ) -> dict[int, Report]:
        """The last report of each epoch for one kind (and, when given, one source)."""
        out: dict[int, Report] = {}
        for report in self._reports(ctx, experiment, run):
            if report.kind != kind or report.epoch is None:
                continue
            if source is not None and report.source != source:
                continue
            out[report.epoch] = report  # reports are in (step, wall_time) order: the last wins
        return dict(sorted(out.items()))

    def _fairness_by_epoch(
        self, ctx: Any, experiment: str, run: str, source: str
    ) -> dict[int, Report]:
        self._check_run(ctx, experiment, run)
        reports = self._by_epoch(ctx, experiment, run, "fairness", source)
        if not reports:
            raise UnknownError(f"Run {run!r} has no fairness report for source {source!r}.")
        return reports

    def _epoch_axis(
        self, ctx: Any, experiment: str, run: str, reports: list[Report]
    ) -> tuple[EpochAxis, list[int]]:
        """How steps map to epochs in ``run``, and the run's epochs (sorted)."""
        data = self._provider.read_scalars(
            ctx,
            experiment_id=experiment,
            plugin_name=_SCALARS_PLUGIN,
            downsample=DOWNSAMPLE,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[_EPOCH_TAG]),
        )
        epoch_data = data.get(run, {}).get(_EPOCH_TAG, [])
        report_epochs = {r.epoch for r in reports if r.epoch is not None}
        if epoch_data:
            axis = EpochAxis.from_epoch_scalar(
                [d.step for d in epoch_data],
                [d.wall_time for d in epoch_data],
                [d.value for d in epoch_data],
            )
        else:
            axis = EpochAxis.from_reports(
                [(r.step, r.epoch) for r in reports if r.epoch is not None]
            )
        epochs = sorted({int(e) for e in axis.epochs.tolist()} | report_epochs)
        return axis, epochs

    def _scalar_table(self, ctx: Any, experiment: str, run: str) -> _ScalarTable:
        listing = self._provider.list_scalars(
            ctx,
            experiment_id=experiment,
            plugin_name=_SCALARS_PLUGIN,
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        ).get(run, {})
        reports = self._reports(ctx, experiment, run)
        version = (
            tuple(sorted((tag, m.max_step, m.max_wall_time) for tag, m in listing.items())),
            tuple((r.tag, r.step, r.wall_time) for r in reports),
        )
        return self._cached(
            ("scalars", experiment, run),
            version,
            lambda: self._read_scalar_table(ctx, experiment, run, reports),
        )

    def _read_scalar_table(
        self, ctx: Any, experiment: str, run: str, reports: list[Report]
    ) -> _ScalarTable:
        axis, epochs = self._epoch_axis(ctx, experiment, run, reports)
        data = self._provider.read_scalars(
            ctx,
            experiment_id=experiment,
            plugin_name=_SCALARS_PLUGIN,
            downsample=DOWNSAMPLE,
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        ).get(run, {})
        tags = sorted(data)
        sizes = [len(data[tag]) for tag in tags]
        series = np.repeat(np.arange(len(tags)), sizes)
        points = [(d.step, d.wall_time, d.value) for tag in tags for d in data[tag]]
        array = np.array(points, dtype=np.float64).reshape(-1, 3)
        steps = array[:, 0].astype(np.int64)
        values = last_per_epoch(
            series,
            axis.epochs_of(steps, array[:, 1]),
            steps,
            array[:, 1],
            array[:, 2],
            num_series=len(tags),
            axis=epochs,
        )
        return _ScalarTable(epochs=epochs, tags=tags, values=values)

    # ------------------------------------------------------------------ *_impl: one per route
    def runs_impl(self, ctx: Any, experiment: str) -> dict[str, Any]:
        """Every run with its epochs, fairness sources, report kinds and the epochs of each report.

        ``report_epochs[kind][source]`` lists (sorted) the epochs at which ``run`` has a report of
        that kind from that source: the epochs at which the ``report`` route answers for
        ``kind``/``source``, and, for ``fairness``, ``slice_table`` for ``source``. Reports without
        a ``source`` are listed under ``""``.
        """
        runs = []
        for run in self._run_names(ctx, experiment):
            reports = self._reports(ctx, experiment, run)
            _, epochs = self._epoch_axis(ctx, experiment, run, reports)
            kinds = {kind: any(r.kind == kind for r in reports) for kind in KINDS}
            sources = sorted({r.source for r in reports if r.kind == "fairness"})
            found: dict[str, dict[str, set[int]]] = {kind: {} for kind in KINDS}
            for report in reports:
                if report.epoch is not None:
                    found[report.kind].setdefault(report.source, set()).add(report.epoch)
            report_epochs = {
                kind: {source: sorted(found[kind][source]) for source in sorted(found[kind])}
                for kind in KINDS
            }
            runs.append(
                {
                    "run": run,
                    "epochs": epochs,
                    "sources": sources,
                    "kinds": kinds,
                    "report_epochs": report_epochs,
                }
            )
        return {"runs": runs}

    def scalars_impl(self, ctx: Any, experiment: str, *, run: str) -> dict[str, Any]:
        """Every scalar tag of ``run``, one value (the epoch's last) per epoch of the run."""
        self._check_run(ctx, experiment, run)
        table = self._scalar_table(ctx, experiment, run)
        return {
            "run": run,
            "epochs": table.epochs,
            "series": {
                tag: _none_if_nan(row) for tag, row in zip(table.tags, table.values, strict=True)
            },
        }

    def slices_impl(
        self,
        ctx: Any,
        experiment: str,
        *,
        run: str,
        dimension: str,
        metric: str,
        source: str = _DEFAULT_SOURCE,
    ) -> dict[str, Any]:
        """One line over epochs per slice of ``dimension`` for ``metric``, with the overall line."""
        reports = self._fairness_by_epoch(ctx, experiment, run, source)
        names: dict[str, None] = {}
        for report in reports.values():
            for name in report.payload.get("dimensions", {}).get(dimension, []):
                names.setdefault(name, None)
        if not names:
            raise UnknownError(f"Run {run!r} has no dimension {dimension!r}.")
        if not any(
            metric in report.payload.get("overall", {})
            or any(metric in report.payload.get("slices", {}).get(n, {}) for n in names)
            for report in reports.values()
        ):
            raise UnknownError(f"Run {run!r} has no metric {metric!r} for {dimension!r}.")
        lines = []
        for name in names:
            cells = [r.payload.get("slices", {}).get(name) for r in reports.values()]
            lines.append(
                {
                    "slice": name,
                    "values": [_number(c.get(metric)) if c else None for c in cells],
                    "counts": [_count(c) for c in cells],
                    "excluded": [
                        r.payload.get("excluded", {}).get(name) if c else None
                        for r, c in zip(reports.values(), cells, strict=True)
                    ],
                }
            )
        return {
            "run": run,
            "dimension": dimension,
            "metric": metric,
            "source": source,
            "epochs": list(reports),
            "overall": [
                _number(r.payload.get("overall", {}).get(metric)) for r in reports.values()
            ],
            "slices": lines,
        }

    def slice_table_impl(
        self, ctx: Any, experiment: str, *, run: str, epoch: int, source: str = _DEFAULT_SOURCE
    ) -> dict[str, Any]:
        """Every slice of the epoch's report: count, exclusion, each metric and its difference."""
        reports = self._fairness_by_epoch(ctx, experiment, run, source)
        if epoch not in reports:
            raise UnknownError(f"Run {run!r} has no {source!r} fairness report at epoch {epoch}.")
        payload = reports[epoch].payload
        overall = {k: _number(v) for k, v in payload.get("overall", {}).items()}
        slices = payload.get("slices", {})
        dimensions = {d: list(names) for d, names in payload.get("dimensions", {}).items()}
        metrics: dict[str, None] = dict.fromkeys(m for m in overall if m != "count")
        for values in slices.values():
            metrics.update(dict.fromkeys(m for m in values if m != "count"))
        excluded = payload.get("excluded", {})
        rows = []
        for dimension, names in dimensions.items():
            for name in names:
                cell = slices.get(name, {})
                values = {m: _number(cell.get(m)) for m in metrics}
                difference = {
                    m: None if v is None or overall.get(m) is None else v - overall[m]  # type: ignore[operator]
                    for m, v in values.items()
                }
                rows.append(
                    {
                        "slice": name,
                        "dimension": dimension,
                        "count": _count(cell),
                        "excluded": excluded.get(name),
                        "values": values,
                        "difference": difference,
                    }
                )
        return {
            "run": run,
            "epoch": epoch,
            "source": source,
            "metrics": list(metrics),
            "dimensions": dimensions,
            "overall": {m: overall.get(m) for m in metrics},
            "rows": rows,
        }

    def fairness_impl(
        self, ctx: Any, experiment: str, *, run: str, source: str = _DEFAULT_SOURCE
    ) -> dict[str, Any]:
        """Each indicator per dimension over epochs, confidence bands, the rules and fired alerts."""
        reports = self._fairness_by_epoch(ctx, experiment, run, source)
        names: dict[str, dict[str, None]] = {}
        for report in reports.values():
            for dimension, values in report.payload.get("indicators", {}).items():
                names.setdefault(dimension, {}).update(dict.fromkeys(values))
        indicators: dict[str, dict[str, list[float | None]]] = {}
        bands: dict[str, dict[str, dict[str, list[float | None]]]] = {}
        for dimension, keys in names.items():

            def line(key: str, dimension: str = dimension) -> list[float | None]:
                return [
                    _number(r.payload.get("indicators", {}).get(dimension, {}).get(key))
                    for r in reports.values()
                ]

            for key in keys:
                if key.endswith(("_low", "_high")) and key.rsplit("_", 1)[0] in keys:
                    continue
                indicators.setdefault(dimension, {})[key] = line(key)
                if f"{key}_low" in keys and f"{key}_high" in keys:
                    bands.setdefault(dimension, {})[key] = {
                        "low": line(f"{key}_low"),
                        "high": line(f"{key}_high"),
                    }
        rules: dict[str, dict[str, Any]] = {}
        alerts = []
        for epoch, report in reports.items():
            for rule in report.payload.get("rules", []):
                rules[str(rule.get("rule"))] = {
                    "rule": rule.get("rule"),
                    "dimension": rule.get("dimension"),
                    "name": rule.get("name"),
                    "op": rule.get("op"),
                    "threshold": _number(rule.get("threshold")),
                }
            for alert in report.payload.get("alerts", []):
                alerts.append(
                    {
                        **alert,
                        "epoch": alert.get("epoch", epoch),
                        "value": _number(alert.get("value")),
                        "threshold": _number(alert.get("threshold")),
                        "message": _alert_message(alert),
                    }
                )
        return {
            "run": run,
            "source": source,
            "epochs": list(reports),
            "indicators": indicators,
            "bands": bands,
            "rules": list(rules.values()),
            "alerts": alerts,
        }

    def _series_rows(
        self,
        ctx: Any,
        experiment: str,
        run: str,
        tags: list[str],
        *,
        lag: int,
        start: int | None,
        end: int | None,
    ) -> tuple[list[int], np.ndarray]:
        """The run's epochs in ``[start, end]`` and the tags' values at them (after the checks)."""
        if start is not None and end is not None and start > end:
            raise BadParameterError(
                f"Expected `start` <= `end` (an inclusive epoch range), but got {start} > {end}."
            )
        self._check_run(ctx, experiment, run)
        table = self._scalar_table(ctx, experiment, run)
        index = {tag: i for i, tag in enumerate(table.tags)}
        missing = [tag for tag in tags if tag not in index]
        if missing:
            raise UnknownError(f"Run {run!r} has no scalar {missing[0]!r}.")
        # The lag is bounded by the run's epochs, not the range's: a range too short for the lag
        # has no pairs (null cells), like any other series with too few values.
        if abs(lag) >= max(len(table.epochs), 1):
            raise BadParameterError(
                f"Expected `lag` with |lag| < {len(table.epochs)} (the run's epochs), but got {lag}."
            )
        columns = [
            i
            for i, epoch in enumerate(table.epochs)
            if (start is None or epoch >= start) and (end is None or epoch <= end)
        ]
        rows = table.values[[index[tag] for tag in tags]][:, columns]
        return [table.epochs[i] for i in columns], rows

    def correlation_impl(
        self,
        ctx: Any,
        experiment: str,
        *,
        run: str,
        series: list[str],
        lag: int = 0,
        start: int | None = None,
        end: int | None = None,
    ) -> dict[str, Any]:
        """Pearson and Spearman correlations across epochs between scalar series, with a lag.

        Only values at epochs in ``[start, end]`` (inclusive; either end open when ``None``) take
        part: a pair ``(e, e + lag)`` counts when both epochs lie in the range.
        """
        if len(series) < 2:
            raise BadParameterError(
                f"Expected at least 2 series (scalar tags), but got {len(series)}."
            )
        epochs, rows = self._series_rows(
            ctx, experiment, run, series, lag=lag, start=start, end=end
        )
        first, second = lagged_pairs(epochs, lag)
        size = len(series)
        pearson: list[list[float | None]] = [[None] * size for _ in range(size)]
        spearman: list[list[float | None]] = [[None] * size for _ in range(size)]
        counts = [[0] * size for _ in range(size)]
        for i in range(size):
            for j in range(size):
                p, s, n = correlation(rows[i][first], rows[j][second])
                pearson[i][j], spearman[i][j], counts[i][j] = p, s, n
        return {
            "run": run,
            "series": series,
            "lag": lag,
            "start": start,
            "end": end,
            "epochs": [epochs[i] for i in first.tolist()],
            "pearson": pearson,
            "spearman": spearman,
            "n": counts,
        }

    def scatter_impl(
        self,
        ctx: Any,
        experiment: str,
        *,
        run: str,
        x: str,
        y: str,
        lag: int = 0,
        start: int | None = None,
        end: int | None = None,
    ) -> dict[str, Any]:
        """The points ``(x at epoch e, y at epoch e + lag)`` where both are finite.

        With ``start``/``end``, only the points whose ``e`` and ``e + lag`` both lie in the range.
        """
        epochs, rows = self._series_rows(
            ctx, experiment, run, [x, y], lag=lag, start=start, end=end
        )
        first, second = lagged_pairs(epochs, lag)
        points = [
            {"epoch": epochs[i], "x": float(rows[0][i]), "y": float(rows[1][j])}
            for i, j in zip(first.tolist(), second.tolist(), strict=True)
            if np.isfinite(rows[0][i]) and np.isfinite(rows[1][j])
        ]
        return {
            "run": run,
            "x": x,
            "y": y,
            "lag": lag,
            "start": start,
            "end": end,
            "points": points,
        }

    def report_impl(
        self,
        ctx: Any,
        experiment: str,
        *,
        run: str,
        kind: str,
        epoch: int,
        source: str | None = None,
    ) -> dict[str, Any]:
        """The report of ``kind`` at ``epoch`` and the images its monitor wrote at that step.

        For ``fairness`` without a ``source``, the ``val`` report is preferred.
        """
        self._check_run(ctx, experiment, run)
        if kind not in KINDS:
            raise UnknownError(f"Unknown report kind {kind!r}; expected one of {', '.join(KINDS)}.")
        chosen = None
        if kind == "fairness" and source is None:
            chosen = self._by_epoch(ctx, experiment, run, kind, _DEFAULT_SOURCE).get(epoch)
        if chosen is None:
            chosen = self._by_epoch(ctx, experiment, run, kind, source).get(epoch)
        if chosen is None:
            raise UnknownError(f"Run {run!r} has no {kind} report at epoch {epoch}.")
        images = []
        if kind != "fairness":
            images = self._images_at(
                ctx, experiment, run, chosen.tag[: -len("report")], chosen.step
            )
        return {
            "run": run,
            "kind": kind,
            "epoch": epoch,
            "step": chosen.step,
            "source": chosen.source,
            "report": chosen.payload,
            "images": images,
        }

    def _images_at(
        self, ctx: Any, experiment: str, run: str, prefix: str, step: int
    ) -> list[dict[str, Any]]:
        listing = self._provider.list_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=_IMAGES_PLUGIN,
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        ).get(run, {})
        tags = sorted(tag for tag in listing if tag.startswith(prefix))
        if not tags:
            return []
        data = self._provider.read_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=_IMAGES_PLUGIN,
            downsample=DOWNSAMPLE,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=tags),
        ).get(run, {})
        images = []
        for tag in tags:
            for datum in data.get(tag, []):
                if datum.step != step:
                    continue
                for index in range(max(len(datum.values) - 2, 0)):  # [width, height, images...]
                    query = urllib.parse.urlencode(
                        {"run": run, "tag": tag, "step": step, "index": index}
                    )
                    images.append(
                        {"tag": tag, "step": step, "index": index, "url": f"image?{query}"}
                    )
        return images

    def image_impl(
        self, ctx: Any, experiment: str, *, run: str, tag: str, step: int, index: int = 0
    ) -> bytes:
        """The encoded bytes of image ``index`` of the image summary ``tag`` at ``step``."""
        self._check_run(ctx, experiment, run)
        data = self._provider.read_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=_IMAGES_PLUGIN,
            downsample=DOWNSAMPLE,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        ).get(run, {})
        if tag not in data:
            raise UnknownError(f"Run {run!r} has no image summary {tag!r}.")
        for datum in data[tag]:
            if datum.step == step:
                if not 0 <= index < len(datum.values) - 2:
                    raise UnknownError(f"Image {tag!r} at step {step} has no index {index}.")
                blob: bytes = self._provider.read_blob(
                    ctx, blob_key=datum.values[index + 2].blob_key
                )
                return blob
        raise UnknownError(f"Image {tag!r} of run {run!r} has no step {step}.")

    def static_impl(self, path: str) -> tuple[bytes, str]:
        """A frontend file: ``index.js`` or ``static/<name>``; nothing outside :data:`STATIC_DIR`.

        Raises:
            UnknownError: For any other path, including ``..`` parts, absolute paths and missing files.
        """
        root = Path(STATIC_DIR).resolve()
        if path == "index.js":
            parts = ["index.js"]
        elif path.startswith("static/"):
            parts = path[len("static/") :].split("/")
        else:
            raise UnknownError(f"No frontend file {path!r}.")
        if not all(_SAFE_PART.match(part) for part in parts):
            raise UnknownError(f"No frontend file {path!r}.")
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise UnknownError(f"No frontend file {path!r}.")
        content_type = _CONTENT_TYPES.get(target.suffix)
        if content_type is None:
            content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return target.read_bytes(), content_type


# ---------------------------------------------------------------------- request parameters
def _text(request: wrappers.Request, name: str, default: str | None = None) -> str:
    value = request.args.get(name, default)
    if value is None or value == "":
        raise BadParameterError(f"Expected the parameter `{name}`, but it is missing.")
    return str(value)


def _integer(request: wrappers.Request, name: str, default: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        if default is None:
            raise BadParameterError(
                f"Expected the parameter `{name}` (an integer), but it is missing."
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadParameterError(
            f"Expected the parameter `{name}` to be an integer, but got {raw!r}."
        ) from None


def _optional_integer(request: wrappers.Request, name: str) -> int | None:
    if request.args.get(name) in (None, ""):
        return None
    return _integer(request, name)


def _series_list(request: wrappers.Request) -> list[str]:
    """The ``series`` tags: one comma-separated value, or repeated values taken literally.

    Repeated parameters let a tag hold a comma (``series=loss,ema&series=lr``); a single value is
    split on commas. Duplicates and empty names are dropped, the order kept.
    """
    raw = request.args.getlist("series")
    names = raw[0].split(",") if len(raw) == 1 else raw
    return list(dict.fromkeys(name for name in names if name))


def _count(cell: Mapping[str, Any] | None) -> int | None:
    value = _number(cell.get("count")) if cell else None
    return None if value is None else round(value)


def _encode(payload: Any) -> bytes:
    """Strict JSON; answers are built NaN-free, so the slower :func:`encode_json` is the fallback."""
    try:
        text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return encode_json(payload)
    return text.encode("utf-8")


def _error(request: wrappers.Request, message: str, code: int) -> wrappers.Response:
    response: wrappers.Response = http_util.Respond(
        request, encode_json({"error": message}), "application/json", code=code
    )
    return response


def _plugin_path(request: wrappers.Request) -> str:
    """The request path below ``/data/plugin/lightning_insight/`` (decoded, as werkzeug gives it)."""
    path: str = request.path
    return path.split(f"/data/plugin/{PLUGIN_NAME}/", 1)[-1]
