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

import contextlib
import copy
import importlib.util
import io
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


def _coco_pair(
    coco_class: Any,
    dataset: dict[str, Any],
    detections: Sequence[dict[str, Any]],
    detection_areas: Sequence[float] | None,
    copy_inputs: bool,
) -> tuple[Any, Any]:
    """Ground truth and results as COCO objects of ``coco_class`` (either library's)."""
    ground_truth = coco_class()
    ground_truth.dataset = copy.deepcopy(dataset) if copy_inputs else dataset
    ground_truth.createIndex()
    detections = copy.deepcopy(list(detections)) if copy_inputs else list(detections)
    results = ground_truth.loadRes(detections) if detections else coco_class()
    if detections and detection_areas is not None:
        # loadRes sets a result's area to its box's; a caller may give other values to place the
        # detection in or out of each area range (the object-level slices do).
        for annotation, area in zip(results.dataset["annotations"], detection_areas, strict=True):
            annotation["area"] = float(area)
    if not detections:
        results.dataset = {
            "images": ground_truth.dataset["images"],
            "annotations": [],
            "categories": ground_truth.dataset["categories"],
        }
        results.createIndex()
    return ground_truth, results


#: The metrics a bootstrap replicate gets (those of COCO's accumulation; not the box counts).
REPLICATE_METRICS: tuple[str, ...] = ("map", "map_50", "map_75", "mar_100", "recall_50")


def _coco_metrics(precision: np.ndarray, recall: np.ndarray, iou: np.ndarray) -> dict[str, float]:
    """:data:`REPLICATE_METRICS` from COCO's accumulated arrays (one area range, 100 detections)."""
    index_50, index_75 = int(np.argmin(np.abs(iou - 0.5))), int(np.argmin(np.abs(iou - 0.75)))
    return {
        "map": _mean_defined(precision),
        "map_50": _mean_defined(precision[index_50]),
        "map_75": _mean_defined(precision[index_75]),
        "mar_100": _mean_defined(recall),
        "recall_50": _mean_defined(recall[index_50]),
    }


def _summary(
    precision: np.ndarray,
    recall: np.ndarray,
    iou: np.ndarray,
    counts: tuple[np.ndarray, np.ndarray, int],
) -> dict[str, float]:
    """The project's metrics from COCO's accumulated arrays (one area range, 100 detections)."""
    true_positives, counted, objects = counts
    with np.errstate(divide="ignore", invalid="ignore"):
        per_category = true_positives / counted
    return {
        **_coco_metrics(precision, recall, iou),
        "precision_50": float(per_category[counted > 0].mean())
        if (counted > 0).any()
        else float("nan"),
        "objects": float(objects),
    }


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

    def __init__(
        self,
        dataset: dict[str, Any],
        detections: Sequence[dict[str, Any]],
        *,
        area_ranges: Sequence[tuple[float, float]] | None = None,
        detection_areas: Sequence[float] | None = None,
        copy_inputs: bool = True,
    ) -> None:
        coco_class, evaluator_class, self._cpp = _faster_coco_eval()
        ground_truth, results = _coco_pair(
            coco_class, dataset, detections, detection_areas, copy_inputs
        )
        self._evaluator = evaluator_class(
            ground_truth,
            results,
            iouType="bbox",
            separate_eval=True,
            print_function=lambda *_: None,
        )
        if area_ranges is not None:
            self._evaluator.params.areaRng = [[float(a), float(b)] for a, b in area_ranges]
            self._evaluator.params.areaRngLbl = [f"range{i}" for i in range(len(area_ranges))]
        self._evaluator.evaluate()
        params = self._evaluator._paramsEval
        self.image_ids: tuple[int, ...] = tuple(int(i) for i in params.imgIds)
        self._position = {image: n for n, image in enumerate(self.image_ids)}
        self._boxes = _BoxTable(ground_truth, results, params)
        self._evaluated_at_50: list[Any] | None = None
        self._matched_by_area: dict[int, np.ndarray] = {}

    def _matches_at_50(self) -> list[Any]:
        """Per-image matches at IoU 0.5 alone, from the IoUs already computed (C++ only).

        The accumulation's ``matched`` pairs are the union over every IoU threshold (a detection may
        take a box at 0.75 that a better-scored one took at 0.5), so counting true positives at 0.5
        needs a matching at 0.5 alone.
        """
        if self._evaluated_at_50 is None:
            evaluator = self._evaluator
            params = evaluator._paramsEval
            categories = params.catIds if params.useCats else [-1]
            ious = [[evaluator.ious[i, c] for c in categories] for i in params.imgIds]
            self._evaluated_at_50 = self._cpp.COCOevalEvaluateImages(
                params.areaRng,
                params.maxDets[-1],
                [0.5],
                ious,
                evaluator.gt_dataset,
                evaluator.dt_dataset,
                params.imgIds,
                params.catIds,
                bool(params.useCats),
            )
        return self._evaluated_at_50

    def _matched_at_50(self, area: int) -> np.ndarray:
        """For every detection, the box it matches at IoU 0.5 in area range ``area`` (-1: none).

        Matching is per image, so the matches of any image subset are these, restricted to it: one
        accumulation over every image serves every slice.
        """
        if area not in self._matched_by_area:
            evaluated, _ = self._accumulate(self.image_ids, area, at_50=True)
            self._matched_by_area[area] = self._boxes.matched_boxes(evaluated["matched"])
        return self._matched_by_area[area]

    def _accumulate(
        self,
        image_ids: Sequence[int],
        area: int | None,
        *,
        at_50: bool = False,
        repeats: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        """COCO's accumulation over ``image_ids`` (and one area range, or all when ``None``).

        With ``repeats`` an id listed k times counts as k copies of its image (a bootstrap
        replicate); otherwise repeated ids count once.
        """
        unknown = [i for i in image_ids if i not in self._position]
        if unknown:
            raise ValueError(
                f"Expected image ids from the evaluated images, but got unknown ids {unknown[:5]}."
            )
        evaluator = self._evaluator
        params = copy.copy(evaluator._paramsEval)
        images, areas = len(params.imgIds), len(params.areaRng)
        categories = len(params.catIds) if params.useCats else 1
        positions = [self._position[i] for i in image_ids]
        chosen = sorted(positions) if repeats else sorted(set(positions))
        kept = range(areas) if area is None else (area,)
        every = self._matches_at_50() if at_50 else evaluator._evalImgs_cpp
        if at_50:
            params.iouThrs = np.array([0.5])
        subset = [
            every[(c * areas + a) * images + i]
            for c in range(categories)
            for a in kept
            for i in chosen
        ]
        params.imgIds = [self.image_ids[i] for i in chosen]
        if area is not None:
            params.areaRng = [params.areaRng[area]]
            params.areaRngLbl = [params.areaRngLbl[area]]
        return self._cpp.COCOevalAccumulate(params, subset), params

    def stats(self, image_ids: Sequence[int]) -> dict[str, float]:
        """COCO stats over ``image_ids`` only (NaN where COCO reports -1: nothing to measure).

        Raises:
            ValueError: if an image id is not in the evaluated set.
        """
        evaluator = self._evaluator
        evaluator.eval, evaluator.params = self._accumulate(image_ids, None)
        evaluator.summarize()
        values = np.asarray(evaluator.stats[: len(COCO_STATS)], dtype=np.float64)
        return {
            name: (float("nan") if v < 0 else float(v))
            for name, v in zip(COCO_STATS, values, strict=True)
        }

    def replicate_stats(
        self, image_ids: Sequence[int], weights: np.ndarray, *, area: int = 0
    ) -> dict[str, np.ndarray]:
        """:data:`REPLICATE_METRICS` of bootstrap replicates reusing this matching pass.

        Replicate ``b`` counts image ``image_ids[i]`` ``weights[b, i]`` times (COCO's accumulation
        over the repeated images: the same numbers as evaluating a data set holding those copies).

        Args:
            image_ids: The slice's images.
            weights: ``(B, len(image_ids))`` non-negative integer weights.
            area: Index of the area range.

        Returns:
            Metric name -> ``(B,)`` values (NaN where a replicate has nothing to measure).
        """
        ids = np.asarray(image_ids, dtype=np.int64)
        counts = np.asarray(weights, dtype=np.int64)
        iou = np.asarray(self._evaluator._paramsEval.iouThrs)
        out = {name: np.full(counts.shape[0], np.nan) for name in REPLICATE_METRICS}
        for b in range(counts.shape[0]):
            repeated = np.repeat(ids, counts[b]).tolist()
            if not repeated:
                continue
            evaluated, _ = self._accumulate(repeated, area, repeats=True)
            values = _coco_metrics(
                np.asarray(evaluated["precision"])[:, :, :, 0, -1],
                np.asarray(evaluated["recall"])[:, :, 0, -1],
                iou,
            )
            for name, value in values.items():
                out[name][b] = value
        return out

    def detection_stats(self, image_ids: Sequence[int], *, area: int = 0) -> dict[str, float]:
        """The detection metrics of this project over ``image_ids`` and one area range.

        ``map``, ``map_50``, ``map_75`` and ``mar_100`` are COCO's (means over the categories with
        ground truth, 100 detections per image). ``recall_50`` is COCO's recall at IoU 0.5 (macro over
        categories). ``precision_50`` is, per category, the matched detections at IoU 0.5 over every
        detection COCO does not ignore (up to 100 per image and category; a detection matched to a crowd
        or out-of-range box, or unmatched with its own area out of range, is ignored), averaged over
        the categories with such detections. ``objects`` counts the boxes that are not ignored.
        NaN where nothing can be measured.

        Raises:
            ValueError: if an image id is not in the evaluated set or ``area`` is not a range index.
        """
        if not 0 <= area < len(self._evaluator._paramsEval.areaRng):
            raise ValueError(
                f"Expected argument `area` to index the area ranges "
                f"{self._evaluator._paramsEval.areaRng}, but got {area}."
            )
        evaluated, _ = self._accumulate(image_ids, area)
        images = np.fromiter(image_ids, dtype=np.int64, count=len(image_ids))
        return _summary(
            np.asarray(evaluated["precision"])[:, :, :, 0, -1],
            np.asarray(evaluated["recall"])[:, :, 0, -1],
            np.asarray(self._evaluator._paramsEval.iouThrs),
            self._boxes.precision_counts(images, area, self._matched_at_50(area)),
        )


class PycocotoolsMatchedBoxes:
    """:class:`MatchedBoxes` on pycocotools, for where faster-coco-eval cannot be installed.

    The same numbers (the tests compare the two), slower: pycocotools matches in Python. The matching
    still runs once; a subset is accumulated by setting ``params.imgIds`` and ``params.areaRng`` to it
    after ``evaluate()``, which pycocotools' ``accumulate`` supports, and ``precision_50`` counts its
    per-image matches at IoU 0.5 (``dtMatches[0]``).

    Example:
        >>> gt = {"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [{"id": 1,
        ...       "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}]}
        >>> matched = PycocotoolsMatchedBoxes(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}])
        >>> stats = matched.detection_stats([1])
        >>> round(stats["map"], 6), stats["precision_50"], stats["objects"]
        (1.0, 1.0, 1.0)
    """

    def __init__(
        self,
        dataset: dict[str, Any],
        detections: Sequence[dict[str, Any]],
        *,
        area_ranges: Sequence[tuple[float, float]] | None = None,
        detection_areas: Sequence[float] | None = None,
        copy_inputs: bool = True,
    ) -> None:
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except (
            ModuleNotFoundError
        ) as error:  # pragma: no cover - exercised only without the package
            raise ModuleNotFoundError(
                "COCO evaluation needs faster-coco-eval or pycocotools: "
                "pip install -c constraints.txt faster-coco-eval"
            ) from error
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            ground_truth, results = _coco_pair(
                COCO, dataset, detections, detection_areas, copy_inputs
            )
            self._evaluator = COCOeval(ground_truth, results, "bbox")
            if area_ranges is not None:
                self._evaluator.params.areaRng = [[float(a), float(b)] for a, b in area_ranges]
                self._evaluator.params.areaRngLbl = [f"range{i}" for i in range(len(area_ranges))]
            self._evaluator.evaluate()
        params = self._evaluator._paramsEval
        self.image_ids: tuple[int, ...] = tuple(int(i) for i in params.imgIds)
        self._position = {image: n for n, image in enumerate(self.image_ids)}

    def replicate_stats(
        self, image_ids: Sequence[int], weights: np.ndarray, *, area: int = 0
    ) -> dict[str, np.ndarray]:
        """Not available on this backend.

        Raises:
            RuntimeError: Always: bootstrap replicates reuse faster-coco-eval's per-image evaluations.
        """
        raise RuntimeError(
            "Bootstrap intervals for detection need faster-coco-eval (the pycocotools fallback "
            "cannot reuse its matching pass for replicates). HINT: pip install faster-coco-eval."
        )

    def detection_stats(self, image_ids: Sequence[int], *, area: int = 0) -> dict[str, float]:
        """See :meth:`MatchedBoxes.detection_stats`.

        Raises:
            ValueError: if an image id is not in the evaluated set or ``area`` is not a range index.
        """
        evaluator = self._evaluator
        evaluated = evaluator._paramsEval
        if not 0 <= area < len(evaluated.areaRng):
            raise ValueError(
                f"Expected argument `area` to index the area ranges {evaluated.areaRng}, but got {area}."
            )
        unknown = [i for i in image_ids if i not in self._position]
        if unknown:
            raise ValueError(
                f"Expected image ids from the evaluated images, but got unknown ids {unknown[:5]}."
            )
        # pycocotools' accumulate indexes evalImgs with positions in the *new* params, so a subset
        # goes to a shallow copy holding only the subset's entries, laid out for the subset
        chosen = sorted(set(image_ids))
        images, areas = len(evaluated.imgIds), len(evaluated.areaRng)
        categories = list(evaluated.catIds) if evaluated.useCats else [-1]
        entries = [
            evaluator.evalImgs[(k * areas + area) * images + self._position[image]]
            for k in range(len(categories))
            for image in chosen
        ]
        params = copy.copy(evaluated)
        params.imgIds = chosen
        params.areaRng = [evaluated.areaRng[area]]
        params.areaRngLbl = [evaluated.areaRngLbl[area]]
        subset = copy.copy(evaluator)
        subset.evalImgs, subset.params, subset._paramsEval = entries, params, params
        with contextlib.redirect_stdout(io.StringIO()):
            subset.accumulate()
        true_positives = np.zeros(len(categories))
        counted = np.zeros(len(categories))
        objects = 0
        for n, entry in enumerate(entries):
            if entry is None:
                continue
            k = n // max(len(chosen), 1)
            objects += int((~np.asarray(entry["gtIgnore"], dtype=bool)).sum())
            kept = ~np.asarray(entry["dtIgnore"][0], dtype=bool)
            counted[k] += int(kept.sum())
            true_positives[k] += int((np.asarray(entry["dtMatches"][0])[kept] > 0).sum())
        return _summary(
            np.asarray(subset.eval["precision"])[:, :, :, 0, -1],
            np.asarray(subset.eval["recall"])[:, :, 0, -1],
            np.asarray(evaluated.iouThrs),
            (true_positives, counted, objects),
        )


#: Either matcher: the same constructor arguments and ``detection_stats``.
Matcher = MatchedBoxes | PycocotoolsMatchedBoxes
COCO_BACKENDS = ("faster-coco-eval", "pycocotools")


def coco_backends() -> tuple[str, ...]:
    """The COCO libraries that import here, fastest first."""
    found = []
    for name, module in (("faster-coco-eval", "faster_coco_eval"), ("pycocotools", "pycocotools")):
        if importlib.util.find_spec(module) is not None:
            found.append(name)
    return tuple(found)


def matched_boxes(
    dataset: dict[str, Any],
    detections: Sequence[dict[str, Any]],
    *,
    backend: str | None = None,
    **kwargs: Any,
) -> Matcher:
    """One matching pass over ``dataset`` and ``detections`` with a COCO library.

    ``backend``: ``"faster-coco-eval"``, ``"pycocotools"``, or ``None`` for the first of
    :func:`coco_backends`; ``kwargs`` go to :class:`MatchedBoxes`.

    Raises:
        ValueError: for an unknown backend.
        ModuleNotFoundError: with the pip command, when no COCO library imports.
    """
    if backend is None:
        available = coco_backends()
        if not available:
            raise ModuleNotFoundError(
                "COCO evaluation needs faster-coco-eval (or pycocotools): "
                "pip install -c constraints.txt faster-coco-eval"
            )
        backend = available[0]
    if backend == "faster-coco-eval":
        return MatchedBoxes(dataset, detections, **kwargs)
    if backend == "pycocotools":
        return PycocotoolsMatchedBoxes(dataset, detections, **kwargs)
    raise ValueError(
        f"Expected argument `backend` to be 'faster-coco-eval', 'pycocotools' or None, but got {backend!r}."
    )


def _mean_defined(values: np.ndarray) -> float:
    """COCO's summary: the mean of the entries that are not -1 (nothing to measure), else NaN."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else float("nan")


class _BoxTable:
    """Boxes and detections of one evaluation as arrays, to count matches per image subset."""

    def __init__(self, ground_truth: Any, results: Any, params: Any) -> None:
        gts = ground_truth.dataset["annotations"]
        dts = results.dataset.get("annotations", [])
        self.area_ranges = np.asarray(params.areaRng, dtype=np.float64).reshape(-1, 2)
        self.gt_ids = np.array([g["id"] for g in gts], dtype=np.int64)
        self.gt_image = np.array([g["image_id"] for g in gts], dtype=np.int64)
        self.gt_crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], dtype=bool)
        self.gt_area = np.array([g["area"] for g in gts], dtype=np.float64)
        self.gt_order = np.argsort(self.gt_ids, kind="stable")
        self.dt_ids = np.array([d["id"] for d in dts], dtype=np.int64)
        self.dt_image = np.array([d["image_id"] for d in dts], dtype=np.int64)
        self.dt_area = np.array([d["area"] for d in dts], dtype=np.float64)
        categories = [int(c) for c in params.catIds]
        self.num_categories = len(categories)
        lookup = {c: i for i, c in enumerate(categories)}
        self.dt_category = np.array([lookup.get(d["category_id"], -1) for d in dts], dtype=np.int64)
        self.dt_order = np.argsort(self.dt_ids, kind="stable")
        # COCO keeps the maxDets best-scored detections of each (image, category), ties in file order
        scores = np.array([d["score"] for d in dts], dtype=np.float64)
        order = np.lexsort((np.arange(len(dts)), -scores, self.dt_category, self.dt_image))
        group = self.dt_image[order] * (self.num_categories + 1) + self.dt_category[order]
        starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1] if len(dts) else np.zeros(0, int)
        rank = np.arange(len(dts)) - np.repeat(starts, np.diff(np.r_[starts, len(dts)]))
        self.dt_kept = np.zeros(len(dts), dtype=bool)
        self.dt_kept[order] = (rank < int(params.maxDets[-1])) & (self.dt_category[order] >= 0)

    def _outside(self, area: np.ndarray, index: int) -> np.ndarray:
        low, high = self.area_ranges[index]
        outside: np.ndarray = (area < low) | (area > high)
        return outside

    def matched_boxes(self, matched: dict[str, float]) -> np.ndarray:
        """Position of the box each detection matches (-1: none), from COCO's ``"dt_gt"`` keys."""
        matched_gt = np.full(self.dt_ids.shape[0], -1, dtype=np.int64)
        if matched:
            pairs = np.array([key.split("_", 1) for key in matched], dtype=np.int64).reshape(-1, 2)
            dt_at = self.dt_order[np.searchsorted(self.dt_ids, pairs[:, 0], sorter=self.dt_order)]
            gt_at = self.gt_order[np.searchsorted(self.gt_ids, pairs[:, 1], sorter=self.gt_order)]
            matched_gt[dt_at] = gt_at
        return matched_gt

    def precision_counts(
        self, images: np.ndarray, area: int, matched_gt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Per category: matched and counted detections at IoU 0.5; the boxes not ignored."""
        gt_ignored = self.gt_crowd | self._outside(self.gt_area, area)
        in_images = np.isin(self.gt_image, images)
        objects = int((in_images & ~gt_ignored).sum())
        is_matched = matched_gt >= 0
        to_ignored = is_matched & gt_ignored[np.where(is_matched, matched_gt, 0)]
        dt_in = self.dt_kept & np.isin(self.dt_image, images)
        ignored = to_ignored | (~is_matched & self._outside(self.dt_area, area))
        counted = dt_in & ~ignored
        true_positive = counted & is_matched
        size = self.num_categories
        return (
            np.bincount(self.dt_category[true_positive], minlength=size).astype(np.float64),
            np.bincount(self.dt_category[counted], minlength=size).astype(np.float64),
            objects,
        )
