from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from lightning_insight.metrics.bootstrap import poisson_weights
from lightning_insight.metrics.detection import (
    DETECTION_METRICS,
    SlicedDetection,
    detection_slice_stats,
)
from lightning_insight.slicing import parse_slice_specs
from tests.metrics.detection_data import WEATHERS, coco_oracle, random_images

COMPARED = ("map", "map_50", "map_75", "mar_100", "recall_50", "precision_50", "objects")


def _assert_close(ours: dict[str, float], reference: dict[str, float], where: str) -> None:
    for name in COMPARED:
        a, b = ours[name], reference[name]
        # NaN must match NaN exactly: a NaN where a number is defined fails here
        assert math.isnan(a) == math.isnan(b), (where, name, a, b)
        if not math.isnan(b):
            assert abs(a - b) < 1e-6, (where, name, a, b)


def _row(stats: Any, dimension: str, name: str) -> dict[str, float]:
    names, values = stats.dimensions[dimension]
    i = names.index(name)
    return {m: float(values[m][i]) for m in DETECTION_METRICS}


BACKENDS = pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])


@BACKENDS
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_level_slices_equal_pycocotools_on_the_subset(seed: int, backend: str) -> None:
    preds, target, attributes, _ = random_images(seed)
    stats = detection_slice_stats(
        preds,
        target,
        attributes,
        specs=parse_slice_specs(["weather", "weather&night"]),
        backend=backend,
    )
    _assert_close(stats.overall, coco_oracle(preds, target, range(len(target))), "overall")
    assert stats.overall["count"] == len(target)
    for weather in WEATHERS:
        subset = [i for i, w in enumerate(attributes["weather"]) if w == weather]
        row = _row(stats, "weather", f"weather={weather}")
        assert row["count"] == len(subset)
        _assert_close(row, coco_oracle(preds, target, subset), weather)
        for night in (False, True):
            part = [i for i in subset if attributes["night"][i] is night]
            row = _row(stats, "weather&night", f"weather={weather}&night={night}")
            _assert_close(row, coco_oracle(preds, target, part), f"{weather}&{night}")
    assert stats.support == {"weather": "count", "weather&night": "count"}


@BACKENDS
@pytest.mark.parametrize("seed", [3, 4])
def test_object_level_slices_ignore_the_other_boxes_as_coco_ignores_crowds(
    seed: int, backend: str
) -> None:
    preds, target, attributes, _ = random_images(seed)
    stats = detection_slice_stats(
        preds,
        target,
        attributes,
        specs=parse_slice_specs(["occluded", "weather&group"]),
        backend=backend,
    )
    for flag in (False, True):
        row = _row(stats, "occluded", f"occluded={flag}")

        def outside(image: int, box: int, flag: bool = flag) -> bool:
            return bool(target[image]["occluded"][box]) is not flag

        _assert_close(
            row, coco_oracle(preds, target, range(len(target)), ignore_box=outside), str(flag)
        )
        assert row["count"] == len(target)
    for weather in WEATHERS:
        subset = [i for i, w in enumerate(attributes["weather"]) if w == weather]
        for group in ("A", "B"):

            def other(image: int, box: int, group: str = group) -> bool:
                return bool(target[image]["group"][box] != group)

            row = _row(stats, "weather&group", f"weather={weather}&group={group}")
            _assert_close(
                row, coco_oracle(preds, target, subset, ignore_box=other), f"{weather}&{group}"
            )
    assert stats.support["occluded"] == "objects"


@BACKENDS
def test_box_area_slices_are_coco_area_ranges(backend: str) -> None:
    preds, target, attributes, _ = random_images(5, images=80)
    stats = detection_slice_stats(
        preds,
        target,
        attributes,
        backend=backend,
        specs=parse_slice_specs(["box_area:0,1024,9216,inf", "night&box_area:0,1024,9216,inf"]),
    )
    names, _ = stats.dimensions["box_area:0,1024,9216,inf"]
    assert names == ["box_area=[0,1024)", "box_area=[1024,9216)", "box_area=[9216,inf)"]
    for name, area_range in zip(names, [(0, 1024), (1024, 9216), (9216, 1e10)], strict=True):
        _assert_close(
            _row(stats, "box_area:0,1024,9216,inf", name),
            coco_oracle(preds, target, range(len(target)), area_range=area_range),
            name,
        )
        night = [i for i, n in enumerate(attributes["night"]) if n]
        _assert_close(
            _row(stats, "night&box_area:0,1024,9216,inf", f"night=True&{name}"),
            coco_oracle(preds, target, night, area_range=area_range),
            f"night {name}",
        )


def test_streaming_over_batches_equals_one_call_and_slices_stay_stable() -> None:
    preds, target, attributes, ids = random_images(6)
    specs = parse_slice_specs(["weather", "occluded"])
    whole = detection_slice_stats(preds, target, attributes, specs=specs)
    metric = SlicedDetection(specs=specs)
    for epoch in range(2):
        for start in range(0, len(target), 16):
            stop = start + 16
            metric.update(
                preds[start:stop],
                target[start:stop],
                {k: v[start:stop] for k, v in attributes.items()},
                ids[start:stop],
            )
        streamed = metric.compute()
        metric.reset()
        assert streamed.overall == whole.overall, epoch
        for dimension in ("weather", "occluded"):
            assert streamed.dimensions[dimension][0] == whole.dimensions[dimension][0]
            for m in DETECTION_METRICS:
                np.testing.assert_array_equal(
                    streamed.dimensions[dimension][1][m], whole.dimensions[dimension][1][m]
                )


def test_repeated_sample_ids_are_counted_once_and_image_order_does_not_matter() -> None:
    preds, target, attributes, ids = random_images(7, images=30)
    specs = parse_slice_specs(["weather"])
    reference = detection_slice_stats(preds, target, attributes, specs=specs)
    metric = SlicedDetection(specs=specs)
    order = [*reversed(range(30)), 0, 1]  # DistributedSampler-style padding repeats ids
    metric.update(
        [preds[i] for i in order],
        [target[i] for i in order],
        {k: [v[i] for i in order] for k, v in attributes.items()},
        ids[order],
    )
    result = metric.compute()
    assert result.overall == reference.overall
    assert result.overall["count"] == 30


def test_a_value_absent_this_epoch_keeps_its_slice_with_nan_metrics() -> None:
    preds, target, attributes, _ = random_images(8, images=20)
    metric = SlicedDetection(specs=parse_slice_specs(["weather"]))
    metric.update(preds, target, attributes)
    metric.compute()
    metric.reset()
    only = [i for i, w in enumerate(attributes["weather"]) if w != "foggy"]
    metric.update(
        [preds[i] for i in only],
        [target[i] for i in only],
        {"weather": [attributes["weather"][i] for i in only], "night": [False] * len(only)},
    )
    names, values = metric.compute().dimensions["weather"]
    foggy = names.index("weather=foggy")
    assert values["count"][foggy] == 0 and math.isnan(values["map"][foggy])
    assert values["objects"][foggy] == 0


def test_no_images_gives_nan_not_an_error() -> None:
    metric = SlicedDetection(specs=parse_slice_specs(["weather"]))
    with pytest.warns(UserWarning, match="before the ``update``"):
        result = metric.compute()
    assert result.overall["count"] == 0 and math.isnan(result.overall["map"])


def _image(boxes: Any = ((0.0, 0.0, 10.0, 10.0),), **extra: Any) -> dict[str, Any]:
    box = torch.tensor(boxes, dtype=torch.float32)
    fields = {"boxes": box, "labels": torch.zeros(len(box), dtype=torch.int64)}
    if "scores" not in extra:
        fields["occluded"] = torch.ones(len(box), dtype=torch.bool)
    return fields | extra


@pytest.mark.parametrize(
    ("pred", "truth", "match"),
    [
        (
            _image(scores=torch.ones(1)),
            {"boxes": torch.ones(5), "labels": torch.zeros(1, dtype=torch.long), "occluded": [1]},
            r"`target` boxes of image 0 of the batch \(sample_id 42\) to have shape \(n, 4\) in xyxy, but got \(5,\)",
        ),
        (
            _image(((5.0, 0.0, 1.0, 4.0),), scores=torch.ones(1)),
            _image(),
            r"`preds` boxes of image 0 of the batch \(sample_id 42\) in xyxy with x2 >= x1 and y2 >= y1, but box 0",
        ),
        (
            _image(scores=torch.tensor([float("nan")])),
            _image(),
            r"finite `preds` scores of image 0 .*1 NaN",
        ),
        (
            _image(scores=torch.ones(1)),
            {**_image(), "labels": torch.tensor([7])},
            r"`target` labels of image 0 .* in the category set \[0, 3\), but got \[7\]",
        ),
        (
            _image(scores=torch.ones(1)),
            _image(occluded=torch.tensor([True, False])),
            r"per-box attribute 'occluded' of image 0 .* one value per box \(1\), but got 2",
        ),
        (
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)},
            _image(occluded=torch.tensor([True])),
            r"`preds` of image 0 .* keys \['boxes', 'scores', 'labels'\], but \['scores'\] are missing",
        ),
    ],
)
def test_bad_input_names_the_image_and_the_field(pred: Any, truth: Any, match: str) -> None:
    metric = SlicedDetection(specs=parse_slice_specs(["occluded"]), num_classes=3)
    with pytest.raises(ValueError, match=match):
        metric.update([pred], [truth], {}, torch.tensor([42]))


def test_missing_attribute_lists_both_places_it_was_looked_for() -> None:
    metric = SlicedDetection(specs=parse_slice_specs(["truncated"]))
    with pytest.raises(
        RuntimeError,
        match=r"'truncated' .* found image attributes \['weather'\] and per-box keys \['occluded'\]",
    ):
        metric.update(
            [_image(scores=torch.ones(1))],
            [_image(occluded=torch.tensor([True]))],
            {"weather": ["sun"]},
        )


def test_lists_of_dicts_are_required() -> None:
    metric = SlicedDetection(specs=parse_slice_specs(["weather"]))
    with pytest.raises(TypeError, match="lists of per-image dicts"):
        metric.update(torch.zeros(3), [], {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one `preds` dict per `target` dict, but got 1 and 2"):
        metric.update([_image(scores=torch.ones(1))], [_image(), _image()], {})
    with pytest.raises(ValueError, match=r"`num_classes` to be an int >= 1 or None, but got 0"):
        SlicedDetection(specs=parse_slice_specs(["weather"]), num_classes=0)


def test_the_two_backends_agree_on_every_slice() -> None:
    preds, target, attributes, _ = random_images(9)
    specs = parse_slice_specs(["weather", "occluded", "night&box_area:0,1024,9216,inf"])
    fast, slow = (
        detection_slice_stats(preds, target, attributes, specs=specs, backend=backend)
        for backend in ("faster-coco-eval", "pycocotools")
    )
    _assert_close(fast.overall, slow.overall, "overall")
    for dimension, (names, values) in fast.dimensions.items():
        assert slow.dimensions[dimension][0] == names
        for i, name in enumerate(names):
            _assert_close(
                {m: float(values[m][i]) for m in DETECTION_METRICS},
                {m: float(slow.dimensions[dimension][1][m][i]) for m in DETECTION_METRICS},
                name,
            )


def test_backend_errors_name_the_argument_and_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_insight.metrics import coco

    with pytest.raises(
        ValueError,
        match=r"`backend` to be one of \['faster-coco-eval', 'pycocotools'\] or None, but got 'tf'",
    ):
        SlicedDetection(specs=parse_slice_specs(["weather"]), backend="tf")
    with pytest.raises(
        ValueError, match=r"`backend` to be 'faster-coco-eval', 'pycocotools' or None, but got 'x'"
    ):
        coco.matched_boxes({}, [], backend="x")
    monkeypatch.setattr(coco.importlib.util, "find_spec", lambda name: None)
    assert coco.coco_backends() == ()
    with pytest.raises(
        ModuleNotFoundError, match=r"pip install -c constraints\.txt faster-coco-eval"
    ):
        coco.matched_boxes({}, [])


@BACKENDS
def test_an_area_index_out_of_range_is_refused(backend: str) -> None:
    from lightning_insight.metrics import coco

    dataset = {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]}
    matched = coco.matched_boxes(dataset, [], backend=backend)
    with pytest.raises(ValueError, match=r"`area` to index the area ranges .*, but got 4"):
        matched.detection_stats([1], area=4)
    with pytest.raises(ValueError, match=r"unknown ids \[7\]"):
        matched.detection_stats([7])


def test_bootstrap_replicates_equal_pycocotools_on_duplicated_images() -> None:
    # Replicate b counts image i w[i, b] times; the oracle evaluates a data set that holds those
    # copies, image by image (pycocotools, a whole evaluation per replicate and slice).
    preds, target, attributes, ids = random_images(4, images=40)
    specs = parse_slice_specs(["weather", "occluded"])
    metric = SlicedDetection(specs=specs, bootstrap=3)
    metric.update(preds, target, attributes, ids)
    stats = metric.compute()
    assert stats.replicates is not None and stats.overall_replicates is not None
    weights = poisson_weights(ids, 3).numpy()
    names, _ = stats.dimensions["weather"]
    for b in range(3):
        copies = [i for i in range(40) for _ in range(int(weights[i, b]))]
        dup_preds, dup_target = [preds[i] for i in copies], [target[i] for i in copies]
        checks = [(stats.overall_replicates, None, list(range(len(copies))), None)]
        for s, name in enumerate(names):
            value = name.split("=", 1)[1]
            rows = [n for n, i in enumerate(copies) if attributes["weather"][i] == value]
            checks.append((stats.replicates["weather"], s, rows, None))
        occluded_names, _ = stats.dimensions["occluded"]
        for s, name in enumerate(occluded_names):
            flag = name.endswith("True")

            def ignore(
                image: int, box: int, flag: bool = flag, boxes: list[Any] = dup_target
            ) -> bool:
                return bool(boxes[image]["occluded"][box]) is not flag

            checks.append((stats.replicates["occluded"], s, list(range(len(copies))), ignore))
        for values, s, rows, ignore in checks:
            oracle = coco_oracle(dup_preds, dup_target, rows, ignore_box=ignore)
            for metric_name in ("map", "map_50", "map_75", "mar_100", "recall_50"):
                got = values[metric_name][b] if s is None else values[metric_name][b, s]
                want = oracle[metric_name]
                assert (math.isnan(got) and math.isnan(want)) or abs(got - want) < 1e-9, (
                    b,
                    s,
                    metric_name,
                )
