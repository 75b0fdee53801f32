"""AttributionComparisonMonitor: where the model in training looks differently from a reference model."""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from typing_extensions import override

from lightning_insight.comparison.comparer import AttributionComparer
from lightning_insight.comparison.results import AttributionComparisonReport
from lightning_insight.comparison.visual import comparison_images
from lightning_insight.discovery.finder import (
    ProbePart,
    batch_sample_ids,
    probe_hash,
    prune_probe,
    read_probe_batch,
    select_probe,
)
from lightning_insight.fairness.functional import check_positive_int
from lightning_insight.sinks import Sink
from lightning_insight.sinks.callback import SinkCallback, object_gather, scheduled

__all__ = ["AttributionComparisonMonitor"]

log = logging.getLogger(__name__)

_EPOCH = re.compile(r"^epoch:(\d+)$")


class AttributionComparisonMonitor(SinkCallback):
    r"""Compares the model in training (B) with a reference model (A) by where their attributions differ.

    Every ``every_n_epochs`` validation epochs of ``fit`` (and at every ``trainer.validate()``), the
    validation batches' images, labels and sample ids are kept for a fixed, seeded probe set of up to
    ``max_samples`` images (the ids with the smallest :func:`~lightning_insight.discovery.probe_hash`),
    and at the epoch's end an :class:`~lightning_insight.comparison.AttributionComparer` compares the
    reference (A) with the LightningModule (B) on them. The batch carries ``{"image", "target",
    "sample_id"}`` or ``(x, y[, meta])`` (without ids, a sample's position in the epoch is its id).

    Args:
        reference: Model A: an ``nn.Module`` (a frozen deep copy is taken at ``setup``), a checkpoint path
            (loaded at ``setup`` with ``type(pl_module).load_from_checkpoint(path, map_location="cpu")``),
            ``"epoch:N"``: a frozen copy of the LightningModule taken at the end of validation epoch
            ``N`` of ``fit`` (comparisons before it exists are skipped with an info log; under
            ``trainer.validate()`` without such a copy, nothing is compared), or ``"best"``: the
            weights of the trainer's ``ModelCheckpoint.best_model_path``, reloaded whenever it
            changes (skipped while there is none). The ``"epoch:N"`` copy's weights and the
            ``"best"`` path are part of ``state_dict``, so a resumed run compares with the same A.
        layer: the LightningModule's layer (dotted module name with a 4-D feature map).
        layer_reference: the reference's layer; ``None`` for ``layer``. Its feature map embeds regions.
        every_n_epochs: compare on every n-th validation epoch of ``fit``; ``validate()`` always does.
        max_samples: size of the probe set.
        method: ``"gradcam"``, ``"integrated_gradients"`` or ``"saliency"``.
        num_clusters: ``k`` of the region clustering (``None``: about 40 regions per cluster).
        sinks: ``None`` for one sink per attached logger plus the CSV report, or sinks / names.
        prefix: first part of every log key.
        images: how many top-ranked clusters get pictures (exemplar regions with A/B bars and an
            A / B / difference drill-down); 0 for none.
        comparer_options: further keyword arguments of :class:`AttributionComparer` (``grid``,
            ``top_regions``, ``random_state``, ``bootstrap``, ``target``, ``embedding_layer``,
            ``embedding``, ``n_steps``).

    Raises:
        ValueError: for a bad ``reference`` (type, ``"epoch:N"`` string, missing file), number, method
            or prefix, naming the argument. A checkpoint that does not load into the LightningModule's
            class raises a ``RuntimeError`` naming the path and the class at ``setup``.

    Logged keys:
        - to the sinks: :meth:`AttributionComparisonReport.scalars` (``insight/comparison/...``), a
          table ``insight/comparison/clusters`` (long format, dimension ``comparison``), a JSON report
          and a markdown summary ``insight/comparison/report``.
        - through ``pl_module.log`` (``logger=False``, ``sync_dist=True``):
          ``insight/comparison/top/difference``.

    Under DDP, each rank's probe candidates are gathered (``all_gather_object``) before the fit, so
    every rank compares on the same probe set and logs the same values.

    Example:
        >>> monitor = AttributionComparisonMonitor("epoch:0", "backbone.1", max_samples=100)
        >>> monitor.state_key
        "AttributionComparisonMonitor{'reference': 'epoch:0', 'layer': 'backbone.1', 'layer_reference': None, 'method': 'gradcam', 'prefix': 'insight'}"
    """

    def __init__(
        self,
        reference: nn.Module | str | os.PathLike[str],
        layer: str,
        *,
        layer_reference: str | None = None,
        every_n_epochs: int = 2,
        max_samples: int = 200,
        method: str = "gradcam",
        num_clusters: int | None = None,
        sinks: Sequence[Sink | str] | None = None,
        prefix: str = "insight",
        images: int = 3,
        comparer_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(sinks)
        self.reference_epoch: int | None = None
        self.reference_path: str | None = None
        self.reference_module: nn.Module | None = None
        self.reference_best = False
        if isinstance(reference, nn.Module):
            self.reference_module = reference
        elif isinstance(reference, (str, os.PathLike)):
            text = os.fspath(reference)
            match = _EPOCH.match(text)
            if text == "best":
                self.reference_best = True
            elif match is not None:
                self.reference_epoch = int(match.group(1))
            elif text.startswith("epoch:"):
                raise ValueError(
                    f"Expected argument `reference` to be 'epoch:N' with an int N >= 0, but got {text!r}."
                )
            elif not Path(text).is_file():
                raise ValueError(
                    f"Expected argument `reference` to be an nn.Module, 'epoch:N', 'best' or the path "
                    f"of a checkpoint file, but no file exists at {text!r}."
                )
            else:
                self.reference_path = text
        else:
            raise ValueError(
                f"Expected argument `reference` to be an nn.Module, 'epoch:N' or a checkpoint path, "
                f"but got {type(reference).__name__}."
            )
        if not isinstance(layer, str) or not layer:
            raise ValueError(
                f"Expected argument `layer` to be a module name such as 'backbone.2', but got {layer!r}."
            )
        if layer_reference is not None and (
            not isinstance(layer_reference, str) or not layer_reference
        ):
            raise ValueError(
                f"Expected argument `layer_reference` to be a module name or None, but got {layer_reference!r}."
            )
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("max_samples", max_samples)
        if isinstance(images, bool) or not isinstance(images, int) or images < 0:
            raise ValueError(f"Expected argument `images` to be an int >= 0, but got {images!r}.")
        if not isinstance(prefix, str) or not prefix or prefix.endswith("/"):
            raise ValueError(
                f"Expected argument `prefix` to be a non-empty string without a trailing '/', but got {prefix!r}."
            )
        self.layer = layer
        self.layer_reference = layer_reference
        self.method = method
        self.every_n_epochs = every_n_epochs
        self.prefix = prefix
        self.images = images
        self.comparer = AttributionComparer(
            layer_reference if layer_reference is not None else layer,
            layer,
            method=method,
            num_clusters=num_clusters,
            max_samples=max_samples,
            **(comparer_options or {}),
        )
        try:
            self.comparer.check_params()
        except TypeError as error:
            raise ValueError(str(error)) from error
        self.history: list[AttributionComparisonReport] = []
        self._reference: nn.Module | None = None
        self._taken_at: int | None = None  # the epoch model A comes from, when known
        self._best_path = ""  # the checkpoint the "best" reference was loaded from
        self._pending: dict[str, torch.Tensor] | None = None  # restored "epoch:N" weights
        self._kept: list[ProbePart] = []
        self._seen = 0
        self._active = False
        self._skip_logged = False

    @property
    def reference_name(self) -> str:
        """How the reference was given: ``"module"``, ``"epoch:N"`` or the checkpoint path."""
        if self.reference_epoch is not None:
            return f"epoch:{self.reference_epoch}"
        if self.reference_best:
            return "best"
        return self.reference_path if self.reference_path is not None else "module"

    @property
    def reference(self) -> nn.Module | None:
        """Model A as compared (``None`` until ``setup``, or until epoch ``N`` for ``"epoch:N"``)."""
        return self._reference

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            reference=self.reference_name,
            layer=self.layer,
            layer_reference=self.layer_reference,
            method=self.method,
            prefix=self.prefix,
        )

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self._reference is not None:
            return
        if self.reference_module is not None:
            self._reference = _frozen(self.reference_module)
        elif self.reference_path is not None:
            cls = type(pl_module)
            try:
                loaded = cls.load_from_checkpoint(self.reference_path, map_location="cpu")
            except Exception as error:
                raise RuntimeError(
                    f"AttributionComparisonMonitor: the reference checkpoint {self.reference_path!r} "
                    f"does not load into {cls.__qualname__}: {type(error).__name__}: {error}"
                ) from error
            self._reference = _frozen(loaded)
            self._taken_at = _checkpoint_epoch(self.reference_path)
        elif self.reference_best and stage == "fit" and trainer.checkpoint_callback is None:
            raise RuntimeError(
                "AttributionComparisonMonitor: reference='best' follows the trainer's ModelCheckpoint, "
                "but this Trainer has none. HINT: keep enable_checkpointing=True or add a "
                "ModelCheckpoint callback."
            )

    def _restore(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rebuilds a restored ``"epoch:N"`` copy, or (re)loads the current ``"best"`` checkpoint."""
        if self._pending is not None:
            self._reference = _frozen(pl_module)
            self._reference.load_state_dict(self._pending)
            self._pending = None
        if not self.reference_best:
            return
        checkpoint = trainer.checkpoint_callback
        path = getattr(checkpoint, "best_model_path", "") or ""
        if not path or path == self._best_path:
            return
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
            reference = _frozen(pl_module)
            reference.load_state_dict(loaded["state_dict"])
        except Exception as error:
            raise RuntimeError(
                f"AttributionComparisonMonitor: the best checkpoint {path!r} does not load into "
                f"{type(pl_module).__qualname__}: {type(error).__name__}: {error}"
            ) from error
        self._reference, self._best_path = reference, path
        self._taken_at = loaded.get("epoch")
        log.info("AttributionComparisonMonitor: the reference is now the best checkpoint %s.", path)

    # ------------------------------------------------------------------ hooks
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._active = scheduled(trainer, self.every_n_epochs)
        self._kept = []
        self._seen = 0
        if self._active:
            self._restore(trainer, pl_module)
        if self._active and self._reference is None:
            self._active = False
            if not self._skip_logged:
                log.info(
                    "AttributionComparisonMonitor: no reference model yet (%s); skipping the comparison.",
                    self.reference_name,
                )
                self._skip_logged = True

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
        inputs, labels, sample_ids = read_probe_batch(batch)
        inputs = torch.as_tensor(inputs).detach().cpu()
        count = int(inputs.shape[0])
        ids = batch_sample_ids(sample_ids, seen=self._seen, count=count)
        self._seen += count
        label_array = np.asarray(torch.as_tensor(labels).cpu()).reshape(-1).astype(np.int64)
        self._kept.append((inputs, label_array, ids, probe_hash(ids, self.comparer.random_state)))
        self._kept = prune_probe(self._kept, self.comparer.max_samples)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active:
            self._active = False
            self._compare(trainer, pl_module)
        if (
            self.reference_epoch is not None
            and self._reference is None
            and trainer.state.fn == "fit"
            and not trainer.sanity_checking
            and trainer.current_epoch == self.reference_epoch
        ):
            self._reference = _frozen(pl_module)
            self._taken_at = trainer.current_epoch
            log.info(
                "AttributionComparisonMonitor: took the reference model at epoch %d.",
                self.reference_epoch,
            )

    def _compare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        kept, self._kept = self._kept, []
        kept = _gather(trainer, kept, self.comparer.max_samples)  # a collective under DDP
        if not kept or self._reference is None:
            return
        reference = self._reference.to(pl_module.device)
        batches = [
            (inputs, torch.as_tensor(labels), torch.as_tensor(ids))
            for inputs, labels, ids, _ in kept
        ]
        report = self.comparer.fit(reference, pl_module, batches)
        report = replace(
            report,
            epoch=trainer.current_epoch,
            step=trainer.global_step,
            source="val",
            reference=self.reference_name,
            reference_epoch=self._taken_at,
        )
        self.history = [r for r in self.history if (r.epoch, r.step) != (report.epoch, report.step)]
        self.history.append(report)
        scalars = report.scalars(self.prefix)
        pictures = (
            comparison_images(report, self.comparer.evidence_, clusters=self.images)
            if trainer.is_global_zero and self.images
            else {}
        )
        self._emit(report, scalars, pictures)
        key = f"{self.prefix}/comparison/top/difference"
        self.log_headline(pl_module, {key: scalars[key]})

    def _emit(
        self,
        report: AttributionComparisonReport,
        scalars: dict[str, float],
        pictures: dict[str, np.ndarray[Any, Any]],
    ) -> None:
        if self._sinks is None:
            return
        step = int(report.step or 0)
        sinks = self._sinks
        sinks.scalars(scalars, step=step)
        sinks.table(f"{self.prefix}/comparison/clusters", report.rows(), step=step)
        markdown = getattr(report, "markdown", None)
        text = markdown() if callable(markdown) else _summary(report)
        sinks.text(f"{self.prefix}/comparison/report", text, step=step)
        sinks.json(f"{self.prefix}/comparison/report", report.to_dict(), step=step)
        for name, image in pictures.items():
            sinks.image(f"{self.prefix}/comparison/{name}", image, step=step)
        sinks.flush()

    # ------------------------------------------------------------------ checkpointing
    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "history": [r.to_dict() for r in self.history],
            "taken_at": self._taken_at,
        }
        if self.reference_epoch is not None and self._reference is not None:
            # the copy of epoch N exists nowhere else: a resumed run needs its weights
            state["reference_weights"] = {
                key: value.detach().cpu() for key, value in self._reference.state_dict().items()
            }
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [
            AttributionComparisonReport.from_dict(r) for r in state_dict.get("history", [])
        ]
        self._taken_at = state_dict.get("taken_at")
        weights = state_dict.get("reference_weights")
        if self.reference_epoch is not None and weights is not None:
            self._reference, self._pending = None, dict(weights)


def _frozen(module: nn.Module) -> nn.Module:
    copied = copy.deepcopy(module).eval()
    copied.requires_grad_(False)
    return copied


def _checkpoint_epoch(path: str) -> int | None:
    """The ``epoch`` a Lightning checkpoint was saved at (``None`` when it does not say)."""
    epoch = torch.load(path, map_location="cpu", weights_only=False).get("epoch")
    return int(epoch) if isinstance(epoch, int) else None


def _gather(trainer: pl.Trainer, kept: list[ProbePart], max_samples: int) -> list[ProbePart]:
    gather = object_gather(trainer)
    if gather is None:
        return kept
    kept = select_probe(kept, max_samples) if kept else kept  # at most max_samples per rank
    return [part for parts in gather(kept) for part in parts]


def _summary(report: AttributionComparisonReport) -> str:
    lines = [
        f"**Attribution comparison** ({report.method}, {report.layer_a} vs {report.layer_b}) at epoch "
        f"{report.epoch}: {report.num_samples} probe images, {report.num_regions} regions, "
        f"accuracy A {report.accuracy_a:.3g} / B {report.accuracy_b:.3g}.",
        "",
        "| cluster | regions | images | difference (B - A) | 95% interval |",
        "|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {c.cluster_id} | {c.regions} | {c.images} | {c.difference:+.3g} | "
        f"[{c.lower:+.3g}, {c.upper:+.3g}] |"
        for c in report.clusters
    )
    return "\n".join(lines)
