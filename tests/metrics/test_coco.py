from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
from faster_coco_eval import COCO, COCOeval_faster

from lightning_insight.metrics.coco import COCO_STATS, MatchedBoxes


def _scene(seed: int, images: int = 120) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    categories = [1, 2, 3]
    annotations, detections = [], []
    for image in range(images):
        for _ in range(rng.integers(0, 6)):
            x, y, w, h = (
                rng.uniform(0, 500),
                rng.uniform(0, 350),
                rng.uniform(4, 150),
                rng.uniform(4, 150),
            )
            category = int(rng.choice(categories))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            if rng.random() < 0.8:
                jitter = rng.normal(0, 5, 4)
                label = category if rng.random() < 0.9 else int(rng.choice(categories))
                detections.append(
                    {
                        "image_id": image,
                        "category_id": label,
                        "score": float(rng.random()),
                        "bbox": [
                            x + jitter[0],
                            y + jitter[1],
                            max(1.0, w + jitter[2]),
                            max(1.0, h + jitter[3]),
                        ],
                    }
                )
        for _ in range(rng.integers(0, 3)):
            detections.append(
                {
                    "image_id": image,
                    "category_id": int(rng.choice(categories)),
                    "score": float(rng.random() / 2),
                    "bbox": [rng.uniform(0, 500), rng.uniform(0, 350), 30.0, 30.0],
                }
            )
    dataset = {
        "images": [{"id": i, "width": 640, "height": 480} for i in range(images)],
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in categories],
    }
    return dataset, detections


def _full_evaluation(
    dataset: dict[str, Any], detections: list[dict[str, Any]], image_ids: list[int]
) -> dict[str, float]:
    """The reference: a whole, separate COCO evaluation restricted to ``image_ids``."""
    ground_truth = COCO()
    ground_truth.dataset = copy.deepcopy(dataset)
    ground_truth.createIndex()
    evaluator = COCOeval_faster(
        ground_truth,
        ground_truth.loadRes(copy.deepcopy(detections)),
        iouType="bbox",
        print_function=lambda *_: None,
    )
    evaluator.params.imgIds = image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {
        name: (math.nan if v < 0 else float(v))
        for name, v in zip(COCO_STATS, evaluator.stats, strict=False)
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_subset_accumulation_equals_a_full_evaluation_of_the_subset(seed: int) -> None:
    dataset, detections = _scene(seed)
    matched = MatchedBoxes(dataset, detections)
    subsets = [list(range(0, 120, 3)), list(range(60, 120)), [5], list(range(120))]
    for subset in subsets:
        ours = matched.stats(subset)
        reference = _full_evaluation(dataset, detections, subset)
        for name in COCO_STATS:
            assert (math.isnan(ours[name]) and math.isnan(reference[name])) or abs(
                ours[name] - reference[name]
            ) < 1e-12, (subset[:3], name)


def test_unknown_image_ids_are_rejected() -> None:
    dataset, detections = _scene(2, images=10)
    with pytest.raises(ValueError, match=r"unknown ids \[99\]"):
        MatchedBoxes(dataset, detections).stats([1, 99])


def test_no_detections_gives_zero_recall_not_an_error() -> None:
    dataset, _ = _scene(3, images=10)
    stats = MatchedBoxes(dataset, []).stats(list(range(10)))
    assert stats["mar_100"] == 0.0
