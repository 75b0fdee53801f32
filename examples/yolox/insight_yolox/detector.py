"""YOLOX as a LightningModule that reads lightning_insight's detection batches.

The network is YOLOX's own (CSPDarknet + PAFPN backbone, decoupled anchor-free head, SimOTA assignment,
IoU/objectness/class losses) from the ``yolox`` package; this module only adapts the data around it:
``[0, 1]`` RGB images become YOLOX's 0-255 BGR input at a side that is a multiple of 32, torchmetrics
targets become YOLOX's ``(class, cx, cy, w, h)`` rows, and the raw head output becomes torchmetrics
predictions in the pixel coordinates of the images it was given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

from insight_yolox._yolox import load_yolox
from insight_yolox.nms import batched_nms

__all__ = ["YOLOXDetector"]

Detections = list[dict[str, torch.Tensor]]

_STRIDE = 32  # the coarsest feature map is 1/32 of the input: both sides must divide by it
_PAD_VALUE = 114.0  # YOLOX pads its letterbox with grey 114 in 0-255 units
# As YOLOX's own training transform: boxes at most this thin (input pixels) are dropped from training.
_MIN_TRAIN_SIDE = 1.0
# Bounds the NMS cost when an untrained model passes a tiny threshold everywhere.
_PRE_NMS_TOP_K = 1000


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected argument `{name}` to be a positive int, but got {value!r}.")


def _check_positive_float(name: str, value: object) -> None:
    if not _is_number(value) or not float(value) > 0:  # type: ignore[arg-type]
        raise ValueError(f"Expected argument `{name}` to be a positive float, but got {value!r}.")


def _check_unit_float(name: str, value: object) -> None:
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(f"Expected argument `{name}` to be a float in [0, 1], but got {value!r}.")


def _check_input_size(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        sides = [value, value]
    else:
        sides = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or any(
        isinstance(side, bool) or not isinstance(side, int) or side <= 0 or side % _STRIDE
        for side in sides
    ):
        raise ValueError(
            "Expected argument `input_size` to be None, an int or (height, width), each a positive "
            f"multiple of {_STRIDE}, but got {value!r}."
        )
    return sides[0], sides[1]


class YOLOXDetector(pl.LightningModule):
    r"""YOLOX trained from scratch on batches of ``lightning_insight.datasets.BDDDataModule``.

    Batches are dictionaries with ``"image"``, a ``(B, 3, H, W)`` float tensor of RGB values in
    ``[0, 1]``, and ``"target"``, one torchmetrics-style dict per image (``"boxes"`` ``(n, 4)`` ``xyxy``
    in pixels, ``"labels"`` int64, optionally ``"iscrowd"``; other keys pass through untouched).
    Crowd boxes and boxes thinner than one input pixel are left out of the training targets.

    Images are letterboxed to ``input_size`` (scaled to fit, aspect kept, padded at the bottom and
    right with YOLOX's grey); with ``input_size=None`` they keep their size and are only padded to the
    next multiple of 32. Predictions are mapped back and clipped to the given images' pixels.

    ``validation_step`` and ``test_step`` return ``{"preds": [...], "target": batch["target"]}`` where
    each prediction is ``{"boxes": float (n, 4) xyxy, "scores": (n,), "labels": int64 (n,)}``, the
    format ``FairnessMonitor(task="detection")`` and torchmetrics read. The score of a box is YOLOX's
    objectness times its best class probability.

    Args:
        num_classes: Number of object classes (10 for BDD100k).
        depth: YOLOX depth multiplier (0.33 for Nano/Tiny/S).
        width: YOLOX width multiplier (0.25 Nano, 0.375 Tiny, 0.5 S).
        depthwise: Depthwise-separable convolutions, as YOLOX-Nano.
        learning_rate: AdamW's peak learning rate.
        weight_decay: AdamW's weight decay, applied to convolution weights only.
        warmup_steps: Optimizer steps of linear warm-up; after it the rate follows a cosine to 5% of the
            peak over the rest of ``trainer.estimated_stepping_batches``.
        confidence_threshold: Smallest score a prediction may have.
        nms_threshold: Boxes of the same class overlapping a higher-scoring box by more IoU are dropped.
        max_detections: The most predictions kept per image (highest scores).
        input_size: Network input ``(height, width)`` (or one int for a square), multiples of 32, or
            ``None`` for the images' own size.

    Raises:
        ValueError: If an argument is out of range, or a batch holds an image of the wrong shape or a
            label outside ``[0, num_classes)``.
        ModuleNotFoundError: If the ``yolox`` package is not installed.

    Logged keys:
        ``train_loss``, ``train_iou_loss``, ``train_obj_loss``, ``train_cls_loss`` (each step);
        ``val_loss``, ``test_loss`` (each epoch; the same loss with the network in evaluation mode).

    Example:
        >>> model = YOLOXDetector(num_classes=2, confidence_threshold=0.0, max_detections=5).eval()
        >>> (predictions,) = model(torch.rand(1, 3, 64, 96))
        >>> sorted(predictions), predictions["boxes"].shape, predictions["labels"].dtype
        (['boxes', 'labels', 'scores'], torch.Size([5, 4]), torch.int64)
    """

    def __init__(
        self,
        num_classes: int = 10,
        depth: float = 0.33,
        width: float = 0.25,
        depthwise: bool = True,
        learning_rate: float = 2e-3,
        weight_decay: float = 5e-4,
        warmup_steps: int = 50,
        confidence_threshold: float = 0.01,
        nms_threshold: float = 0.65,
        max_detections: int = 100,
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_float("depth", depth)
        _check_positive_float("width", width)
        if not isinstance(depthwise, bool):
            raise ValueError(f"Expected argument `depthwise` to be a bool, but got {depthwise!r}.")
        _check_positive_float("learning_rate", learning_rate)
        if not _is_number(weight_decay) or not float(weight_decay) >= 0:
            raise ValueError(
                f"Expected argument `weight_decay` to be a non-negative float, but got {weight_decay!r}."
            )
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(
                f"Expected argument `warmup_steps` to be a non-negative int, but got {warmup_steps!r}."
            )
        _check_unit_float("confidence_threshold", confidence_threshold)
        _check_unit_float("nms_threshold", nms_threshold)
        _check_positive_int("max_detections", max_detections)
        size = _check_input_size(input_size)
        self.save_hyperparameters()
        # A list, not a tuple, so hparams.yaml stays plain YAML that LightningCLI and safe loaders read.
        self.hparams["input_size"] = None if size is None else list(size)
        self.num_classes = num_classes
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.warmup_steps = warmup_steps
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = max_detections
        self.input_size = size

        pafpn_class, head_class, model_class = load_yolox()
        # YOLOX's channels at width 1; every model size scales them by `width`.
        in_channels = [256, 512, 1024]
        backbone = pafpn_class(
            depth, width, in_channels=in_channels, depthwise=depthwise, act="silu"
        )
        head = head_class(
            num_classes, width, in_channels=in_channels, depthwise=depthwise, act="silu"
        )
        self.model: nn.Module = model_class(backbone, head)
        # YOLOX's training recipe: slow-moving BatchNorm statistics and a 1% prior on objectness and
        # classes, without which a from-scratch start is swamped by background losses.
        for module in self.model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = 1e-3
                module.momentum = 0.03
        self.model.head.initialize_biases(1e-2)

    # ----------------------------------------------------------------------------------- data layout

    def _network_input(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        """YOLOX's input (0-255 BGR, letterboxed) and the scale from image to input pixels."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "Expected `batch['image']` to be a (B, 3, H, W) float tensor of RGB values in [0, 1], "
                f"but got shape {tuple(images.shape)}."
            )
        height, width = images.shape[-2:]
        pixels = images.flip(1).float() * 255.0
        if self.input_size is None:
            ratio = 1.0
            target_height = math.ceil(height / _STRIDE) * _STRIDE
            target_width = math.ceil(width / _STRIDE) * _STRIDE
        else:
            target_height, target_width = self.input_size
            ratio = min(target_height / height, target_width / width)
            if ratio != 1.0:
                size = (round(height * ratio), round(width * ratio))
                pixels = F.interpolate(
                    pixels, size=size, mode="bilinear", align_corners=False, antialias=ratio < 1
                )
        pad = (0, target_width - pixels.shape[-1], 0, target_height - pixels.shape[-2])
        return F.pad(pixels, pad, value=_PAD_VALUE), ratio

    def _training_targets(
        self, targets: Sequence[dict[str, torch.Tensor]], ratio: float, device: torch.device
    ) -> torch.Tensor:
        """``(B, M, 5)`` rows of ``(class, cx, cy, w, h)`` in input pixels, zero rows after the last."""
        rows: list[torch.Tensor] = []
        for target in targets:
            boxes = torch.as_tensor(target["boxes"], device=device).float().reshape(-1, 4) * ratio
            labels = torch.as_tensor(target["labels"], device=device).long().reshape(-1)
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(
                    f"Expected every target label in [0, {self.num_classes}), but got "
                    f"{sorted(set(labels.tolist()))}. HINT: set `num_classes` to the data's class count."
                )
            sides = boxes[:, 2:] - boxes[:, :2]
            keep = sides.min(dim=1).values > _MIN_TRAIN_SIDE
            crowd = target.get("iscrowd")
            if crowd is not None:
                keep &= ~torch.as_tensor(crowd, device=device).bool().reshape(-1)
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            rows.append(torch.cat([labels[:, None].float(), centres, sides], dim=1)[keep])
        padded = torch.zeros(len(rows), max([1, *(len(r) for r in rows)]), 5, device=device)
        for index, row in enumerate(rows):
            padded[index, : len(row)] = row
        return padded

    def _detections(self, raw: torch.Tensor, ratio: float, height: int, width: int) -> Detections:
        """Torchmetrics predictions from the head's decoded output ``(B, anchors, 5 + classes)``."""
        class_scores, labels = raw[..., 5:].max(dim=-1)
        scores = raw[..., 4] * class_scores
        centres, sides = raw[..., :2], raw[..., 2:4]
        boxes = torch.cat([centres - sides / 2, centres + sides / 2], dim=-1) / ratio
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, width)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, height)
        detections: Detections = []
        for image_boxes, image_scores, image_labels in zip(boxes, scores, labels, strict=True):
            candidates = torch.nonzero(image_scores >= self.confidence_threshold).squeeze(1)
            if candidates.numel() > _PRE_NMS_TOP_K:
                candidates = candidates[image_scores[candidates].topk(_PRE_NMS_TOP_K).indices]
            kept = candidates[
                batched_nms(
                    image_boxes[candidates],
                    image_scores[candidates],
                    image_labels[candidates],
                    self.nms_threshold,
                )[: self.max_detections]
            ]
            detections.append(
                {
                    "boxes": image_boxes[kept].float(),
                    "scores": image_scores[kept].float(),
                    "labels": image_labels[kept].long(),
                }
            )
        return detections

    # ------------------------------------------------------------------------------------- Lightning

    @override
    def forward(self, images: torch.Tensor) -> Detections:
        """Predictions for ``(B, 3, H, W)`` RGB images in ``[0, 1]``, in their pixel coordinates.

        Call it in evaluation mode (``model.eval()``); in training mode YOLOX's head needs targets.
        """
        inputs, ratio = self._network_input(images)
        raw = self.model(inputs)
        return self._detections(raw, ratio, images.shape[-2], images.shape[-1])

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """YOLOX's loss: 5 x IoU loss + objectness BCE + class BCE over the SimOTA-assigned anchors."""
        inputs, ratio = self._network_input(batch["image"])
        targets = self._training_targets(batch["target"], ratio, inputs.device)
        losses = self.model(inputs, targets)
        size = inputs.shape[0]
        self.log("train_loss", losses["total_loss"], batch_size=size, prog_bar=True)
        for logged, key in (("iou", "iou_loss"), ("obj", "conf_loss"), ("cls", "cls_loss")):
            self.log(f"train_{logged}_loss", losses[key], batch_size=size)
        loss: torch.Tensor = losses["total_loss"]
        return loss

    def _evaluate(self, batch: dict[str, Any], prefix: str) -> dict[str, Any]:
        images = batch["image"]
        inputs, ratio = self._network_input(images)
        backbone = cast(nn.Module, self.model.backbone)
        head = cast(nn.Module, self.model.head)
        features = backbone(inputs)
        raw = head(features)
        # The loss path of the head is switched on for the head module alone, so its BatchNorm layers
        # stay in evaluation mode and the loss is that of the network being evaluated.
        mode = head.training
        head.training = True
        try:
            targets = self._training_targets(batch["target"], ratio, inputs.device)
            loss = head(features, targets, inputs)[0]
        finally:
            head.training = mode
        self.log(f"{prefix}_loss", loss, batch_size=inputs.shape[0], sync_dist=True)
        predictions = self._detections(raw, ratio, images.shape[-2], images.shape[-1])
        return {"preds": predictions, "target": batch["target"]}

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Log ``val_loss``; return ``{"preds": detections per image, "target": batch["target"]}``."""
        return self._evaluate(batch, "val")

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Log ``test_loss``; return ``{"preds": detections per image, "target": batch["target"]}``."""
        return self._evaluate(batch, "test")

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Detections:
        """Detections per image of ``batch["image"]``."""
        detections: Detections = self(batch["image"])
        return detections

    @override
    def configure_optimizers(self) -> Any:
        """AdamW (decay on convolution weights only) with linear warm-up, then a cosine to 5%."""
        decay = [p for p in self.parameters() if p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.learning_rate,
        )
        total = self._total_steps()
        warmup = self.warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if total is None or total <= warmup:
                return 1.0
            progress = min(1.0, (step - warmup) / (total - warmup))
            return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _total_steps(self) -> int | None:
        try:
            total = self.trainer.estimated_stepping_batches
        except RuntimeError:  # no Trainer attached: a constant rate after warm-up
            return None
        return int(total) if math.isfinite(total) else None
