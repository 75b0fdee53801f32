"""Sliced detection mAP: lightning_insight vs one COCO evaluation per slice (faster-coco-eval, pycocotools).

2000 images (``--images``), about 8 boxes each, 10 classes, 6 image-level slices (``weather`` and
``timeofday``, 3 values each). Times in one process, one thread, medians of ``--repeats`` runs:

- **ours**: ``slice_metrics(preds, target, attributes, task="detection", slices=["weather", "timeofday"])``
  from torchmetrics-format tensors: the overall numbers, every slice's map/map_50/map_75/mar_100/
  recall_50/precision_50 and every detection gap. One matching pass, then one accumulation per slice.
- **ours, pycocotools backend**: the same per-slice metrics (without the gaps) with
  ``backend="pycocotools"``, the fallback where faster-coco-eval cannot be installed.
- **one overall evaluation**: faster-coco-eval ``COCOeval_faster`` evaluate + accumulate + summarize
  over every image (what a user runs for the aggregate mAP alone); the target is ours within 1.5x of it.
- **per slice, faster-coco-eval** / **per slice, pycocotools**: the same evaluation run once for the
  overall numbers and once per slice with ``params.imgIds`` set to the slice's images (7 runs).

The COCO baselines get their ground truth and detections as ready-made COCO dicts (not timed); ours
starts from the tensors and includes that conversion. Run ``python benchmarks/detection_slices.py``
(about a minute) or ``--quick`` (200 images).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import lightning_insight
from lightning_insight.metrics.detection import detection_slice_stats
from lightning_insight.slicing import parse_slice_specs

WEATHERS = ("clear", "rainy", "foggy")
TIMES = ("daytime", "night", "dawn/dusk")


#: Replicates timed (the cost is linear in B).
BOOTSTRAP = 20


def make_data(
    images: int, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    preds, target = [], []
    attributes: dict[str, list[str]] = {"weather": [], "timeofday": []}
    for _ in range(images):
        n = int(rng.poisson(8))
        xy = rng.uniform(0, 1100, size=(n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 180, size=(n, 2))], axis=1)
        labels = rng.integers(0, 10, size=n)
        found = rng.random(n) < 0.8
        det = boxes[found] + rng.normal(0, 4, size=(int(found.sum()), 4))
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        extra = int(rng.integers(0, 4))
        xy = rng.uniform(0, 1100, size=(extra, 2))
        false = np.concatenate([xy, xy + rng.uniform(8, 120, size=(extra, 2))], axis=1)
        target.append(
            {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
        )
        preds.append(
            {
                "boxes": torch.tensor(np.concatenate([det, false]), dtype=torch.float32),
                "scores": torch.tensor(rng.random(len(det) + extra), dtype=torch.float32),
                "labels": torch.tensor(np.concatenate([labels[found], rng.integers(0, 10, extra)])),
            }
        )
        attributes["weather"].append(WEATHERS[int(rng.integers(0, 3))])
        attributes["timeofday"].append(TIMES[int(rng.integers(0, 3))])
    return preds, target, attributes


def coco_dicts(
    preds: list[dict[str, Any]], target: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    annotations, detections = [], []
    for i, (p, t) in enumerate(zip(preds, target, strict=True)):
        for (x1, y1, x2, y2), label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for (x1, y1, x2, y2), score, label in zip(
            p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
        ):
            detections.append(
                {
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    dataset = {
        "images": [{"id": i + 1} for i in range(len(target))],
        "annotations": annotations,
        "categories": [{"id": c + 1} for c in range(10)],
    }
    return dataset, detections  # fmt: skip


def faster_coco_eval_run(
    dataset: dict[str, Any], detections: list[dict[str, Any]], images: list[int] | None
) -> float:
    from faster_coco_eval import COCO, COCOeval_faster

    ground_truth = COCO()
    ground_truth.dataset = copy.deepcopy(dataset)
    ground_truth.createIndex()
    evaluator = COCOeval_faster(
        ground_truth,
        ground_truth.loadRes(copy.deepcopy(detections)),
        iouType="bbox",
        print_function=lambda *_: None,
    )
    if images is not None:
        evaluator.params.imgIds = images
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0])


def pycocotools_run(
    dataset: dict[str, Any], detections: list[dict[str, Any]], images: list[int] | None
) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = copy.deepcopy(dataset)
        ground_truth.createIndex()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(copy.deepcopy(detections)), "bbox")
        if images is not None:
            evaluator.params.imgIds = images
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 images, 3 repeats")
    args = parser.parse_args()
    images, repeats = (200, 3) if args.quick else (args.images, args.repeats)
    torch.set_num_threads(1)
    preds, target, attributes = make_data(images)
    dataset, detections = coco_dicts(preds, target)
    subsets = [None] + [
        [i + 1 for i, v in enumerate(attributes[name]) if v == value]
        for name, values in (("weather", WEATHERS), ("timeofday", TIMES))
        for value in values
    ]

    def ours() -> Any:
        return lightning_insight.slice_metrics(
            preds, target, attributes, task="detection", slices=["weather", "timeofday"]
        )

    specs = parse_slice_specs(["weather", "timeofday"])

    def ours_bootstrap() -> Any:
        return lightning_insight.slice_metrics(
            preds,
            target,
            attributes,
            task="detection",
            slices=["weather", "timeofday"],
            bootstrap=BOOTSTRAP,
        )

    def ours_pycocotools() -> Any:
        return detection_slice_stats(preds, target, attributes, specs=specs, backend="pycocotools")

    with threadpool_limits(1):
        report = ours()
        check = faster_coco_eval_run(dataset, detections, subsets[1])
        assert abs(report.slices["weather=clear"]["map"] - check) < 1e-9, (
            report.slices["weather=clear"]["map"],
            check,
        )
        rows = {
            "ours: every slice + gaps": median_time(ours, repeats),
            "ours, pycocotools backend (fallback)": median_time(ours_pycocotools, repeats),
            "one overall evaluation (faster-coco-eval)": median_time(
                lambda: faster_coco_eval_run(dataset, detections, None), repeats
            ),
            "per slice, faster-coco-eval (7 runs)": median_time(
                lambda: [faster_coco_eval_run(dataset, detections, s) for s in subsets], repeats
            ),
            "per slice, pycocotools (7 runs)": median_time(
                lambda: [pycocotools_run(dataset, detections, s) for s in subsets],
                max(1, repeats // 2),
            ),
            f"ours with bootstrap={BOOTSTRAP} (intervals over images)": median_time(
                ours_bootstrap, 1
            ),
        }
    boxes = sum(len(t["labels"]) for t in target)
    found = sum(len(p["labels"]) for p in preds)
    print(
        f"{images} images, {boxes} boxes, {found} detections, 10 classes, 6 image-level slices; "
        f"Python {platform.python_version()}, torch {torch.__version__}, 1 thread, median of {repeats}"
    )
    single = rows["one overall evaluation (faster-coco-eval)"]
    print("| method | seconds | x one overall evaluation |")
    print("|---|---:|---:|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.3f} | {seconds / single:.2f}x |")  # fmt: skip
    per_replicate = (rows[f"ours with bootstrap={BOOTSTRAP} (intervals over images)"] - rows["ours: every slice + gaps"]) / BOOTSTRAP  # fmt: skip
    print(
        f"\nOne bootstrap replicate (7 accumulations: overall + 6 slices) costs {per_replicate:.3f} s: "
        f"B=200 would add {200 * per_replicate:.0f} s per evaluation."
    )


if __name__ == "__main__":
    main()
