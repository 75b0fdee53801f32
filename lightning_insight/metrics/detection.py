"""Sliced object-detection metrics: one COCO matching pass, then per-slice accumulation.

Images are kept (on the host) as they stream in; ``compute`` gathers them from every rank, drops the
copies ``DistributedSampler`` pads in (by sample id), orders them by sample id and builds one COCO
evaluation. Slices then cost:

- *image-level* attributes (``weather``, ``timeofday``: one value per image): an accumulation over the
  images of the slice, reusing the one matching pass (:class:`~lightning_insight.metrics.coco.MatchedBoxes`);
- *object-level* attributes (per-box keys of the target dicts such as ``occluded``, or ``box_area``
  computed from the boxes): one more matching pass per dimension (or per slice, see below) in which the
  ground truth outside the slice is ignored, as COCO ignores the boxes outside an area range. A detection
  matched to an ignored box is ignored; an unmatched detection is a false positive of the slice when its
  own value lies in the slice. Detections carry their own value only for ``box_area`` (their box's area);
  for attributes of the ground truth only (``occluded``) every unmatched detection is a false positive of
  every slice, so AP there reads "how well are these objects found, against all of the detector's false
  alarms"; ``recall_50`` and ``mar_100`` are the clean per-slice numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from lightning_insight.metrics.bootstrap import poisson_weights
from lightning_insight.metrics.coco import COCO_BACKENDS, REPLICATE_METRICS, Matcher, matched_boxes
from lightning_insight.slicing.index import SliceIndex
from lightning_insight.slicing.spec import AttributeSpec, SliceSpec

DETECTION_METRICS = (
    "map",
    "map_50",
    "map_75",
    "mar_100",
    "recall_50",
    "precision_50",
    "count",
    "objects",
)
#: The per-box attribute computed from the boxes when the targets do not carry it.
BOX_AREA = "box_area"
#: Target keys that are not per-box attributes.
_TARGET_FIELDS = frozenset({"boxes", "labels", "scores", "iscrowd", "area", "masks"})
#: Area given to a box or detection outside every object-level slice of an evaluation.
_OUTSIDE = -10.0
_ALL = ((0.0, math.inf),)


def _describe_image(position: int, sample_id: int | None) -> str:
    return f"image {position} of the batch" + (
        f" (sample_id {sample_id})" if sample_id is not None else ""
    )


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _values(value: Any) -> list[Any]:
    """Per-box or per-image attribute values as plain Python values."""
    if isinstance(value, torch.Tensor):
        return list(value.detach().cpu().reshape(-1).tolist())
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1).tolist())
    return [v.item() if isinstance(v, (np.generic, torch.Tensor)) else v for v in value]


def _boxes(value: Any, field: str, where: str) -> np.ndarray:
    boxes = _numpy(value).astype(np.float64, copy=False)
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"Expected `{field}` boxes of {where} to have shape (n, 4) in xyxy, but got "
            f"{tuple(boxes.shape)}."
        )
    bad = ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        raise ValueError(
            f"Expected finite `{field}` boxes of {where}, but box {int(np.argmax(bad))} is "
            f"{boxes[int(np.argmax(bad))].tolist()}."
        )
    flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if flipped.any():
        i = int(np.argmax(flipped))
        raise ValueError(
            f"Expected `{field}` boxes of {where} in xyxy with x2 >= x1 and y2 >= y1, but box {i} is "
            f"{boxes[i].tolist()}. HINT: convert xywh or cxcywh boxes to xyxy first."
        )
    return boxes


def _labels(value: Any, count: int, field: str, where: str, num_classes: int | None) -> np.ndarray:
    labels = _numpy(value).reshape(-1)
    if labels.shape[0] != count:
        raise ValueError(
            f"Expected `{field}` labels of {where} to hold one label per box ({count}), but got "
            f"{labels.shape[0]}."
        )
    if labels.size and (
        labels.dtype.kind not in "iub" and not np.array_equal(labels, np.round(labels))
    ):
        raise ValueError(
            f"Expected integer `{field}` labels of {where}, but got values such as {labels[:3].tolist()}."
        )
    labels = labels.astype(np.int64)
    high = num_classes if num_classes is not None else None
    outside = (labels < 0) | (labels >= high) if high is not None else labels < 0
    if outside.any():
        allowed = f"[0, {num_classes})" if num_classes is not None else "labels >= 0"
        raise ValueError(
            f"Expected `{field}` labels of {where} in the category set {allowed}, but got "
            f"{sorted(set(labels[outside].tolist()))[:5]}."
        )
    return labels


def _per_box(value: Any, count: int, name: str, field: str, where: str) -> list[Any]:
    values = _values(value) if not isinstance(value, (str, bytes)) else [value]
    if len(values) != count:
        raise ValueError(
            f"Expected per-box attribute {name!r} of {where} in `{field}` to have one value per box "
            f"({count}), but got {len(values)}."
        )
    return values


@dataclass(frozen=True, slots=True)
class _Image:
    """One image's boxes and detections, as plain arrays (picklable for the gather across ranks)."""

    sample_id: int | None
    attributes: dict[str, Any]
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_crowd: np.ndarray
    gt_area: np.ndarray
    gt_attributes: dict[str, list[Any]]
    dt_boxes: np.ndarray
    dt_scores: np.ndarray
    dt_labels: np.ndarray


@dataclass(slots=True)
class DetectionSliceStats:
    """Detection metrics per slice of one evaluation (not frozen: torchmetrics copies results).

    Attributes:
        overall: metric name -> value over every image.
        dimensions: dimension name -> (slice names, metric name -> values per slice).
        support: dimension name -> the metric ``min_support`` applies to (``"count"``: images for
            image-level dimensions; ``"objects"`` for dimensions with an object-level attribute).
        object_level: names of the attributes read per box.
        overall_replicates: with a bootstrap, metric name -> ``(B,)`` replicate values.
        replicates: with a bootstrap, dimension -> metric name -> ``(B, S)`` replicate values.
    """

    overall: dict[str, float]
    dimensions: dict[str, tuple[list[str], dict[str, np.ndarray]]]
    support: dict[str, str]
    object_level: tuple[str, ...]
    overall_replicates: dict[str, np.ndarray] | None = None
    replicates: dict[str, dict[str, np.ndarray]] | None = None


class _DetectionIndex:
    """Values -> ids of the image-level and object-level attributes, and the intersections seen.

    Ids only grow, so a slice keeps its place across epochs; ``state_dict`` holds plain lists.
    """

    def __init__(self, specs: Sequence[SliceSpec], max_slices: int) -> None:
        self.specs = tuple(specs)
        self.max_slices = max_slices
        self.attributes: dict[str, AttributeSpec] = {}
        for spec in self.specs:
            for attribute in spec.attributes:
                self.attributes.setdefault(attribute.key, attribute)
        # one index per attribute: image- and object-level values come in different numbers
        self.indexes = {
            k: SliceIndex([SliceSpec(attributes=(a,))], max_slices=max_slices)
            for k, a in self.attributes.items()
        }
        self.seen: dict[str, set[tuple[int, ...]]] = {s.name: set() for s in self.specs}

    def ids(self, key: str, values: Sequence[Any]) -> np.ndarray:
        """Ids of ``values`` of one attribute (-1 where a binned value is out of range)."""
        attribute = self.attributes[key]
        index = self.indexes[key]
        found = index.attribute_ids({attribute.name: list(values)}, len(values))[key]
        # new values got provisional ids; agreeing on them (every rank holds the same gathered
        # images, so no exchange is needed) may renumber them
        remap = index.align(None).get(key)
        if remap is not None:
            found = torch.where(found >= 0, remap[found.clamp_min(0)], found)
        return found.numpy().astype(np.int64)

    def labels(self, key: str) -> list[str]:
        attribute = self.attributes[key]
        if attribute.is_binned:
            return list(attribute.bin_labels())
        return [str(v) for v in self.indexes[key].values(key)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "indexes": {k: index.state_dict() for k, index in self.indexes.items()},
            "seen": {k: sorted(list(c) for c in v) for k, v in self.seen.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, index_state in state.get("indexes", {}).items():
            if key in self.indexes:
                self.indexes[key].load_state_dict(index_state)
        for name, combos in state.get("seen", {}).items():
            if name in self.seen:
                self.seen[name] = {tuple(c) for c in combos}


class SlicedDetection(Metric):
    """Streaming COCO detection metrics per slice (DDP-exact, one matching pass for image slices).

    ``update`` takes torchmetrics-style lists of per-image dicts: ``preds`` with ``boxes`` (xyxy),
    ``scores`` and ``labels``; ``target`` with ``boxes``, ``labels``, optionally ``iscrowd`` (boxes COCO
    ignores), ``area`` and per-box attributes (any other key, e.g. ``occluded``). Image-level attributes
    come in ``attributes`` (one value per image). Each input is checked as it arrives, and an error names
    the image and the field.

    Args:
        specs: the dimensions (parsed slice specs). An attribute is image-level when ``attributes``
            holds it, object-level when every target dict does, and ``box_area`` is computed from the
            boxes (the target's ``area`` when given, else the box's) when neither does.
        num_classes: labels must lie in ``[0, num_classes)``; ``None`` takes the categories from the data.
        max_slices: the most distinct values one categorical attribute may take.
        backend: the COCO library that matches boxes: ``"faster-coco-eval"`` (a dependency; one
            matching pass serves every image-level slice), ``"pycocotools"`` (the fallback, same numbers,
            matching in Python), or ``None`` for the first that imports.
        bootstrap: ``B`` Poisson bootstrap replicates over images (0: none; faster-coco-eval only):
            image ``i`` counts ``w_ib`` times in replicate ``b``, its weights drawn from its sample id
            (its position in the epoch without ids). Each replicate re-accumulates the existing
            matching pass, once per slice: map, map_50, map_75, mar_100 and recall_50 get replicates.
        seed: seed of the bootstrap weights.

    Example:
        >>> from lightning_insight.slicing import parse_slice_specs
        >>> metric = SlicedDetection(specs=parse_slice_specs(["weather"]))
        >>> box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        >>> metric.update([{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])},
        ...                {"boxes": box[:0], "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}],
        ...               [{"boxes": box, "labels": torch.tensor([1])}, {"boxes": box, "labels": torch.tensor([1])}],
        ...               {"weather": ["sun", "rain"]})
        >>> stats = metric.compute()
        >>> names, values = stats.dimensions["weather"]
        >>> names, values["map"].tolist(), stats.overall["recall_50"]
        (['weather=rain', 'weather=sun'], [0.0, 1.0], 0.5)
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(
        self,
        *,
        specs: Sequence[SliceSpec],
        num_classes: int | None = None,
        max_slices: int = 1000,
        backend: str | None = None,
        bootstrap: int = 0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
            raise ValueError(
                f"Expected argument `bootstrap` to be an int >= 0, but got {bootstrap!r}."
            )
        self.bootstrap = bootstrap
        self.seed = seed
        if backend is not None and backend not in COCO_BACKENDS:
            raise ValueError(
                f"Expected argument `backend` to be one of {list(COCO_BACKENDS)} or None, but got "
                f"{backend!r}."
            )
        self.backend = backend
        if num_classes is not None and (
            not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
        ):
            raise ValueError(
                f"Expected argument `num_classes` to be an int >= 1 or None, but got {num_classes!r}."
            )
        self.specs = tuple(specs)
        self.num_classes = num_classes
        self.index = _DetectionIndex(self.specs, max_slices)
        self._names = list(dict.fromkeys(a.name for s in self.specs for a in s.attributes))
        self._levels: dict[str, str] = {}
        self._images: list[_Image] = []

    # ------------------------------------------------------------------ streaming
    def _decide_levels(
        self, attributes: Mapping[str, Any], target: Sequence[Mapping[str, Any]]
    ) -> None:
        for name in self._names:
            if name in attributes:
                level = "image"
            elif target and all(name in t for t in target):
                level = "box"
            elif name == BOX_AREA:
                level = "area"
            elif not target:
                continue  # an empty batch decides nothing
            else:
                keys = sorted({str(k) for t in target for k in t} - _TARGET_FIELDS)
                raise RuntimeError(
                    f"Expected attribute {name!r} (needed by argument `slices`) in the image attributes "
                    f"(one value per image) or as a per-box key of every target dict, but found image "
                    f"attributes {sorted(str(k) for k in attributes)} and per-box keys {keys}."
                )
            known = self._levels.get(name)
            if known is not None and known != level:
                raise RuntimeError(
                    f"Expected attribute {name!r} to stay {'an image' if known == 'image' else 'a per-box'} "
                    f"attribute, but a later batch gives it {'per image' if level == 'image' else 'per box'}."
                )
            self._levels[name] = level

    def update(  # type: ignore[override]
        self,
        preds: Sequence[Mapping[str, Any]],
        target: Sequence[Mapping[str, Any]],
        attributes: Mapping[str, Any],
        sample_ids: Any | None = None,
    ) -> None:
        """Check and keep one batch of images.

        Raises:
            TypeError: if ``preds``/``target`` are not lists of dicts.
            ValueError: naming the image and the field: box shape, x2 < x1, non-finite boxes, NaN scores,
                labels outside the category set, per-box attributes of the wrong length.
            RuntimeError: if an attribute a dimension needs is nowhere to be found.
        """
        if (
            not isinstance(preds, Sequence)
            or not isinstance(target, Sequence)
            or isinstance(preds, (str, bytes))
        ):
            raise TypeError(
                "Expected `preds` and `target` for task='detection' to be lists of per-image dicts, but "
                f"got {type(preds).__name__} and {type(target).__name__}."
            )
        if len(preds) != len(target):
            raise ValueError(
                f"Expected one `preds` dict per `target` dict, but got {len(preds)} and {len(target)}."
            )
        count = len(target)
        ids: list[int | None] = [None] * count
        if sample_ids is not None:
            ids = [int(i) for i in _values(sample_ids)]
            if len(ids) != count:
                raise ValueError(f"Expected one sample id per image ({count}), but got {len(ids)}.")
        for name, values in attributes.items():
            if name in self._names and len(values) != count:
                raise ValueError(
                    f"Expected image attribute {name!r} to have one value per image ({count}), but got "
                    f"{len(values)} values."
                )
        self._decide_levels(attributes, target)
        image_values = {
            n: _values(attributes[n]) for n in self._names if self._levels.get(n) == "image"
        }
        box_names = [n for n in self._names if self._levels.get(n) == "box"]
        for i, (pred, truth) in enumerate(zip(preds, target, strict=True)):
            where = _describe_image(i, ids[i])
            for field, item, needed in (
                ("preds", pred, ("boxes", "scores", "labels")),
                ("target", truth, ("boxes", "labels")),
            ):
                if not isinstance(item, Mapping):
                    raise TypeError(
                        f"Expected `{field}` of {where} to be a dict with keys {list(needed)}, but got "
                        f"{type(item).__name__}."
                    )
                missing = [k for k in needed if k not in item]
                if missing:
                    raise ValueError(
                        f"Expected `{field}` of {where} to have keys {list(needed)}, but {missing} are "
                        f"missing (found {sorted(str(k) for k in item)})."
                    )
            gt_boxes = _boxes(truth["boxes"], "target", where)
            n = gt_boxes.shape[0]
            dt_boxes = _boxes(pred["boxes"], "preds", where)
            d = dt_boxes.shape[0]
            scores = _numpy(pred["scores"]).astype(np.float64).reshape(-1)
            if scores.shape[0] != d:
                raise ValueError(
                    f"Expected `preds` scores of {where} to hold one score per box ({d}), but got "
                    f"{scores.shape[0]}."
                )
            if not np.isfinite(scores).all():
                raise ValueError(
                    f"Expected finite `preds` scores of {where}, but got "
                    f"{int((~np.isfinite(scores)).sum())} NaN or infinite scores."
                )
            crowd = np.zeros(n, dtype=bool)
            if "iscrowd" in truth:
                crowd = np.asarray(_per_box(truth["iscrowd"], n, "iscrowd", "target", where), bool)
            widths = gt_boxes[:, 2] - gt_boxes[:, 0]
            heights = gt_boxes[:, 3] - gt_boxes[:, 1]
            area = widths * heights
            if "area" in truth:
                area = np.asarray(_per_box(truth["area"], n, "area", "target", where), np.float64)
            self._images.append(
                _Image(
                    sample_id=ids[i],
                    attributes={k: v[i] for k, v in image_values.items()},
                    gt_boxes=gt_boxes,
                    gt_labels=_labels(truth["labels"], n, "target", where, self.num_classes),
                    gt_crowd=crowd,
                    gt_area=area,
                    gt_attributes={k: _per_box(truth[k], n, k, "target", where) for k in box_names},
                    dt_boxes=dt_boxes,
                    dt_scores=scores,
                    dt_labels=_labels(pred["labels"], d, "preds", where, self.num_classes),
                )
            )

    def reset(self) -> None:
        """Forget the images; keep the attribute index (slice ids stay stable across epochs)."""
        super().reset()
        self._images = []

    # ------------------------------------------------------------------ computing
    def _gathered(self) -> list[_Image]:
        images = list(self._images)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if (
            self._to_sync
            and distributed
            and torch.distributed.get_world_size(self.process_group) > 1
        ):
            parts: list[Any] = [None] * torch.distributed.get_world_size(self.process_group)
            torch.distributed.all_gather_object(parts, images, group=self.process_group)
            images = [image for part in parts for image in part]
        if images and all(image.sample_id is not None for image in images):
            unique: dict[int, _Image] = {}
            for image in images:
                unique.setdefault(int(image.sample_id), image)  # type: ignore[arg-type]
            images = [unique[k] for k in sorted(unique)]
        return images

    def compute(self) -> DetectionSliceStats:  # type: ignore[override]
        """Metrics per slice over every image seen since the last reset (a collective under DDP)."""
        return _slice_stats(
            self._gathered(),
            self.specs,
            self.index,
            self._levels,
            self.num_classes,
            self.backend,
            bootstrap=self.bootstrap,
            seed=self.seed,
        )


class _Evaluation:
    """All images as COCO data, and the matching passes made over them."""

    def __init__(
        self, images: Sequence[_Image], num_classes: int | None, backend: str | None
    ) -> None:
        self.backend = backend
        self.count = len(images)
        self.gt_image = np.concatenate(
            [np.full(len(im.gt_labels), i, np.int64) for i, im in enumerate(images)]
        )
        self.dt_image = np.concatenate(
            [np.full(len(im.dt_labels), i, np.int64) for i, im in enumerate(images)]
        )
        gt_boxes = np.concatenate([im.gt_boxes for im in images])
        gt_labels = np.concatenate([im.gt_labels for im in images])
        self.gt_crowd = np.concatenate([im.gt_crowd for im in images])
        self.gt_area = np.concatenate([im.gt_area for im in images])
        dt_boxes = np.concatenate([im.dt_boxes for im in images])
        dt_labels = np.concatenate([im.dt_labels for im in images])
        dt_scores = np.concatenate([im.dt_scores for im in images])
        self.dt_area = (dt_boxes[:, 2] - dt_boxes[:, 0]) * (dt_boxes[:, 3] - dt_boxes[:, 1])
        categories = (
            range(num_classes)
            if num_classes is not None
            else sorted(set(gt_labels.tolist()) | set(dt_labels.tolist()))
        )
        # COCO ids start at 1 (image 0, category 0 are legal but unusual enough to avoid)
        self._images = [{"id": i + 1} for i in range(self.count)]
        self._categories = [{"id": int(c) + 1, "name": str(c)} for c in categories]
        self._gt_columns = (
            (self.gt_image + 1).tolist(),
            (gt_labels + 1).tolist(),
            np.column_stack([gt_boxes[:, :2], gt_boxes[:, 2:] - gt_boxes[:, :2]]).tolist(),
            self.gt_crowd.astype(int).tolist(),
        )
        dt_xywh = np.column_stack([dt_boxes[:, :2], dt_boxes[:, 2:] - dt_boxes[:, :2]]).tolist()
        self._dt = [
            {"image_id": image, "category_id": label, "bbox": box, "score": score}
            for image, label, box, score in zip(
                (self.dt_image + 1).tolist(),
                (dt_labels + 1).tolist(),
                dt_xywh,
                dt_scores.tolist(),
                strict=True,
            )
        ]

    def match(
        self,
        gt_area: np.ndarray,
        dt_area: np.ndarray | None,
        area_ranges: Sequence[tuple[float, float]],
    ) -> Matcher:
        """One matching pass with the given areas deciding which boxes each range ignores."""
        images, labels, boxes, crowds = self._gt_columns
        annotations = [
            {"id": n, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": k}
            for n, i, c, b, a, k in zip(
                range(1, len(images) + 1),
                images,
                labels,
                boxes,
                gt_area.tolist(),
                crowds,
                strict=True,
            )
        ]
        dataset = {
            "images": self._images,
            "annotations": annotations,
            "categories": self._categories,
        }
        detections = [dict(d) for d in self._dt]
        return matched_boxes(
            dataset,
            detections,
            backend=self.backend,
            area_ranges=area_ranges,
            detection_areas=None if dt_area is None else dt_area.tolist(),
            copy_inputs=False,
        )

    def images_in(self, mask: np.ndarray) -> list[int]:
        return (np.flatnonzero(mask) + 1).tolist()


def _nan_stats() -> dict[str, float]:
    return {m: math.nan for m in DETECTION_METRICS if m not in ("count", "objects")} | {
        "objects": 0.0
    }


def _slice_stats(
    images: Sequence[_Image],
    specs: Sequence[SliceSpec],
    index: _DetectionIndex,
    levels: Mapping[str, str],
    num_classes: int | None,
    backend: str | None,
    *,
    bootstrap: int = 0,
    seed: int = 0,
) -> DetectionSliceStats:
    object_level = tuple(n for n, level in levels.items() if level != "image")
    count = len(images)
    evaluation = _Evaluation(images, num_classes, backend) if count else None
    # (B, images): replicate b counts image i weights[b, i] times
    weights: np.ndarray | None = None
    if bootstrap and count:
        ids = [i if im.sample_id is None else im.sample_id for i, im in enumerate(images)]
        weights = poisson_weights(torch.as_tensor(ids), bootstrap, seed=seed).numpy().T
    # ids of every attribute: per image for image-level ones, per box (and per detection for box_area)
    image_ids: dict[str, np.ndarray] = {}
    gt_ids: dict[str, np.ndarray] = {}
    dt_ids: dict[str, np.ndarray] = {}
    for key, attribute in index.attributes.items():
        level = levels.get(attribute.name)
        if level == "image":
            image_ids[key] = index.ids(key, [im.attributes[attribute.name] for im in images])
        elif level == "box":
            values = [v for im in images for v in im.gt_attributes[attribute.name]]
            gt_ids[key] = index.ids(key, values)
        elif level == "area" and evaluation is not None:
            gt_ids[key] = index.ids(key, evaluation.gt_area.tolist())
            dt_ids[key] = index.ids(key, evaluation.dt_area.tolist())
    main = evaluation.match(evaluation.gt_area, None, _ALL) if evaluation is not None else None
    overall = main.detection_stats(list(range(1, count + 1))) if main is not None else _nan_stats()
    overall["count"] = float(count)
    overall_replicates = (
        main.replicate_stats(list(range(1, count + 1)), weights)
        if main is not None and weights is not None
        else None
    )
    replicates: dict[str, dict[str, np.ndarray]] = {}
    dimensions: dict[str, tuple[list[str], dict[str, np.ndarray]]] = {}
    support: dict[str, str] = {}
    for spec in specs:
        keys = [a.key for a in spec.attributes]
        boxed = [k for k in keys if levels.get(index.attributes[k].name) in ("box", "area")]
        support[spec.name] = "objects" if boxed else "count"
        combos = _combos(spec, index, image_ids, gt_ids, evaluation)
        names = [
            spec.slice_name(tuple(index.labels(k)[c] for k, c in zip(keys, combo, strict=True)))
            for combo in combos
        ]
        rows = [_nan_stats() | {"count": 0.0} for _ in combos]
        replicate_rows: list[dict[str, np.ndarray]] = []
        if evaluation is not None and combos:
            rows, replicate_rows = _dimension_stats(
                spec, combos, evaluation, main, image_ids, gt_ids, dt_ids, boxed, weights
            )
        if bootstrap:
            replicates[spec.name] = {
                metric: (
                    np.stack([row[metric] for row in replicate_rows], axis=1)
                    if replicate_rows
                    else np.full((bootstrap, len(combos)), np.nan)
                )
                for metric in REPLICATE_METRICS
            }
        columns = {
            metric: np.array([row[metric] for row in rows], dtype=np.float64)
            for metric in DETECTION_METRICS
        }
        dimensions[spec.name] = (names, columns)
    return DetectionSliceStats(
        overall={m: float(overall[m]) for m in DETECTION_METRICS},
        dimensions=dimensions,
        support=support,
        object_level=object_level,
        overall_replicates=(
            None
            if not bootstrap
            else overall_replicates or {m: np.full(bootstrap, np.nan) for m in REPLICATE_METRICS}
        ),
        replicates=replicates if bootstrap else None,
    )


def _combos(
    spec: SliceSpec,
    index: _DetectionIndex,
    image_ids: Mapping[str, np.ndarray],
    gt_ids: Mapping[str, np.ndarray],
    evaluation: _Evaluation | None,
) -> list[tuple[int, ...]]:
    """The slices of a dimension: every known value of one attribute; intersections once seen."""
    keys = [a.key for a in spec.attributes]
    if len(keys) == 1:
        return [(i,) for i in range(len(index.labels(keys[0])))]
    if evaluation is not None:
        if any(k in gt_ids for k in keys):
            # one row per box: its image's image-level ids and its own per-box ids
            columns = [
                gt_ids[k] if k in gt_ids else image_ids[k][evaluation.gt_image] for k in keys
            ]
            present = ~evaluation.gt_crowd
        else:
            columns = [image_ids[k] for k in keys]
            present = np.ones(evaluation.count, dtype=bool)
        table = np.stack(columns, axis=1)
        table = table[present & (table >= 0).all(axis=1)]
        index.seen[spec.name].update(map(tuple, np.unique(table, axis=0).tolist()))
    return sorted(index.seen[spec.name])


def _dimension_stats(
    spec: SliceSpec,
    combos: Sequence[tuple[int, ...]],
    evaluation: _Evaluation,
    main: Matcher | None,
    image_ids: Mapping[str, np.ndarray],
    gt_ids: Mapping[str, np.ndarray],
    dt_ids: Mapping[str, np.ndarray],
    boxed: Sequence[str],
    weights: np.ndarray | None = None,
) -> tuple[list[dict[str, float]], list[dict[str, np.ndarray]]]:
    """Each slice's metrics, and (with ``weights``) each slice's replicate metrics."""
    keys = [a.key for a in spec.attributes]
    image_keys = [k for k in keys if k not in boxed]
    box_keys = [k for k in keys if k in boxed]
    positions = {k: keys.index(k) for k in keys}

    def image_mask(combo: tuple[int, ...]) -> np.ndarray:
        mask = np.ones(evaluation.count, dtype=bool)
        for k in image_keys:
            mask &= image_ids[k] == combo[positions[k]]
        return mask

    # one matching pass per object-level part of the slices, keyed by that part's ids
    passes: dict[tuple[int, ...], tuple[Matcher, int]] = {}
    if box_keys:
        parts = list(dict.fromkeys(tuple(c[positions[k]] for k in box_keys) for c in combos))
        gt_code = _codes(parts, [gt_ids[k] for k in box_keys])
        if all(k in dt_ids for k in box_keys):
            # detections carry their own value: one pass, one area range per part
            dt_code = _codes(parts, [dt_ids[k] for k in box_keys])
            ranges = [(p + 0.5, p + 1.5) for p in range(len(parts))]
            matched = evaluation.match(_area_of(gt_code), _area_of(dt_code), ranges)
            passes = {part: (matched, p) for p, part in enumerate(parts)}
        else:
            for p, part in enumerate(parts):
                inside = np.where(gt_code == p, 1.0, _OUTSIDE)
                everywhere = np.ones(evaluation.dt_area.shape[0])
                passes[part] = (evaluation.match(inside, everywhere, ((0.5, 1.5),)), 0)
    rows = []
    replicate_rows: list[dict[str, np.ndarray]] = []
    for combo in combos:
        subset = evaluation.images_in(image_mask(combo))
        if box_keys:
            matched, area = passes[tuple(combo[positions[k]] for k in box_keys)]
        else:
            assert main is not None
            matched, area = main, 0
        row = matched.detection_stats(subset, area=area) if subset else _nan_stats()
        row["count"] = float(len(subset))
        rows.append(row)
        if weights is not None:
            replicate_rows.append(
                matched.replicate_stats(subset, weights[:, np.asarray(subset) - 1], area=area)
                if subset
                else {m: np.full(weights.shape[0], np.nan) for m in REPLICATE_METRICS}
            )
    return rows, replicate_rows


def _codes(parts: Sequence[tuple[int, ...]], columns: Sequence[np.ndarray]) -> np.ndarray:
    """Index of each row's part in ``parts`` (-1 where it is in none)."""
    code = np.full(columns[0].shape[0], -1, dtype=np.int64)
    for p, part in enumerate(parts):
        hit = np.ones(columns[0].shape[0], dtype=bool)
        for column, value in zip(columns, part, strict=True):
            hit &= column == value
        code[hit] = p
    return code


def _area_of(code: np.ndarray) -> np.ndarray:
    """Codes as COCO areas: part ``p`` lies in range ``(p + 0.5, p + 1.5)``, -1 in none."""
    return np.where(code >= 0, code + 1.0, _OUTSIDE)


def detection_slice_stats(
    preds: Sequence[Mapping[str, Any]],
    target: Sequence[Mapping[str, Any]],
    attributes: Mapping[str, Any],
    *,
    specs: Sequence[SliceSpec],
    num_classes: int | None = None,
    max_slices: int = 1000,
    backend: str | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    sample_ids: Any | None = None,
) -> DetectionSliceStats:
    """Detection metrics per slice of one set of images (no state); see :class:`SlicedDetection`."""
    metric = SlicedDetection(
        specs=specs,
        num_classes=num_classes,
        max_slices=max_slices,
        backend=backend,
        bootstrap=bootstrap,
        seed=seed,
    )
    metric.update(preds, target, attributes, sample_ids)
    return metric.compute()


def detection_metric_names() -> tuple[str, ...]:
    """Names of the metrics reported per slice for ``task="detection"``."""
    return DETECTION_METRICS


__all__ = [
    "BOX_AREA",
    "DETECTION_METRICS",
    "DetectionSliceStats",
    "SlicedDetection",
    "detection_metric_names",
    "detection_slice_stats",
]
