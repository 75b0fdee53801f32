"""SliceDiscoveryMonitor: metadata-free slices from attributions, every few validation epochs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from lightning_insight.discovery.finder import SliceFinder, read_probe_batch
from lightning_insight.discovery.results import SliceDiscoveryReport
from lightning_insight.fairness.functional import check_positive_int
from lightning_insight.sinks import Sink
from lightning_insight.sinks.callback import SinkCallback, object_gather, scheduled

log = logging.getLogger(__name__)

ProbeAdapter = Callable[[Any], tuple[torch.Tensor, torch.Tensor, Any]]


class DiscoveryAlertWarning(UserWarning):
    """Warned when a discovered slice is large and much worse than the whole (``on_alert="warn"``)."""


class SliceDiscoveryMonitor(SinkCallback):
    r"""Finds slices without metadata from the model's own attributions (after AttributionScanner).

    Every ``every_n_epochs`` validation epochs of ``fit`` (and at every ``trainer.validate()``), a fixed,
    seeded probe set of up to ``max_samples`` validation images gets a GradCAM map (or Integrated
    Gradients / saliency) at ``layer``, batch by batch as validation runs; at the epoch's end their
    attribution-weighted features are clustered into slices (:class:`SliceFinder`), ranked worst first,
    matched to the previous epoch's slices so ids stay stable, and emitted with an attribution mosaic for
    the worst slices. The LightningModule stays unchanged: the batch carries the images, labels and a
    ``sample_id`` (``{"image", "target", "sample_id"}``, or ``(x, y[, meta])``), or ``adapter`` reads them.

    Args:
        layer: dotted name of a module whose output is a 4-D feature map (``"backbone.2"``).
        method: ``"gradcam"``, ``"integrated_gradients"`` or ``"saliency"``.
        every_n_epochs: run on every n-th validation epoch of ``fit`` (attributions cost a few forward
            passes of the probe set); ``validate()`` always runs.
        max_samples: size of the probe set.
        num_slices: number of clusters (default ``N / 50`` within [8, 64] for N probe images).
        target: attribute the ``"predicted"`` class or the ``"label"``.
        random_state: seed of the probe set and the clustering.
        mosaics: how many of the worst slices get a mosaic image.
        alert_min_size: a slice must hold at least this many probe samples to alert.
        alert_lift: ... and an error rate at least this many times the overall one.
        on_alert: ``"warn"`` (a :class:`DiscoveryAlertWarning`) or a callable receiving the slice.
        adapter: ``batch -> (inputs, labels, sample_ids)`` for batch layouts the defaults do not read.
        sinks: ``None`` for one sink per attached logger plus the CSV report, or sinks / names.
        prefix: first part of every log key.
        finder_options: further keyword arguments of :class:`SliceFinder` (``pca_components``,
            ``context``, ``mislabel_fraction``, ...).

    Raises:
        ValueError: for a bad number, method or target, naming the argument (the layer is checked at
            the first batch, against the model).

    Logged keys:
        - to the sinks: ``insight/discovery/slice_{id}/{metric}``, ``insight/discovery/worst/error_rate``,
          ``insight/discovery/worst/lift``, ``insight/discovery/num_slices``, ``insight/discovery/alert``
          (1 when a slice alerted), a table ``insight/discovery/slices`` (long format, dimension
          ``discovered``), a markdown summary and a JSON report ``insight/discovery/report``, and images
          ``insight/discovery/mosaic/slice_{id}``.
        - through ``pl_module.log`` (``logger=False``, ``sync_dist=True``):
          ``insight/discovery/worst/error_rate`` and ``insight/discovery/worst/lift``.

    Example:
        >>> monitor = SliceDiscoveryMonitor("backbone.2", every_n_epochs=2, max_samples=500)
        >>> monitor.state_key
        "SliceDiscoveryMonitor{'layer': 'backbone.2', 'method': 'gradcam', 'prefix': 'insight'}"
    """

    def __init__(
        self,
        layer: str,
        *,
        method: str = "gradcam",
        every_n_epochs: int = 2,
        max_samples: int = 2000,
        num_slices: int | None = None,
        target: str = "predicted",
        random_state: int = 0,
        mosaics: int = 3,
        alert_min_size: int = 50,
        alert_lift: float = 3.0,
        on_alert: str | Callable[[Any], Any] = "warn",
        adapter: ProbeAdapter | None = None,
        sinks: Sequence[Sink | str] | None = None,
        prefix: str = "insight",
        finder_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(sinks)
        if not isinstance(layer, str) or not layer:
            raise TypeError(
                f"Expected argument `layer` to be a module name such as 'backbone.2', but got {layer!r}."
            )
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("max_samples", max_samples),
            ("mosaics", mosaics),
            ("alert_min_size", alert_min_size),
        ):
            check_positive_int(name, value)
        if (
            not isinstance(alert_lift, (int, float))
            or isinstance(alert_lift, bool)
            or alert_lift <= 0
        ):
            raise ValueError(
                f"Expected argument `alert_lift` to be a number > 0, but got {alert_lift!r}."
            )
        if not (on_alert == "warn" or callable(on_alert)):
            raise ValueError(
                f"Expected argument `on_alert` to be 'warn' or a callable, but got {on_alert!r}."
            )
        if adapter is not None and not callable(adapter):
            raise TypeError(
                f"Expected argument `adapter` to be a callable batch -> (inputs, labels, sample_ids), "
                f"but got {adapter!r}."
            )
        if not isinstance(prefix, str) or not prefix or prefix.endswith("/"):
            raise ValueError(
                f"Expected argument `prefix` to be a non-empty string without a trailing '/', but got {prefix!r}."
            )
        self.layer = layer
        self.method = method
        self.every_n_epochs = every_n_epochs
        self.mosaics = mosaics
        self.alert_min_size = alert_min_size
        self.alert_lift = float(alert_lift)
        self.on_alert = on_alert
        self.adapter = adapter
        self.prefix = prefix
        # the finder checks its own arguments (method, target, num_slices vs max_samples) here, eagerly
        self.finder = SliceFinder(
            layer,
            method=method,
            num_slices=num_slices,
            max_samples=max_samples,
            target=target,
            random_state=random_state,
            **(finder_options or {}),
        )
        self.finder.check_params()
        self.history: list[SliceDiscoveryReport] = []
        self.alerts: list[dict[str, Any]] = []
        self._active = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer, method=self.method, prefix=self.prefix)

    # ------------------------------------------------------------------ set-up
    # ------------------------------------------------------------------ hooks
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = scheduled(trainer, self.every_n_epochs)
        if not self._active:
            return
        self.finder.reset()
        log.info(
            "SliceDiscoveryMonitor: %s attributions at %r for up to %d probe images, then clustering.",
            self.method,
            self.layer,
            self.finder.max_samples,
        )

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
        if not self._active or dataloader_idx != 0:
            return
        inputs, labels, sample_ids = (
            self.adapter(batch) if self.adapter is not None else read_probe_batch(batch)
        )
        self.finder.update(
            pl_module, inputs, labels, sample_ids, dataset_size=_dataset_size(trainer)
        )

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        self._active = False
        report = self.finder.compute(
            epoch=trainer.current_epoch,
            step=trainer.global_step,
            source="val",
            gather=object_gather(trainer),
        )  # a collective under DDP: every rank calls it
        self.history = [r for r in self.history if (r.epoch, r.step) != (report.epoch, report.step)]
        self.history.append(report)
        alerting = [
            s
            for s in report.slices
            if s.size >= self.alert_min_size
            and report.overall_error_rate > 0
            and s.error_rate >= self.alert_lift * report.overall_error_rate
        ]
        scalars = report.scalars(self.prefix)
        scalars[f"{self.prefix}/discovery/alert"] = 1.0 if alerting else 0.0
        self._emit(report, scalars)
        headline = (
            f"{self.prefix}/discovery/worst/error_rate",
            f"{self.prefix}/discovery/worst/lift",
        )
        self.log_headline(pl_module, {k: scalars[k] for k in headline if k in scalars})
        for found in alerting:
            alert = {
                "epoch": report.epoch,
                "step": report.step,
                "slice_id": found.slice_id,
                "size": found.size,
                "error_rate": found.error_rate,
                "overall_error_rate": report.overall_error_rate,
            }
            self.alerts.append(alert)
            message = (
                f"[val epoch {report.epoch}] discovered slice {found.slice_id}: {found.size} samples with "
                f"error rate {found.error_rate:.3g} ({found.error_rate / report.overall_error_rate:.1f}x "
                f"the overall {report.overall_error_rate:.3g})"
            )
            if self.on_alert == "warn":
                rank_zero_warn(message, category=DiscoveryAlertWarning)
            elif callable(self.on_alert) and trainer.is_global_zero:
                self.on_alert(found)

    def _emit(self, report: SliceDiscoveryReport, scalars: dict[str, float]) -> None:
        if self._sinks is None:
            return
        step = int(report.step or 0)
        sinks = self._sinks
        sinks.scalars(scalars, step=step)
        sinks.table(f"{self.prefix}/discovery/slices", report.rows(), step=step)
        sinks.text(f"{self.prefix}/discovery/report", report.markdown(), step=step)
        sinks.json(f"{self.prefix}/discovery/report", report.to_dict(), step=step)
        for found in report.slices[: self.mosaics]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = self.finder.mosaic(found.slice_id)
            sinks.image(f"{self.prefix}/discovery/mosaic/slice_{found.slice_id}", image, step=step)
        sinks.flush()

    # ------------------------------------------------------------------ checkpointing and pickling
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [r.to_dict() for r in self.history],
            "alerts": [dict(a) for a in self.alerts],
            "finder": self.finder.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [SliceDiscoveryReport.from_dict(r) for r in state_dict.get("history", [])]
        self.alerts = [dict(a) for a in state_dict.get("alerts", [])]
        self.finder.load_state_dict(state_dict.get("finder", {}))


def _dataset_size(trainer: pl.Trainer) -> int | None:
    loaders = trainer.val_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) and loaders else loaders
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None
