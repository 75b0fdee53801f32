"""FailureModeMonitor: every validation epoch, where the model fails, in a robust model's features."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
from lightning_insight.discovery.mosaic import display_rgb
from lightning_insight.failure_modes.miner import FailureModeMiner
from lightning_insight.failure_modes.results import FailureMode, FailureModeReport
from lightning_insight.failure_modes.visualize import (
    failure_mode_panel,
    feature_attack,
    feature_heatmaps,
    most_activating,
)
from lightning_insight.fairness.functional import check_positive_int
from lightning_insight.sinks import Sink
from lightning_insight.sinks.callback import SinkCallback, object_gather, scheduled

__all__ = ["FailureModeAlert", "FailureModeAlertWarning", "FailureModeMonitor"]

log = logging.getLogger(__name__)

TASKS = ("binary", "multiclass")


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
            device. See :func:`~lightning_insight.failure_modes.make_robust_extractor`.
        feature_layer: ``None`` for the extractor's output (``(N, D)``; a 4-D output is average-pooled);
            or the dotted name of one of its modules whose output (``(N, D)``, or ``(N, D, h, w)``
            average-pooled, and then also the heatmaps' map) gives the features. Without a 4-D layer,
            an extractor with a ``feature_map(images)`` method (like
            :class:`~lightning_insight.failure_modes.RobustExtractor`) gives the heatmaps.
        task: ``"binary"`` (``preds`` are probabilities or scores of class 1, cut at ``threshold``, or
            hard labels) or ``"multiclass"`` (``(N, C)`` scores or ``(N,)`` labels).
        threshold: The binary decision threshold.
        every_n_epochs: Mine on every n-th validation epoch of ``fit``; ``validate()`` always does.
        max_depth: Depth of each failure tree.
        num_features: Features kept by mutual information.
        min_samples_leaf: Smallest leaf (count, or fraction of the group).
        grouping: ``"prediction"`` (Barlow's default), ``"label"`` or ``"all"``.
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

    Raises:
        ValueError: For a bad argument, naming it, including a ``feature_layer`` that is not a module of
            the extractor (with close matches) and miner options out of range.
        TypeError: If ``feature_extractor`` is not an ``nn.Module``.

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
        feature_extractor: nn.Module,
        feature_layer: str | None = None,
        *,
        task: str = "multiclass",
        threshold: float = 0.5,
        every_n_epochs: int = 1,
        max_depth: int = 3,
        num_features: int = 50,
        min_samples_leaf: int | float = 10,
        grouping: str = "prediction",
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
    ) -> None:
        super().__init__(sinks)
        if not isinstance(feature_extractor, nn.Module):
            raise TypeError(
                f"Expected argument `feature_extractor` to be an nn.Module, but got "
                f"{type(feature_extractor).__name__}."
            )
        if feature_layer is not None:
            if not isinstance(feature_layer, str) or not feature_layer:
                raise ValueError(
                    f"Expected argument `feature_layer` to be None or a module name, but got "
                    f"{feature_layer!r}."
                )
            try:
                resolve_layer(feature_extractor, feature_layer)
            except ValueError as error:
                raise ValueError(
                    f"Expected argument `feature_layer` to name a module of `feature_extractor`: {error}"
                ) from error
        if task not in TASKS:
            raise ValueError(f"Expected argument `task` to be one of {TASKS}, but got {task!r}.")
        for name, value in (
            ("threshold", threshold),
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
        self.every_n_epochs = every_n_epochs
        self.grouping = grouping
        self.alert_coverage = float(alert_coverage)
        self.alert_delta = float(alert_delta)
        self.images = images
        self.max_image_samples = max_image_samples
        self.attack_steps = attack_steps
        self.adapter = adapter
        self.prefix = prefix
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
        if self._extractor is None:
            extractor = copy.deepcopy(self.feature_extractor).eval()
            extractor.requires_grad_(False)
            self._extractor = extractor
        self._extractor.to(pl_module.device)

    # ------------------------------------------------------------------ hooks
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = scheduled(trainer, self.every_n_epochs)
        self._rows, self._kept, self._seen = [], [], 0

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
        failed = {int(i) for i in ids[predicted != labels]}
        pictures = (
            self._pictures(report, kept, failed, pl_module.device)
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
        self,
        report: FailureModeReport,
        kept: list[ProbePart],
        failed: set[int],
        device: torch.device,
    ) -> dict[str, np.ndarray[Any, Any]]:
        if not kept or not report.modes:
            return {}
        inputs, _, ids, _ = kept[0]
        position = {int(sample_id): row for row, sample_id in enumerate(ids)}
        extractor = self._extractor_module()
        features = torch.as_tensor(np.stack([self._cache[int(i)] for i in ids]))
        spatial = _spatial_map(extractor, self.feature_layer, inputs.to(device))
        shown = display_rgb(inputs)
        pictures: dict[str, np.ndarray[Any, Any]] = {}
        group_of = _group_members(report, position)
        for rank, mode in enumerate(report.modes[: self.images]):
            members = group_of.get(mode.group, [])
            failures = [position[i] for i in mode.sample_ids if i in position and i in failed]
            picture = self._mode_picture(
                mode, members, failures[:12], inputs, shown, features, spatial, extractor, device
            )
            if picture is not None:
                pictures[f"mode_{rank}"] = picture
        return pictures

    def _mode_picture(
        self,
        mode: FailureMode,
        members: list[int],
        failures: list[int],
        inputs: torch.Tensor,
        shown: torch.Tensor,
        features: torch.Tensor,
        spatial: torch.Tensor | None,
        extractor: nn.Module,
        device: torch.device,
    ) -> np.ndarray[Any, Any] | None:
        rows: list[list[torch.Tensor]] = []
        cells: list[str | None] = []
        for feature in dict.fromkeys(condition[0] for condition in mode.path):
            if not members:
                break
            top = most_activating(features, feature, k=6, among=members)
            row = [shown[top]]
            if spatial is not None:
                row.append(feature_heatmaps(spatial[top].cpu(), feature, shown[top]))
            if self.attack_steps:
                attacked = feature_attack(
                    _extractor_features(extractor, self.feature_layer),
                    inputs[top].to(device),
                    feature,
                    steps=self.attack_steps,
                    clamp=None,
                )
                row.append(display_rgb(attacked.cpu()))
            rows.append(row)
            cells.append(None)
        if failures:
            rows.append([shown[torch.as_tensor(failures)]])
            cells.append("FN")
        if not rows:
            return None
        picture = failure_mode_panel(rows, cells=cells)
        image: np.ndarray[Any, Any] = np.rint(picture.clamp(0, 1).permute(1, 2, 0).numpy() * 255)
        return image.astype(np.uint8)

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
        return {
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


def _group_members(report: FailureModeReport, position: dict[int, int]) -> dict[Any, list[int]]:
    """Per group, the kept-image rows of its samples (the union of its modes' members)."""
    members: dict[Any, list[int]] = {}
    for mode in report.modes:
        members.setdefault(mode.group, []).extend(
            position[i] for i in mode.sample_ids if i in position
        )
    return {group: sorted(rows) for group, rows in members.items()}


def _unique_probe(parts: list[ProbePart]) -> list[ProbePart]:
    inputs, labels, ids, hashes = parts[0]
    _, first = np.unique(ids, return_index=True)
    rows = np.sort(first)
    return [(inputs[torch.as_tensor(rows)], labels[rows], ids[rows], hashes[rows])]
