"""COCO box matching done once, accumulated per image subset (groundwork for sliced detection mAP).

faster-coco-eval's ``COCOeval_faster(separate_eval=True).evaluate()`` matches every (category, area
range, image) once and keeps the per-image results in ``_evalImgs_cpp``, a Python list laid out as
``[category][area range][image]``. Accumulating only the entries of a subset of images, with
parameters whose ``imgIds`` are that subset, gives exactly the numbers of a full evaluation restricted to
those images (``tests/metrics/test_coco.py`` checks it against such an evaluation). So S image-level
slices cost one matching pass plus S cheap accumulations instead of S + 1 evaluations.

This relies on two private names of faster-coco-eval (``_evalImgs_cpp`` and its C++ module's
``COCOevalAccumulate``); the version is pinned in constraints.txt and the test fails if they change.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Names of ``COCOeval.stats[:12]`` in order (pycocotools' ``summarize``).
COCO_STATS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def _faster_coco_eval() -> tuple[Any, Any, Any]:
    try:
        from faster_coco_eval import COCO, COCOeval_faster, faster_eval_api_cpp
    except ModuleNotFoundError as error:  # pragma: no cover - exercised only without the package
        raise ModuleNotFoundError(
            "COCO evaluation needs faster-coco-eval: pip install -c constraints.txt faster-coco-eval"
        ) from error
    return COCO, COCOeval_faster, faster_eval_api_cpp


class MatchedBoxes:
    """One COCO matching pass over every image; per-subset COCO stats from it.

    Args:
        dataset: a COCO ground-truth dict (``images``, ``annotations``, ``categories``).
        detections: COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).

    Example:
        >>> gt = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1, "name": "car"}],
        ...       "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
        ...                        "area": 100, "iscrowd": 0},
        ...                       {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10],
        ...                        "area": 100, "iscrowd": 0}]}
        >>> matched = MatchedBoxes(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}])
        >>> round(matched.stats([1])["map"], 3), round(matched.stats([2])["mar_100"], 3)
        (1.0, 0.0)
    """

    def __init__(self, dataset: dict[str, Any], detections: Sequence[dict[str, Any]]) -> None:
        coco_class, evaluator_class, self._cpp = _faster_coco_eval()
        ground_truth = coco_class()
        ground_truth.dataset = copy.deepcopy(dataset)
        ground_truth.createIndex()
        results = (
            ground_truth.loadRes(copy.deepcopy(list(detections))) if detections else coco_class()
        )
        if not detections:
            results.dataset = {
                "images": ground_truth.dataset["images"],
                "annotations": [],
                "categories": ground_truth.dataset["categories"],
            }
            results.createIndex()
        self._evaluator = evaluator_class(
            ground_truth,
            results,
            iouType="bbox",
            separate_eval=True,
            print_function=lambda *_: None,
        )
        self._evaluator.evaluate()
        params = self._evaluator._paramsEval
        self.image_ids: tuple[int, ...] = tuple(int(i) for i in params.imgIds)
        self._position = {image: n for n, image in enumerate(self.image_ids)}

    def stats(self, image_ids: Sequence[int]) -> dict[str, float]:
        """COCO stats over ``image_ids`` only (NaN where COCO reports -1: nothing to measure).

        Raises:
            ValueError: if an image id is not in the evaluated set.
        """
        unknown = [i for i in image_ids if i not in self._position]
        if unknown:
            raise ValueError(
                f"Expected image ids from the evaluated images, but got unknown ids {unknown[:5]}."
            )
        evaluator = self._evaluator
        params = copy.deepcopy(evaluator._paramsEval)
        images, areas = len(params.imgIds), len(params.areaRng)
        categories = len(params.catIds) if params.useCats else 1
        chosen = sorted({self._position[i] for i in image_ids})
        every = evaluator._evalImgs_cpp
        subset = [
            every[(c * areas + a) * images + i]
            for c in range(categories)
            for a in range(areas)
            for i in chosen
        ]
        params.imgIds = [self.image_ids[i] for i in chosen]
        evaluator.eval = self._cpp.COCOevalAccumulate(params, subset)
        evaluator.params = params
        evaluator.summarize()
        values = np.asarray(evaluator.stats[: len(COCO_STATS)], dtype=np.float64)
        return {
            name: (float("nan") if v < 0 else float(v))
            for name, v in zip(COCO_STATS, values, strict=True)
        }
