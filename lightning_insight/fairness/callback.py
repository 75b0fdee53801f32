"""FairnessMonitor: sliced metrics, fairness gaps and alerts every validation epoch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from lightning_insight.batch import Adapter, read_batch
from lightning_insight.fairness.alerts import CORRECTIONS, AlertTracker, parse_alert_rule
from lightning_insight.fairness.functional import (
    check_confidence,
    check_indicators,
    check_metrics,
    check_positive_int,
    check_reference,
    check_task,
    check_threshold,
    metric_names,
    report_from_counts,
    report_from_detection,
)
from lightning_insight.fairness.indicators import indicator_names
from lightning_insight.fairness.results import Alert, SliceReport
from lightning_insight.metrics.classification import SlicedConfusion
from lightning_insight.metrics.detection import SlicedDetection
from lightning_insight.sinks import Sink
from lightning_insight.sinks.callback import SinkCallback, scheduled
from lightning_insight.slicing.spec import parse_slice_specs

log = logging.getLogger(__name__)

OnAlert = str | Callable[[Alert], Any]


class FairnessAlertWarning(UserWarning):
    """Warned when an alert rule fires with ``on_alert="warn"`` (filterable with ``warnings``)."""


class FairnessMonitor(SinkCallback):
    r"""Sliced metrics, group-fairness gaps and alerts at the end of every validation (and test) epoch.

    The LightningModule stays unchanged: ``validation_step`` returns ``{"preds": ..., "target": ...}`` (or
    just the predictions when the batch carries the target) and the batch carries the attributes
    (``batch["attributes"]``, top-level keys, or ``(x, y, meta)``) and a ``sample_id``. Anything else
    goes through ``adapter``.

    For ``task="detection"``, ``preds`` and ``target`` are lists of per-image dicts in torchmetrics'
    format (``boxes`` xyxy, ``scores``, ``labels``; targets may add ``iscrowd`` and per-box attributes
    such as ``occluded``). An attribute of the slices is image-level when the batch carries it (one value
    per image), object-level when every target dict carries it, and ``box_area`` is computed from the
    boxes; see :mod:`lightning_insight.metrics.detection` for what each metric means in a slice.

    Args:
        task: ``"binary"``, ``"multiclass"`` or ``"detection"``.
        slices: dimension specs (``"weather"``, ``"weather&timeofday"``, ``"age:0,18,65,inf"``).
        metrics: metric names to report (default: all of the task's).
        indicators: fairness indicators (default: all of the task's).
        alerts: rule strings such as ``"equalized_odds_difference > 0.1"`` or
            ``"weather: accuracy_ratio < 0.8"``.
        min_support: slices with fewer samples are reported but left out of gaps and alerts (detection:
            images, or boxes in dimensions with a per-box attribute).
        every_n_epochs: evaluate every n-th validation epoch of ``fit`` (``validate``/``test`` always).
        adapter: ``(outputs, batch) -> BatchData`` for batch layouts the defaults do not read.
        sinks: ``None`` for one sink per attached logger plus the CSV report, or a list of Sink objects
            and names (``"tensorboard"``, ``"wandb"``, ``"csv"``, ``"memory"``).
        on_alert: ``"warn"``, ``"stop"`` (every rank stops together) or a callable receiving each Alert
            (called on global rank 0).
        prefix: first part of every log key.
        patience: evaluations in a row a rule must hold before it fires.
        threshold: probability at or above which a binary prediction is positive.
        num_classes: number of classes for multiclass label predictions; for detection, labels must
            lie in ``[0, num_classes)`` (``None``: the categories come from the data).
        reference: dimension -> reference slice; gaps are then measured to it.
        max_slices: the most distinct values one attribute may take.
        bootstrap: ``B`` Poisson bootstrap replicates (0: none). Every per-slice metric, overall
            metric and indicator then also has ``<name>_low``/``<name>_high``, its ``confidence``
            percentile interval, in the report and every sink. Each sample's weights come from its
            ``sample_id`` (needed in the batch for classification), so DDP and one process agree.
            Detection: a bootstrap over images of map, map_50, map_75, mar_100 and recall_50, one
            COCO accumulation per replicate and slice on the epoch's one matching pass (seconds per
            epoch at B=200; see docs/benchmarks.md).
        confidence: the intervals' level, in ``(0, 1)``.
        correction: ``None``, ``"holm"`` or ``"bh"``: ``@ci`` indicator rules test their dimensions
            together with that multiple-testing correction (see :mod:`lightning_insight.fairness.alerts`).

    Raises:
        ValueError: for an unknown task, metric, indicator, malformed alert rule, or bad numbers; each
            message names the argument, what was expected and what was got.

    Logged keys (``{s}`` is ``/dataloader_idx_k`` with several dataloaders, after ``/test`` for
    ``trainer.test()``):
        - to the sinks: ``insight/overall/{metric}{s}``, ``insight/slice/{dimension}/{value}/{metric}{s}``,
          ``insight/gap/{dimension}/{indicator}{s}``, ``insight/worst/accuracy{s}`` (detection:
          ``insight/worst/map{s}``),
          ``insight/alert/{rule}{s}`` (1 when fired, else 0), a table ``insight/slices{s}``, a markdown
          text and a JSON report ``insight/report{s}`` (read by InsightBoard).
        - through ``pl_module.log`` (``logger=False``, ``sync_dist=True``) so EarlyStopping and
          ModelCheckpoint can monitor them: every ``insight/gap/...`` and ``insight/worst/...`` key
          (point values; the ``_low``/``_high`` bounds of a bootstrap go to the sinks only).

    Example:
        >>> monitor = FairnessMonitor("binary", ["weather", "weather&timeofday"],
        ...                           alerts=["equalized_odds_difference > 0.1"], min_support=20)
        >>> monitor.state_key
        "FairnessMonitor{'task': 'binary', 'slices': ['weather', 'weather&timeofday'], 'prefix': 'insight'}"
    """

    def __init__(
        self,
        task: str,
        slices: Sequence[str] | str,
        *,
        metrics: Sequence[str] | None = None,
        indicators: Sequence[str] | None = None,
        alerts: Sequence[str] = (),
        min_support: int = 30,
        every_n_epochs: int = 1,
        adapter: Adapter | None = None,
        sinks: Sequence[Sink | str] | None = None,
        on_alert: OnAlert = "warn",
        prefix: str = "insight",
        patience: int = 1,
        threshold: float = 0.5,
        num_classes: int | None = None,
        reference: Mapping[str, str] | None = None,
        max_slices: int = 1000,
        bootstrap: int = 0,
        confidence: float = 0.95,
        correction: str | None = None,
    ) -> None:
        super().__init__(sinks)
        check_task(task)
        self.specs = parse_slice_specs(slices if isinstance(slices, str) else list(slices))
        self.task = task
        self.metrics = check_metrics(metrics, task, num_classes)
        self.indicators = check_indicators(indicators, task)
        if isinstance(alerts, str):
            alerts = [alerts]
        known = set(indicator_names(task)) | set(metric_names(task, num_classes))
        self.rules = tuple(parse_alert_rule(a, known_names=known) for a in alerts)
        dimensions = [s.name for s in self.specs]
        for rule in self.rules:
            if rule.scope is not None and rule.scope not in dimensions:
                raise ValueError(
                    f"Expected the scope of alert rule {rule.text!r} to be a dimension of `slices` {dimensions}, "
                    f"but got {rule.scope!r}."
                )
        for name, value in (
            ("min_support", min_support),
            ("every_n_epochs", every_n_epochs),
            ("patience", patience),
            ("max_slices", max_slices),
        ):
            check_positive_int(name, value)
        check_threshold(threshold)
        if not (on_alert in ("warn", "stop") or callable(on_alert)):
            raise ValueError(
                f"Expected argument `on_alert` to be 'warn', 'stop' or a callable, but got {on_alert!r}."
            )
        if adapter is not None and not callable(adapter):
            raise TypeError(
                f"Expected argument `adapter` to be a callable (outputs, batch) -> BatchData, but got {adapter!r}."
            )
        if not isinstance(prefix, str) or not prefix or prefix.endswith("/"):
            raise ValueError(
                f"Expected argument `prefix` to be a non-empty string without a trailing '/', but got {prefix!r}."
            )
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
            raise ValueError(
                f"Expected argument `bootstrap` to be an int >= 0, but got {bootstrap!r}."
            )
        check_confidence(confidence)
        needs_intervals = [rule.text for rule in self.rules if rule.ci]
        if needs_intervals and not bootstrap:
            raise ValueError(
                f"Expected argument `bootstrap` to be > 0 for the '@ci' alert rules {needs_intervals}, "
                "but got 0. HINT: pass bootstrap=200."
            )
        if correction is not None and correction not in CORRECTIONS:
            raise ValueError(
                f"Expected argument `correction` to be None or one of {CORRECTIONS}, but got "
                f"{correction!r}."
            )
        self.bootstrap = bootstrap
        self.confidence = float(confidence)
        self.correction = correction
        self.reference = check_reference(reference, self.specs)
        self.min_support = min_support
        self.every_n_epochs = every_n_epochs
        self.adapter = adapter
        self.on_alert = on_alert
        self.prefix = prefix
        self.patience = patience
        self.threshold = float(threshold)
        self.num_classes = num_classes
        self.max_slices = max_slices
        self.history: list[SliceReport] = []
        self.alerts: list[Alert] = []
        self._tracker = AlertTracker(
            self.rules, patience=patience, correction=correction, confidence=confidence
        )
        self._attribute_names = list(
            dict.fromkeys(a.name for s in self.specs for a in s.attributes)
        )
        self._metrics: dict[str, SlicedConfusion | SlicedDetection] = {}
        self._index_states: dict[str, Any] = {}

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            task=self.task, slices=[s.name for s in self.specs], prefix=self.prefix
        )

    # ------------------------------------------------------------------ set-up
    def _start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, num_loaders: int
    ) -> None:
        if not scheduled(trainer, self.every_n_epochs):
            return
        for idx in range(max(num_loaders, 1)):
            key = f"{stage}/{idx}"
            if key not in self._metrics:
                metric: SlicedConfusion | SlicedDetection
                if self.task == "detection":
                    metric = SlicedDetection(
                        specs=self.specs,
                        num_classes=self.num_classes,
                        max_slices=self.max_slices,
                        bootstrap=self.bootstrap,
                    )
                else:
                    metric = SlicedConfusion(
                        task=self.task,
                        specs=self.specs,
                        threshold=self.threshold,
                        num_classes=self.num_classes,
                        max_slices=self.max_slices,
                        bootstrap=self.bootstrap,
                    )
                if key in self._index_states:
                    metric.index.load_state_dict(self._index_states.pop(key))
                self._metrics[key] = metric
            self._metrics[key].reset()
            self._metrics[key].to(pl_module.device)

    def _batch(
        self, trainer: pl.Trainer, stage: str, outputs: Any, batch: Any, dataloader_idx: int
    ) -> None:
        if not scheduled(trainer, self.every_n_epochs):
            return
        # detection: an attribute missing from the batch may be a per-box key of the targets
        optional = self._attribute_names if self.task == "detection" else ()
        data = read_batch(
            outputs,
            batch,
            attribute_names=self._attribute_names,
            adapter=self.adapter,
            optional_names=optional,
        )
        self._metrics[f"{stage}/{dataloader_idx}"].update(
            data.preds, data.target, data.attributes, data.sample_ids
        )

    def _end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, num_loaders: int
    ) -> None:
        if not scheduled(trainer, self.every_n_epochs):
            return
        fired_any = False
        for idx in range(max(num_loaders, 1)):
            metric = self._metrics.get(f"{stage}/{idx}")
            if metric is None:
                continue
            loader = f"/dataloader_idx_{idx}" if num_loaders > 1 else ""
            source = stage + loader
            # test() logs at the step of the last validation: its own keys keep the curves apart
            suffix = ("" if stage == "val" else f"/{stage}") + loader
            result = metric.compute()  # a collective: every rank calls it
            options: dict[str, Any] = {
                "metrics": self.metrics,
                "indicators": self.indicators,
                "min_support": self.min_support,
                "reference": self.reference,
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "source": source,
            }
            make_report = report_from_detection if self.task == "detection" else report_from_counts
            report = make_report(result, confidence=self.confidence, **options)  # type: ignore[arg-type]
            self._record(report)
            fired = self._tracker.update(report)
            self.alerts.extend(fired)
            fired_any = fired_any or bool(fired)
            scalars = report.scalars(self.prefix, suffix)
            self._emit(report, scalars, fired, suffix)
            headline = (f"{self.prefix}/gap/", f"{self.prefix}/worst/")
            # point values only: the interval bounds go to the sinks, not through pl_module.log
            bounds = (f"_low{suffix}", f"_high{suffix}")
            self.log_headline(
                pl_module,
                {
                    k: v
                    for k, v in scalars.items()
                    if k.startswith(headline) and not k.endswith(bounds)
                },
            )
            self._act(trainer, fired)
            metric.reset()
        # any rank's decision stops every rank together (reports are identical after sync anyway)
        stop = self.on_alert == "stop" and trainer.state.fn == "fit"
        if stop and trainer.strategy.reduce_boolean_decision(fired_any, all=False):
            trainer.should_stop = True

    def _record(self, report: SliceReport) -> None:
        self.history = [
            r
            for r in self.history
            if (r.source, r.epoch, r.step) != (report.source, report.epoch, report.step)
        ]
        self.history.append(report)

    def _emit(
        self, report: SliceReport, scalars: dict[str, float], fired: list[Alert], suffix: str
    ) -> None:
        if self._sinks is None:
            return
        step = int(report.step or 0)
        scalars = dict(scalars)
        fired_rules = {a.rule for a in fired}
        for rule in self.rules:
            scalars[f"{self.prefix}/alert/{rule.key}{suffix}"] = (
                1.0 if rule.text in fired_rules else 0.0
            )
        self._sinks.scalars(scalars, step=step)
        self._sinks.table(f"{self.prefix}/slices{suffix}", report.rows(), step=step)
        text = report.markdown()
        if fired:
            text += "\n\n**Alerts**\n\n" + "\n".join(f"- {a.message()}" for a in fired)
        self._sinks.text(f"{self.prefix}/report{suffix}", text, step=step)
        self._sinks.json(
            f"{self.prefix}/report{suffix}",
            {
                **report.to_dict(),
                "alerts": [a.to_dict() for a in fired],
                "rules": [
                    {
                        "rule": rule.text,
                        "dimension": rule.scope,
                        "name": rule.name,
                        "op": rule.op,
                        "threshold": rule.threshold,
                    }
                    for rule in self.rules
                ],
            },
            step=step,
        )
        self._sinks.flush()

    def _act(self, trainer: pl.Trainer, fired: list[Alert]) -> None:
        for alert in fired:
            if self.on_alert == "warn":
                rank_zero_warn(alert.message(), category=FairnessAlertWarning)
            elif self.on_alert == "stop":
                log.warning("%s; stopping training (on_alert='stop').", alert.message())
            elif callable(self.on_alert) and trainer.is_global_zero:
                self.on_alert(alert)

    # ------------------------------------------------------------------ hooks
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val", len(trainer.num_val_batches))

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch(trainer, "val", outputs, batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "val", len(trainer.num_val_batches))

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test", len(trainer.num_test_batches))

    @override
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch(trainer, "test", outputs, batch, dataloader_idx)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "test", len(trainer.num_test_batches))

    # ------------------------------------------------------------------ checkpointing and pickling
    @override
    def state_dict(self) -> dict[str, Any]:
        indexes = dict(self._index_states)
        indexes.update({k: m.index.state_dict() for k, m in self._metrics.items()})
        return {
            "history": [r.to_dict() for r in self.history],
            "alerts": [a.to_dict() for a in self.alerts],
            "tracker": self._tracker.state_dict(),
            "indexes": indexes,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [SliceReport.from_dict(r) for r in state_dict.get("history", [])]
        self.alerts = [Alert.from_dict(a) for a in state_dict.get("alerts", [])]
        self._tracker.load_state_dict(state_dict.get("tracker", {}))
        self._index_states = dict(state_dict.get("indexes", {}))
        for key, metric in self._metrics.items():
            if key in self._index_states:
                metric.index.load_state_dict(self._index_states.pop(key))
