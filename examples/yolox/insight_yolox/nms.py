"""Greedy non-maximum suppression in plain torch, with torchvision's semantics.

YOLOX calls ``torchvision.ops.nms`` and ``torchvision.ops.batched_nms``; this project cannot install
torchvision (its only wheel here breaks torchmetrics), so these stand in for them. Same contract: boxes
are ``(x1, y1, x2, y2)``, a box is suppressed when its IoU with a kept, higher-scoring box is strictly
greater than the threshold, and the kept indices come back sorted by decreasing score.
"""

from __future__ import annotations

import torch

__all__ = ["batched_nms", "box_iou", "nms"]


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of two sets of ``xyxy`` boxes, shape ``(len(boxes1), len(boxes2))``.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
        tensor([[0.3333]])
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    sides = (bottom_right - top_left).clamp(min=0)
    intersection = sides[..., 0] * sides[..., 1]
    return intersection / (area1[:, None] + area2[None, :] - intersection)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, by decreasing score (``torchvision.ops.nms``).

    Args:
        boxes: ``(N, 4)`` boxes, ``xyxy``.
        scores: ``(N,)`` scores.
        iou_threshold: boxes overlapping a kept box by more than this are dropped.

    Example:
        >>> boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
        >>> nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
        tensor([0, 2])
    """
    order = torch.argsort(scores, descending=True)
    if order.numel() <= 1:
        return order
    # One IoU matrix, then a sequential pass over it: the pass is what makes NMS greedy, and doing it on
    # CPU booleans avoids one device synchronisation per box.
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).triu_(diagonal=1).cpu()
    suppressed = torch.zeros(order.numel(), dtype=torch.bool)
    kept: list[int] = []
    for position in range(order.numel()):
        if suppressed[position]:
            continue
        kept.append(position)
        suppressed |= overlaps[position]
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each category of ``idxs`` (``torchvision.ops.batched_nms``).

    Boxes of different categories never suppress each other: each category is shifted to its own
    region of the plane, farther apart than any box is wide, and one NMS runs over all of them.

    Example:
        >>> boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
        >>> batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
        tensor([0, 1])
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    spread = boxes.max() - boxes.min() + 1
    shifted = boxes + (idxs.to(boxes) * spread)[:, None]
    return nms(shifted, scores, iou_threshold)
