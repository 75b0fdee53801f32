"""Random detection data in torchmetrics' format, and pycocotools as the independent oracle.

Importable (not a conftest) so the DDP script can build the same images in every process.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

WEATHERS = ("clear", "rainy", "foggy")


def random_images(
    seed: int, images: int = 60, classes: int = 4
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[Any]], torch.Tensor]:
    """Preds, targets, image attributes and sample ids of ``images`` random images.

    Several classes, empty images, images without predictions, crowd boxes, duplicate and poorly
    placed detections, a per-box ``occluded`` flag and a per-box ``group`` string.
    """
    rng = np.random.default_rng(seed)
    preds, target = [], []
    attributes: dict[str, list[Any]] = {"weather": [], "night": []}
    for image in range(images):
        n = 0 if image % 11 == 5 else int(rng.integers(1, 7))
        xy = rng.uniform(0, 400, size=(n, 2))
        wh = rng.uniform(4, 160, size=(n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, classes, size=n)
        crowd = rng.random(n) < 0.08
        occluded = rng.random(n) < 0.4
        group = rng.choice(["A", "B"], size=n)
        target.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "iscrowd": torch.tensor(crowd),
                "occluded": torch.tensor(occluded),
                "group": group.tolist(),
            }
        )
        det_boxes, det_scores, det_labels = [], [], []
        if image % 13 != 7:  # some images get no predictions at all
            for box, label, occ in zip(boxes, labels, occluded, strict=True):
                found = rng.random() < (0.55 if occ else 0.85)
                if found:
                    jitter = rng.normal(0, 4 if occ else 2, 4)
                    det = box + jitter
                    det[2:] = np.maximum(det[2:], det[:2] + 1)
                    det_boxes.append(det)
                    det_scores.append(rng.uniform(0.2, 1.0))
                    det_labels.append(label if rng.random() < 0.9 else rng.integers(0, classes))
                    if rng.random() < 0.1:  # a duplicate
                        det_boxes.append(det + 1)
                        det_scores.append(rng.uniform(0, 0.5))
                        det_labels.append(label)
            for _ in range(int(rng.integers(0, 3))):  # false alarms
                x, y = rng.uniform(0, 400, 2)
                side = rng.uniform(8, 120)
                det_boxes.append(np.array([x, y, x + side, y + side]))
                det_scores.append(rng.uniform(0, 0.6))
                det_labels.append(rng.integers(0, classes))
        preds.append(
            {
                "boxes": torch.tensor(np.array(det_boxes).reshape(-1, 4), dtype=torch.float32),
                "scores": torch.tensor(np.array(det_scores), dtype=torch.float32),
                "labels": torch.tensor(np.array(det_labels, dtype=np.int64)),
            }
        )
        attributes["weather"].append(WEATHERS[int(rng.integers(0, 3))])
        attributes["night"].append(bool(rng.random() < 0.4))
    return preds, target, attributes, torch.arange(images) * 7 + 3


def coco_oracle(
    preds: Sequence[dict[str, Any]],
    target: Sequence[dict[str, Any]],
    image_ids: Sequence[int],
    *,
    ignore_box: Callable[[int, int], bool] | None = None,
    area_range: tuple[float, float] = (0.0, 1e10),
) -> dict[str, float]:
    """pycocotools' COCOeval over ``image_ids`` (positions), returning the project's metric names.

    ``ignore_box(image, box)`` marks ground truth to ignore (as COCO ignores crowd boxes, without the
    crowd IoU); ``area_range`` is COCO's own area range. ``precision_50`` and ``recall_50`` are counted
    from pycocotools' per-image matches at IoU 0.5.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, detections, box_of = [], [], {}
    for i, (p, t) in enumerate(zip(preds, target, strict=True)):
        for j, (box, label) in enumerate(
            zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True)
        ):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(t.get("iscrowd", torch.zeros(len(t["labels"])))[j]),
                }
            )
            box_of[len(annotations)] = (i, j)
        for box, score, label in zip(
            p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            detections.append(
                {
                    "image_id": i,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    labels = sorted(
        {a["category_id"] for a in annotations} | {d["category_id"] for d in detections}
    )

    class Evaluator(COCOeval):  # type: ignore[misc]
        def _prepare(self) -> None:
            super()._prepare()
            if ignore_box is not None:
                for gts in self._gts.values():
                    for g in gts:
                        if ignore_box(*box_of[g["id"]]):
                            g["ignore"] = 1

    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": [{"id": i} for i in range(len(target))],
            "annotations": annotations,
            "categories": [{"id": c} for c in labels],
        }
        ground_truth.createIndex()
        results = ground_truth.loadRes(copy.deepcopy(detections)) if detections else COCO()
        if not detections:
            results.dataset = {
                "images": ground_truth.dataset["images"],
                "annotations": [],
                "categories": ground_truth.dataset["categories"],
            }
            results.createIndex()
        evaluator = Evaluator(ground_truth, results, "bbox")
        evaluator.params.imgIds = list(image_ids)
        evaluator.params.areaRng = [list(area_range)]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    recall = evaluator.eval["recall"][:, :, 0, -1]

    def mean(values: np.ndarray) -> float:
        defined = values[values > -1]
        return float(defined.mean()) if defined.size else math.nan

    matched: dict[int, int] = {}
    counted: dict[int, int] = {}
    objects = 0
    for entry in evaluator.evalImgs:
        if entry is None:
            continue
        objects += int((~np.asarray(entry["gtIgnore"], dtype=bool)).sum())
        for j in range(len(entry["dtIds"])):
            if entry["dtIgnore"][0][j]:
                continue
            c = entry["category_id"]
            counted[c] = counted.get(c, 0) + 1
            matched[c] = matched.get(c, 0) + int(entry["dtMatches"][0][j] > 0)
    return {
        "map": mean(precision),
        "map_50": mean(precision[0]),
        "map_75": mean(precision[5]),
        "mar_100": mean(recall),
        "recall_50": mean(recall[0]),
        "precision_50": float(np.mean([matched[c] / counted[c] for c in counted]))
        if counted
        else math.nan,
        "objects": float(objects),
    }
