"""FailureModeMonitor: every validation epoch, where the model fails, in a robust model's features."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_insight.batch import Adapter, read_batch
from lightning_insight.discovery.attributions import resolve_layer
from lightning_insight.discovery.finder import (
    ProbePart,
    batch_sample_ids,
    probe_hash,
    prune_probe,
    read_probe_batch,
    select_probe,
)
from lightning_insight.failure_modes.functional import detection_misses
from lightning_insight.failure_modes.miner import FailureModeMiner
from lightning_insight.failure_modes.results import FailureModeReport
from lightning_insight.failure_modes.robust import (
    RobustExtractor,
    gradients_enabled,
    make_robust_extractor,
)
from lightning_insight.fairness.functional import check_positive_int
from lightning_insight.sinks import Sink
from lightning_insight.sinks.callback import SinkCallback, object_gather, scheduled

__all__ = ["FailureModeAlert", "FailureModeAlertWarning", "FailureModeMonitor"]

log = logging.getLogger(__name__)

TASKS = ("binary", "multiclass", "detection")


class FailureModeAlertWarning(UserWarning):
    """Warned (rank 0) when a failure mode crosses the monitor's coverage and error-rate thresholds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureModeAlert:
    """An alert: a failure mode with enough of its group's failures at a high enough error rate.

    It holds at least ``alert_coverage`` of its group's failures at an error rate at least
    ``alert_delta`` above the group's base error rate.

    Attributes:
        epoch: Training epoch.
        step: Global step.
        group: The mode's group.
        path: The mode's decision path as text.
        error_rate: ER of the mode.
        base_error_rate: BER of its group.
        error_coverage: EC of the mode.
        message: One line for people.
    """

    epoch: int | None
    step: int | None
    group: int | str
    path: str
    error_rate: float
    base_error_rate: float
    error_coverage: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "group": self.group,
            "path": self.path,
            "error_rate": self.error_rate,
            "base_error_rate": self.base_error_rate,
            "error_coverage": self.error_coverage,
            "message": self.message,
        }


class FailureModeMonitor(SinkCallback):
    r"""Failure modes of the model in training, explained by a separate (robust) model's features.

    Every ``every_n_epochs`` validation epochs of ``fit`` (and at every ``trainer.validate()``), the
    predictions and labels of every validation sample are read from ``validation_step``'s outputs and
    the batch, the ``feature_extractor``'s features of each sample are computed once and cached by
    sample id (they do not depend on the model in training), and at the epoch's end a
    :class:`~lightning_insight.failure_modes.FailureModeMiner` fits its shallow trees. A mode with error
    coverage ``>= alert_coverage`` and ``error_rate - base_error_rate >= alert_delta`` raises a
    :class:`FailureModeAlertWarning` and is kept in ``.alerts``. The ``images`` top modes get a picture:
    per feature on the path, the group's most activating images, that feature's heatmap over them (when
    a spatial feature map is at hand) and, with ``attack_steps > 0``, a feature-attack image; then a
    row of the mode's failures. Images come from a seeded subset of ``max_image_samples`` validation
    samples (the smallest :func:`~lightning_insight.discovery.probe_hash`\ es), so memory stays bounded.

    Args:
        feature_extractor: The robust model. A frozen deep copy is used, moved to the LightningModule's
            device. Or ``"robust"`` where none is at hand: at ``setup`` a
            :class:`~lightning_insight.failure_modes.RobustExtractor` is trained adversarially
            (:func:`~lightning_insight.failure_modes.make_robust_extractor`, seeded, the same on every
            rank) at the first mining epoch on up to ``robust_options["max_samples"]`` (default
            2000) images of the datamodule's ``train_dataloader()``; its weights are part of
            ``state_dict``, so a resumed run uses the same extractor without training it again.
        feature_layer: ``None`` for the extractor's output (``(N, D)``; a 4-D output is average-pooled);
            or the dotted name of one of its modules whose output (``(N, D)``, or ``(N, D, h, w)``
            average-pooled, and then also the heatmaps' map) gives the features. Without a 4-D layer,
            an extractor with a ``feature_map(images)`` method (like
            :class:`~lightning_insight.failure_modes.RobustExtractor`) gives the heatmaps.
        task: ``"binary"`` (``preds`` are probabilities or scores of class 1, cut at ``threshold``, or
            hard labels), ``"multiclass"`` (``(N, C)`` scores or ``(N,)`` labels) or ``"detection"``
            (``preds``/``target`` are per-image dicts in torchmetrics' format; an image fails when
            it has a missed object, see :func:`~lightning_insight.failure_modes.functional.detection_misses`;
            every image is in one group, ``"all"``).
        threshold: The binary decision threshold.
        iou_threshold: Detection: the IoU a detection needs to find an object.
        score_threshold: Detection: detections below this score do not count.
        every_n_epochs: Mine on every n-th validation epoch of ``fit``; ``validate()`` always does.
        max_depth: Depth of each failure tree.
        num_features: Features kept by mutual information.
        min_samples_leaf: Smallest leaf (count, or fraction of the group).
        grouping: ``"prediction"`` (Barlow's default), ``"label"`` or ``"all"``; ``None`` for
            ``"prediction"`` (``"all"`` for detection, the only grouping there).
        min_failures: Groups with fewer failures are reported as "not enough failures".
        alert_coverage: ``c``: a mode must hold at least this share of its group's failures to alert.
        alert_delta: ``delta``: and have an error rate at least this far above its group's base rate.
        images: How many top modes get a picture (0 for none).
        max_image_samples: Size of the seeded subset of samples whose images are kept for pictures.
        attack_steps: Steps of the opt-in feature attack shown per feature (0: none; at most 200).
        adapter: ``(outputs, batch) -> BatchData`` for other layouts (as FairnessMonitor's).
        sinks: ``None`` for one sink per attached logger plus the CSV report, or sinks / names.
        prefix: First part of every log key.
        miner_options: Further keyword arguments of :class:`FailureModeMiner`
            (``max_samples_per_group``, ``mutual_information``, ``random_state``).
        robust_options: For ``feature_extractor="robust"``: ``max_samples`` and keyword arguments
            of :func:`~lightning_insight.failure_modes.make_robust_extractor` (``epochs`` defaults
            to 4 here; ``num_classes`` to the largest training label + 1, at least 2).

    Raises:
        ValueError: For a bad argument, naming it, including a ``feature_layer`` that is not a module of
            the extractor (with close matches) and miner options out of range.
        TypeError: If ``feature_extractor`` is neither an ``nn.Module`` nor ``"robust"``.
        RuntimeError: At ``setup``, for ``"robust"`` without a datamodule to train it on.

    Logged keys:
        - to the sinks: :meth:`FailureModeReport.scalars` (``insight/failure_modes/...``),
          ``insight/failure_modes/alerts`` (alerts this epoch), a table
          ``insight/failure_modes/modes``, the report as JSON and markdown
          (``insight/failure_modes/report``), and images ``insight/failure_modes/mode_{rank}``.
        - through ``pl_module.log`` (``logger=False``, ``sync_dist=True``):
          ``insight/failure_modes/top/lift`` and ``insight/failure_modes/top/error_rate``.

    Under DDP each rank reads its own samples and computes features for them; at the epoch's end every
    rank's ids, predictions, labels and features are gathered (``all_gather_object``),
    DistributedSampler's padded duplicates dropped by id, and every rank fits the same trees, so the
    report equals a single process's. The feature cache and the history are in ``state_dict``.

    Example:
        >>> extractor = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> monitor = FailureModeMonitor(extractor, task="binary", max_depth=2)
        >>> monitor.state_key
        "FailureModeMonitor{'feature_layer': None, 'task': 'binary', 'grouping': 'prediction', 'prefix': 'insight'}"
    """

    def __init__(
        self,
        feature_extractor: nn.Module | str,
        feature_layer: str | None = None,
        *,
        task: str = "multiclass",
        threshold: float = 0.5,
        iou_threshold: float = 0.5,
        score_threshold: float = 0.3,
        every_n_epochs: int = 1,
        max_depth: int = 3,
        num_features: int = 50,
        min_samples_leaf: int | float = 10,
        grouping: str | None = None,
        min_failures: int = 10,
        alert_coverage: float = 0.1,
        alert_delta: float = 0.2,
        images: int = 3,
        max_image_samples: int = 1000,
        attack_steps: int = 0,
        adapter: Adapter | None = None,
        sinks: Sequence[Sink | str] | None = None,
        prefix: str = "insight",
        miner_options: dict[str, Any] | None = None,
        robust_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(sinks)
        if not isinstance(feature_extractor, nn.Module) and feature_extractor != "robust":
            raise TypeError(
                f"Expected argument `feature_extractor` to be an nn.Module or 'robust', but got "
                f"{feature_extractor!r}."
            )
        if feature_layer is not None and isinstance(feature_extractor, str):
            raise ValueError(
                "Expected argument `feature_layer` to be None with feature_extractor='robust' (its "
                f"features are the pooled last block), but got {feature_layer!r}."
            )
        if feature_layer is not None:
            if not isinstance(feature_layer, str) or not feature_layer:
                raise ValueError(
                    f"Expected argument `feature_layer` to be None or a module name, but got "
                    f"{feature_layer!r}."
                )
            try:
                resolve_layer(cast(nn.Module, feature_extractor), feature_layer)
            except ValueError as error:
                raise ValueError(
                    f"Expected argument `feature_layer` to name a module of `feature_extractor`: {error}"
                ) from error
        if task not in TASKS:
            raise ValueError(f"Expected argument `task` to be one of {TASKS}, but got {task!r}.")
        if grouping is None:
            grouping = "all" if task == "detection" else "prediction"
        if task == "detection" and grouping != "all":
            raise ValueError(
                f"Expected argument `grouping` to be 'all' (or None) for task='detection' (an image "
                f"has no single predicted class), but got {grouping!r}."
            )
        for name, value in (
            ("threshold", threshold),
            ("iou_threshold", iou_threshold),
            ("score_threshold", score_threshold),
            ("alert_coverage", alert_coverage),
            ("alert_delta", alert_delta),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(
                    f"Expected argument `{name}` to be a float in [0, 1], but got {value!r}."
                )
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("max_image_samples", max_image_samples)
        for name, value in (("images", images), ("attack_steps", attack_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"Expected argument `{name}` to be an int >= 0, but got {value!r}."
                )
        if attack_steps > 200:
            raise ValueError(
                f"Expected argument `attack_steps` to be at most 200, but got {attack_steps}. HINT: "
                "the attack image is a sketch; a few dozen steps show what the feature looks for."
            )
        if not isinstance(prefix, str) or not prefix or prefix.endswith("/"):
            raise ValueError(
                f"Expected argument `prefix` to be a non-empty string without a trailing '/', but got {prefix!r}."
            )
        self.feature_extractor = feature_extractor
        self.feature_layer = feature_layer
        self.task = task
        self.threshold = float(threshold)
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)
        self.every_n_epochs = every_n_epochs
        self.grouping = grouping
        self.alert_coverage = float(alert_coverage)
        self.alert_delta = float(alert_delta)
        self.images = images
        self.max_image_samples = max_image_samples
        self.attack_steps = attack_steps
        self.adapter = adapter
        self.prefix = prefix
        self.robust_options = dict(robust_options or {})
        self.miner = FailureModeMiner(
            max_depth=max_depth,
            num_features=num_features,
            min_samples_leaf=min_samples_leaf,
            grouping=grouping,
            min_failures=min_failures,
            **(miner_options or {}),
        )
        try:
            self.miner.check_params()
        except TypeError as error:
            raise ValueError(str(error)) from error
        self.history: list[FailureModeReport] = []
        self.alerts: list[FailureModeAlert] = []
        self._cache: dict[int, np.ndarray[Any, np.dtype[np.float32]]] = {}
        self._extractor: nn.Module | None = None
        self._robust_config: dict[str, Any] = {}  # how the "robust" extractor was built
        self._rows: list[
            tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]
        ] = []
        self._kept: list[ProbePart] = []
        self._seen = 0
        self._active = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            feature_layer=self.feature_layer,
            task=self.task,
            grouping=self.grouping,
            prefix=self.prefix,
        )

    @property
    def cached_features(self) -> int:
        """How many samples' features are cached."""
        return len(self._cache)

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if isinstance(self.feature_extractor, str):
            if getattr(trainer, "datamodule", None) is None:
                self._train_robust(trainer)  # raises the clear error before any long run
            return  # trained at the first mining epoch, unless a checkpoint brings its weights
        if self._extractor is None:
            self._extractor = copy.deepcopy(self.feature_extractor).eval().requires_grad_(False)
        self._extractor.to(pl_module.device)

    def _ready_extractor(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._extractor is None:
            self._extractor = self._train_robust(trainer).eval().requires_grad_(False)
        self._extractor.to(pl_module.device)

    def _train_robust(self, trainer: pl.Trainer) -> RobustExtractor:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not callable(getattr(datamodule, "train_dataloader", None)):
            raise RuntimeError(
                "FailureModeMonitor: feature_extractor='robust' trains on the datamodule's "
                "train_dataloader(), but this Trainer has no datamodule. HINT: pass a datamodule, or "
                "pass an nn.Module (e.g. from lightning_insight.make_robust_extractor)."
            )
        options = dict(self.robust_options)
        limit = int(options.pop("max_samples", 2000))
        try:
            loader = datamodule.train_dataloader()
        except Exception:
            datamodule.setup("fit")
            loader = datamodule.train_dataloader()
        images, labels, count = [], [], 0
        for batch in loader:
            inputs, target, _ = read_probe_batch(batch)
            images.append(torch.as_tensor(inputs)[: limit - count].detach().cpu())
            labels.append(torch.as_tensor(target)[: limit - count].detach().cpu().long())
            count += images[-1].shape[0]
            if count >= limit:
                break
        x, y = torch.cat(images), torch.cat(labels)
        options.setdefault("num_classes", max(2, int(y.max()) + 1))
        options.setdefault("epochs", 4)
        options.setdefault("channels", int(x.shape[1]))
        log.info("FailureModeMonitor: training a robust feature extractor on %d images.", count)
        with gradients_enabled():  # validation runs under inference mode
            extractor = make_robust_extractor((x.clone(), y.clone()), **options)
        self._robust_config = {
            key: options[key] for key in ("num_classes", "channels", "widths") if key in options
        }
        return extractor

    # ------------------------------------------------------------------ hooks
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = scheduled(trainer, self.every_n_epochs)
        self._rows, self._kept, self._seen = [], [], 0
        if self._active:
            self._ready_extractor(trainer, pl_module)

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
        data = read_batch(outputs, batch, attribute_names=(), adapter=self.adapter)
        inputs = torch.as_tensor(read_probe_batch(batch)[0])
        count = int(inputs.shape[0])
        ids = batch_sample_ids(data.sample_ids, seen=self._seen, count=count)
        self._seen += count
        if self.task == "detection":
            # an image's "prediction" is whether it missed an object, against a label of "found all"
            predicted = detection_misses(
                data.preds,
                data.target,
                iou_threshold=self.iou_threshold,
                score_threshold=self.score_threshold,
            ).astype(np.int64)
            labels = np.zeros(count, dtype=np.int64)
        else:
            predicted = _predicted_labels(data.preds, self.task, self.threshold)
            labels = np.asarray(torch.as_tensor(data.target).cpu()).reshape(-1).astype(np.int64)
        if not predicted.shape[0] == labels.shape[0] == ids.shape[0] == count:
            raise ValueError(
                f"Expected one prediction, label and sample id per input ({count}), but got "
                f"{predicted.shape[0]} predictions, {labels.shape[0]} labels and {ids.shape[0]} ids."
            )
        missing = np.array([int(i) not in self._cache for i in ids], dtype=bool)
        if missing.any():
            rows = torch.as_tensor(np.flatnonzero(missing), device=inputs.device)
            features = self._features(inputs[rows].to(pl_module.device))
            for sample_id, vector in zip(ids[missing], features, strict=True):
                self._cache[int(sample_id)] = vector
        self._rows.append((ids, predicted, labels))
        hashes = probe_hash(ids, self.miner.random_state)
        self._kept.append((inputs.detach().cpu(), labels, ids, hashes))
        self._kept = prune_probe(self._kept, self.max_image_samples)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        self._active = False
        rows, self._rows = self._rows, []
        kept, self._kept = self._kept, []
        ids, predicted, labels, features, kept = self._gathered(trainer, rows, kept)
        if ids.shape[0] == 0:
            return
        report = self.miner.fit(
            features,
            predicted,
            labels,
            sample_ids=ids,
            epoch=trainer.current_epoch,
            step=trainer.global_step,
            source="val",
        )
        self.history = [r for r in self.history if (r.epoch, r.step) != (report.epoch, report.step)]
        self.history.append(report)
        fired = self._alerts(report)
        scalars = report.scalars(self.prefix)
        scalars[f"{self.prefix}/failure_modes/alerts"] = float(len(fired))
        pictures = (
            self._pictures(report, kept, pl_module.device)
            if trainer.is_global_zero and self.images
            else {}
        )
        self._emit(report, scalars, pictures)
        root = f"{self.prefix}/failure_modes/top"
        self.log_headline(
            pl_module,
            {
                f"{root}/lift": scalars[f"{root}/lift"],
                f"{root}/error_rate": scalars[f"{root}/error_rate"],
            },
        )

    # ------------------------------------------------------------------ steps
    def _features(self, inputs: torch.Tensor) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
        pooled = _pooled(_extract(self._extractor_module(), self.feature_layer, inputs))
        array = pooled.detach().float().cpu().numpy()
        return list(array)

    def _extractor_module(self) -> nn.Module:
        if self._extractor is None:
            raise RuntimeError(
                "FailureModeMonitor: the feature extractor is not set up; the Trainer calls `setup` "
                "before validation."
            )
        return self._extractor

    def _gathered(
        self,
        trainer: pl.Trainer,
        rows: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]],
        kept: list[ProbePart],
    ) -> tuple[
        np.ndarray[Any, Any],
        np.ndarray[Any, Any],
        np.ndarray[Any, Any],
        np.ndarray[Any, Any],
        list[ProbePart],
    ]:
        """Every rank's samples (ids ascending, padded duplicates dropped) and the kept images."""
        ids = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, dtype=np.int64)
        predicted = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, dtype=np.int64)
        labels = np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, dtype=np.int64)
        features = [self._cache[int(i)] for i in ids]
        kept = select_probe(kept, self.max_image_samples) if kept else kept
        gather = object_gather(trainer)  # a collective under DDP
        if gather is not None:
            parts = gather((ids, predicted, labels, features, kept))
            ids = np.concatenate([p[0] for p in parts])
            predicted = np.concatenate([p[1] for p in parts])
            labels = np.concatenate([p[2] for p in parts])
            features = [vector for p in parts for vector in p[3]]
            kept = [part for p in parts for part in p[4]]
            for sample_id, vector in zip(ids, features, strict=True):
                self._cache.setdefault(int(sample_id), vector)
        unique, first = np.unique(ids, return_index=True)
        if unique.shape[0] == 0:
            return unique, predicted[:0], labels[:0], np.zeros((0, 0), dtype=np.float32), []
        matrix = np.stack([features[i] for i in first]).astype(np.float32)
        if kept:
            everything = select_probe(kept, sum(part[2].shape[0] for part in kept))
            kept = select_probe(_unique_probe(everything), self.max_image_samples)
        return unique, predicted[first], labels[first], matrix, kept

    def _alerts(self, report: FailureModeReport) -> list[FailureModeAlert]:
        fired = []
        for mode in report.modes:
            base = report.group(mode.group).base_error_rate
            if (
                mode.error_coverage >= self.alert_coverage
                and mode.error_rate - base >= self.alert_delta
            ):
                path = report.describe(mode)
                fired.append(
                    FailureModeAlert(
                        epoch=report.epoch,
                        step=report.step,
                        group=mode.group,
                        path=path,
                        error_rate=mode.error_rate,
                        base_error_rate=base,
                        error_coverage=mode.error_coverage,
                        message=(
                            f"failure mode in group {mode.group}: {path} holds "
                            f"{mode.error_coverage:.0%} of its failures at error rate "
                            f"{mode.error_rate:.3g} (group base rate {base:.3g})"
                        ),
                    )
                )
        self.alerts = [
            a for a in self.alerts if (a.epoch, a.step) != (report.epoch, report.step)
        ] + fired
        for alert in fired:
            rank_zero_warn(alert.message, category=FailureModeAlertWarning)
        return fired

    def _pictures(
        self, report: FailureModeReport, kept: list[ProbePart], device: torch.device
    ) -> dict[str, np.ndarray[Any, Any]]:
        if not kept or not report.modes:
            return {}
        inputs, _, ids, _ = kept[0]
        extractor = self._extractor_module()
        spatial = _spatial_map(extractor, self.feature_layer, inputs.to(device))
        attack = _extractor_features(extractor, self.feature_layer) if self.attack_steps else None
        pictures: dict[str, np.ndarray[Any, Any]] = {}
        for rank in range(min(self.images, len(report.modes))):
            picture = self.miner.explain_images(
                rank,
                inputs.to(device),
                sample_ids=ids,
                feature_map=spatial,
                extractor=attack,
                attack_steps=self.attack_steps,
            )
            if picture is not None:
                pictures[f"mode_{rank}"] = picture
        return pictures

    def _emit(
        self,
        report: FailureModeReport,
        scalars: dict[str, float],
        pictures: dict[str, np.ndarray[Any, Any]],
    ) -> None:
        if self._sinks is None:
            return
        step = int(report.step or 0)
        sinks = self._sinks
        sinks.scalars(scalars, step=step)
        sinks.table(f"{self.prefix}/failure_modes/modes", report.rows(), step=step)
        sinks.text(f"{self.prefix}/failure_modes/report", report.markdown(), step=step)
        sinks.json(f"{self.prefix}/failure_modes/report", report.to_dict(), step=step)
        for name, image in pictures.items():
            sinks.image(f"{self.prefix}/failure_modes/{name}", image, step=step)
        sinks.flush()

    # ------------------------------------------------------------------ checkpointing
    @override
    def state_dict(self) -> dict[str, Any]:
        ids = sorted(self._cache)
        state: dict[str, Any] = {}
        if isinstance(self.feature_extractor, str) and self._extractor is not None:
            state["robust_config"] = dict(self._robust_config)
            state["robust_weights"] = {
                key: value.detach().cpu() for key, value in self._extractor.state_dict().items()
            }
        return {
            **state,
            "history": [r.to_dict() for r in self.history],
            "alerts": [a.to_dict() for a in self.alerts],
            "cache_ids": torch.as_tensor(ids, dtype=torch.int64),
            "cache_features": torch.as_tensor(np.stack([self._cache[i] for i in ids]))
            if ids
            else torch.zeros(0, 0),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [FailureModeReport.from_dict(r) for r in state_dict.get("history", [])]
        self.alerts = [FailureModeAlert(**a) for a in state_dict.get("alerts", [])]
        ids = torch.as_tensor(state_dict.get("cache_ids", torch.zeros(0))).tolist()
        features = torch.as_tensor(state_dict.get("cache_features", torch.zeros(0, 0))).numpy()
        self._cache = {int(i): features[row] for row, i in enumerate(ids)}
        weights = state_dict.get("robust_weights")
        if isinstance(self.feature_extractor, str) and weights is not None:
            config = dict(state_dict.get("robust_config", {}))
            extractor = RobustExtractor(**config)
            extractor.load_state_dict(weights)
            self._robust_config = config
            self._extractor = extractor.eval().requires_grad_(False)


def _predicted_labels(preds: Any, task: str, threshold: float) -> np.ndarray[Any, Any]:
    scores = torch.as_tensor(preds).detach()
    if task == "multiclass":
        if scores.ndim == 2:
            return scores.argmax(dim=1).cpu().numpy().astype(np.int64)
        return scores.reshape(-1).cpu().numpy().astype(np.int64)
    scores = scores.reshape(-1).float()
    if not scores.numel() or ((scores == 0) | (scores == 1)).all():
        return scores.cpu().numpy().astype(np.int64)
    return (scores >= threshold).cpu().numpy().astype(np.int64)


def _extract(
    extractor: nn.Module, layer: str | None, inputs: torch.Tensor, *, gradients: bool = False
) -> torch.Tensor:
    """The extractor's raw output for ``inputs``, or ``layer``'s: ``(N, D)`` or ``(N, D, h, w)``."""
    captured: list[Any] = []
    handle = (
        None
        if layer is None
        else resolve_layer(extractor, layer).register_forward_hook(
            lambda _m, _a, output: captured.append(output)
        )
    )
    try:
        with torch.set_grad_enabled(gradients):
            output = extractor(inputs)
    finally:
        if handle is not None:
            handle.remove()
    value = output if layer is None else (captured[-1] if captured else None)
    if not isinstance(value, torch.Tensor) or value.ndim not in (2, 4):
        where = "the extractor's output" if layer is None else f"layer {layer!r}"
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"Expected {where} to be (N, D) features or an (N, D, h, w) feature map, but got {got}. "
            "HINT: pass `feature_layer` naming a module with such an output."
        )
    return value


def _pooled(value: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` features: a feature map averaged over its positions."""
    return value.mean(dim=(2, 3)) if value.ndim == 4 else value


def _spatial_map(
    extractor: nn.Module, layer: str | None, inputs: torch.Tensor
) -> torch.Tensor | None:
    """The ``(N, D, h, w)`` map the heatmaps are drawn from, or ``None``.

    A 4-D ``layer``'s output, else the extractor's ``feature_map(images)`` when it has one.
    """
    if layer is not None:
        value = _extract(extractor, layer, inputs)
        if value.ndim == 4:
            return value
    method = getattr(extractor, "feature_map", None)
    if not callable(method):
        return None
    with torch.no_grad():
        feature_map = method(inputs)
    return feature_map if isinstance(feature_map, torch.Tensor) and feature_map.ndim == 4 else None


def _extractor_features(
    extractor: nn.Module, layer: str | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The extractor as a function ``images -> (N, D)`` with gradients (for the feature attack)."""
    return lambda images: _pooled(_extract(extractor, layer, images, gradients=True))


def _unique_probe(parts: list[ProbePart]) -> list[ProbePart]:
    inputs, labels, ids, hashes = parts[0]
    _, first = np.unique(ids, return_index=True)
    rows = np.sort(first)
    return [(inputs[torch.as_tensor(rows)], labels[rows], ids[rows], hashes[rows])]
