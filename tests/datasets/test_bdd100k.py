from __future__ import annotations

import copy
import json
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lightning_insight.datasets import (
    BDDDetectionDataset,
    BDDFrame,
    SyntheticBDD,
    collate_detection,
    load_bdd100k,
    make_synthetic_bdd,
)
from lightning_insight.datasets.bdd100k import (
    _TIMEOFDAY_LOOK,
    _WEATHER_LOOK,
    CATEGORIES,
    HARD_SLICES,
    NIGHT_SKIN_TONE_CONTRAST,
    TIMEOFDAY_CONTRAST,
    WEATHER_CONTRAST,
)

PEDESTRIAN, CAR, TRUCK = (CATEGORIES.index(name) for name in ("pedestrian", "car", "truck"))


def _box(x1: float, y1: float, x2: float, y2: float) -> dict[str, float]:
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def _det_20_frames() -> list[dict[str, Any]]:
    return [
        {
            "name": "b.jpg",
            "attributes": {"weather": "rainy", "scene": "city street", "timeofday": "night"},
            "timestamp": 10000,
            "labels": [
                {
                    "id": "10",
                    "category": "pedestrian",
                    "attributes": {"occluded": True, "truncated": False, "trafficLightColor": "NA"},
                    "box2d": _box(10, 20, 30, 80),
                },
                {
                    "id": "11",
                    "category": "car",
                    "attributes": {"occluded": False, "truncated": True, "trafficLightColor": "NA"},
                    "box2d": _box(100.5, 200.25, 300, 400),
                },
                {
                    "id": "12",
                    "category": "traffic light",
                    "attributes": {"occluded": False, "truncated": False, "trafficLightColor": "G"},
                    "box2d": _box(5, 5, 9, 15),
                },
                {"id": "13", "category": "other vehicle", "box2d": _box(0, 0, 50, 40)},
                {"id": "14", "category": "other person", "box2d": _box(1, 1, 2, 2)},
                {"id": "15", "category": "trailer", "box2d": _box(3, 3, 4, 4)},
                {"id": "16", "category": "pedestrian", "box2d": _box(40, 20, 50, 80)},
            ],
        },
        {
            "name": "a.jpg",
            "attributes": {"weather": "clear", "scene": "highway", "timeofday": "daytime"},
            "timestamp": 10000,
        },
        {"name": "c.jpg", "labels": None},
    ]


def _legacy_frames() -> list[dict[str, Any]]:
    def label(label_id: int, category: str, **extra: Any) -> dict[str, Any]:
        return {"id": label_id, "category": category, "manualShape": True, **extra}

    return [
        {
            "name": "legacy.jpg",
            "attributes": {"weather": "snowy", "scene": "tunnel", "timeofday": "dawn/dusk"},
            "timestamp": 10000,
            "labels": [
                label(
                    1,
                    "person",
                    attributes={"occluded": False, "truncated": True, "trafficLightColor": "none"},
                    box2d=_box(1, 2, 3, 4),
                ),
                label(2, "bike", box2d=_box(1, 2, 3, 4)),
                label(3, "motor", box2d=_box(1, 2, 3, 4)),
                label(4, "van", box2d=_box(1, 2, 3, 4)),
                label(5, "caravan", box2d=_box(1, 2, 3, 4)),
                label(
                    6,
                    "traffic light",
                    attributes={"occluded": True, "trafficLightColor": "red"},
                    box2d=_box(1, 2, 3, 4),
                ),
                label(7, "traffic sign", box2d=_box(1, 2, 3, 4)),
                label(
                    8,
                    "drivable area",
                    attributes={"areaType": "direct"},
                    poly2d=[{"vertices": [[0, 0], [5, 5], [0, 5]], "types": "LLL", "closed": True}],
                ),
                label(
                    9,
                    "lane",
                    attributes={"laneDirection": "parallel", "laneStyle": "solid"},
                    poly2d=[{"vertices": [[0, 0], [5, 5]], "types": "LL", "closed": False}],
                ),
                label(10, "rider", box2d=_box(1, 2, 3, 4)),
            ],
        }
    ]


def _write(path: Path, payload: object) -> Path:
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticBDD:
    return make_synthetic_bdd(
        tmp_path_factory.mktemp("synthetic"), num_images=200, image_size=64, seed=0
    )


# --------------------------------------------------------------------------------------------------
# Loader


def test_det_20_file_is_parsed(tmp_path: Path) -> None:
    frames = load_bdd100k(_write(tmp_path / "det_val.json", _det_20_frames()))
    assert [frame.name for frame in frames] == ["b.jpg", "a.jpg", "c.jpg"]
    first, second, third = frames
    assert first.attributes == {"weather": "rainy", "timeofday": "night", "scene": "city street"}
    assert len(first) == 7
    assert first.label_ids == ("10", "11", "12", "13", "14", "15", "16")
    assert first.labels.dtype == np.int64
    assert first.labels.tolist() == [
        PEDESTRIAN,
        CAR,
        CATEGORIES.index("traffic light"),
        CAR,
        PEDESTRIAN,
        TRUCK,
        PEDESTRIAN,
    ]
    assert first.iscrowd.tolist() == [False, False, False, True, True, True, False]
    assert first.categories[3:6] == ("other vehicle", "other person", "trailer")
    assert first.boxes.dtype == np.float32
    assert first.boxes.shape == (7, 4)
    np.testing.assert_array_equal(first.boxes[1], [100.5, 200.25, 300, 400])
    assert first.box_attributes["occluded"].tolist() == [True] + [False] * 6
    assert first.box_attributes["truncated"].tolist() == [False, True] + [False] * 5
    assert first.box_attributes["traffic_light_color"][:3].tolist() == ["none", "none", "green"]
    # A frame without a `labels` key, and one with `labels: null` and no attributes.
    assert len(second) == 0
    assert second.boxes.shape == (0, 4)
    assert second.attributes["scene"] == "highway"
    assert len(third) == 0
    assert third.attributes == {
        "weather": "undefined",
        "timeofday": "undefined",
        "scene": "undefined",
    }


def test_legacy_file_is_parsed(tmp_path: Path) -> None:
    (frame,) = load_bdd100k(_write(tmp_path / "bdd100k_labels_images_val.json", _legacy_frames()))
    # The drivable-area and lane polygons (ids 8 and 9) are skipped.
    assert frame.label_ids == ("1", "2", "3", "4", "5", "6", "7", "10")
    assert [CATEGORIES[label] for label in frame.labels] == [
        "pedestrian",
        "bicycle",
        "motorcycle",
        "car",
        "car",
        "traffic light",
        "traffic sign",
        "rider",
    ]
    assert frame.categories[0] == "pedestrian"
    assert not frame.iscrowd.any()
    assert frame.box_attributes["truncated"].tolist() == [True] + [False] * 7
    assert frame.box_attributes["occluded"].tolist()[5] is True
    assert frame.box_attributes["traffic_light_color"][5] == "red"
    assert frame.attributes == {"weather": "snowy", "timeofday": "dawn/dusk", "scene": "tunnel"}


def test_scalabel_wrapped_frames_are_read(tmp_path: Path) -> None:
    payload = {"frames": _det_20_frames(), "config": {"categories": []}}
    frames = load_bdd100k(_write(tmp_path / "scalabel.json", payload))
    assert [len(frame) for frame in frames] == [7, 0, 0]


def test_to_target_is_a_torchmetrics_target(tmp_path: Path) -> None:
    (frame, empty, _) = load_bdd100k(
        _write(tmp_path / "det_val.json", _det_20_frames()),
    )
    target = frame.to_target()
    assert set(target) == {
        "boxes",
        "labels",
        "iscrowd",
        "occluded",
        "truncated",
        "traffic_light_color",
    }
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].shape == (7, 4)
    assert target["labels"].dtype == torch.int64
    assert target["iscrowd"].tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert target["occluded"].dtype == torch.bool
    assert target["traffic_light_color"][2] == "green"
    # The tensors are copies: changing them leaves the frame alone.
    target["boxes"].zero_()
    assert frame.boxes[1, 0] == pytest.approx(100.5)
    empty_target = empty.to_target()
    assert empty_target["boxes"].shape == (0, 4)
    assert empty_target["labels"].shape == (0,)


def test_to_target_crowd_boxes_are_ignored_by_coco_evaluation(tmp_path: Path) -> None:
    from lightning_insight.metrics.coco import MatchedBoxes

    (frame, _, _) = load_bdd100k(_write(tmp_path / "det_val.json", _det_20_frames()))
    target = frame.to_target()
    annotations = []
    detections = []
    for k, (box, label, crowd) in enumerate(
        zip(
            target["boxes"].tolist(),
            target["labels"].tolist(),
            target["iscrowd"].tolist(),
            strict=True,
        )
    ):
        x1, y1, x2, y2 = box
        xywh = [x1, y1, x2 - x1, y2 - y1]
        annotations.append(
            {"id": k + 1, "image_id": 1, "category_id": label + 1, "bbox": xywh,
             "area": xywh[2] * xywh[3], "iscrowd": crowd}
        )  # fmt: skip
        # A detection on every box; those on crowd boxes must count as neither hit nor miss.
        detections.append({"image_id": 1, "category_id": label + 1, "bbox": xywh, "score": 0.9})
    dataset = {
        "images": [{"id": 1, "width": 1280, "height": 720}],
        "categories": [{"id": n + 1, "name": name} for n, name in enumerate(CATEGORIES)],
        "annotations": annotations,
    }
    assert MatchedBoxes(dataset, detections).stats([1])["map_50"] == pytest.approx(1.0)
    without_crowd_flag = copy.deepcopy(dataset)
    for annotation in without_crowd_flag["annotations"]:
        annotation["iscrowd"] = 0
    del detections[3:6]  # the crowd boxes are now misses
    assert MatchedBoxes(without_crowd_flag, detections).stats([1])["map_50"] < 1.0


def test_to_dict_round_trips(tmp_path: Path) -> None:
    frames = load_bdd100k(_write(tmp_path / "det_val.json", _det_20_frames()))
    again = load_bdd100k(_write(tmp_path / "again.json", [frame.to_dict() for frame in frames]))
    assert "labels" not in frames[1].to_dict()
    for left, right in zip(frames, again, strict=True):
        assert left.name == right.name
        assert left.attributes == right.attributes
        assert left.label_ids == right.label_ids
        assert left.categories == right.categories
        np.testing.assert_array_equal(left.boxes, right.boxes)
        np.testing.assert_array_equal(left.labels, right.labels)
        np.testing.assert_array_equal(left.iscrowd, right.iscrowd)
        assert set(left.box_attributes) == set(right.box_attributes)
        for key, values in left.box_attributes.items():
            np.testing.assert_array_equal(values, right.box_attributes[key])


def test_frames_pickle(tmp_path: Path) -> None:
    (frame, _, _) = load_bdd100k(_write(tmp_path / "det_val.json", _det_20_frames()))
    copy_ = pickle.loads(pickle.dumps(frame))
    np.testing.assert_array_equal(copy_.boxes, frame.boxes)
    assert copy_.label_ids == frame.label_ids


# --------------------------------------------------------------------------------------------------
# Pedestrian attributes

_CSV = (
    "name,id,skin_tone,age_group\n"
    "b.jpg,10,dark,adult\n"
    "b.jpg,11,light,adult\n"  # a car: ignored, with a warning
    "b.jpg,14,light,child\n"  # an `other person` crowd box: ignored
    "elsewhere.jpg,3,dark,child\n"  # another split's image: ignored
    "b.jpg,16,,child\n"  # an empty cell reads as unknown
)


def _check_merged(frames: list[BDDFrame]) -> None:
    first, second, _ = frames
    assert first.box_attributes["skin_tone"].tolist() == [
        "dark",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
    ]
    assert first.box_attributes["age_group"].tolist() == ["adult"] + ["unknown"] * 5 + ["child"]
    assert second.box_attributes["skin_tone"].shape == (0,)
    target = first.to_target()
    assert target["skin_tone"][0] == "dark"
    assert target["age_group"][-1] == "child"
    assert target["occluded"].tolist()[0] is True


def test_pedestrian_attributes_from_csv(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    labels = _write(tmp_path / "det_val.json", _det_20_frames())
    attributes = tmp_path / "people.csv"
    attributes.write_text(_CSV, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="lightning_insight.datasets.bdd100k"):
        frames = load_bdd100k(labels, pedestrian_attributes=attributes)
    _check_merged(frames)
    assert "2 rows of" in caplog.text
    assert "not pedestrians" in caplog.text


def test_pedestrian_attributes_from_json(tmp_path: Path) -> None:
    labels = _write(tmp_path / "det_val.json", _det_20_frames())
    rows = [
        {"name": "b.jpg", "id": "10", "skin_tone": "dark", "age_group": "adult"},
        {"name": "b.jpg", "id": 16, "skin_tone": None, "age_group": "child"},
        {"name": "b.jpg", "id": "11", "skin_tone": "light"},
    ]
    frames = load_bdd100k(labels, pedestrian_attributes=str(_write(tmp_path / "p.json", rows)))
    _check_merged(frames)


def test_legacy_integer_ids_match_attribute_rows(tmp_path: Path) -> None:
    labels = _write(tmp_path / "legacy.json", _legacy_frames())
    attributes = tmp_path / "people.csv"
    attributes.write_text("name,id,skin_tone\nlegacy.jpg,1,dark\n", encoding="utf-8")
    (frame,) = load_bdd100k(labels, pedestrian_attributes=attributes)
    assert frame.box_attributes["skin_tone"].tolist() == ["dark"] + ["unknown"] * 7


# --------------------------------------------------------------------------------------------------
# Loader errors


def _mutated(change: Any) -> list[dict[str, Any]]:
    frames = _det_20_frames()
    change(frames)
    return frames


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(frames: Any) -> None:
        target = frames
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path: tuple[Any, ...]) -> Any:
    def change(frames: Any) -> None:
        target = frames
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


_WHERE = r"of image 'b\.jpg' \(frame 0 of .*det\.json\)"
_LABEL = r"of label '{}' of image 'b\.jpg' \(frame 0 of .*det\.json\)"


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        pytest.param(
            {"images": [], "annotations": [], "categories": []},
            r"^Expected .*det\.json to hold a JSON list of BDD100k frames \(det_20 or the 2018 "
            r"format\), but got a dict with keys \['annotations', 'categories', 'images'\]\. HINT: COCO",
            id="coco-dict",
        ),
        pytest.param(
            "just text", r"to hold a JSON list of BDD100k frames .*but got a str\.", id="str"
        ),
        pytest.param(
            [_det_20_frames()[0], ["not", "a", "frame"]],
            r"^Expected frame 1 of .*det\.json to be a dict with `name` and `labels`, but got list ",
            id="frame-not-dict",
        ),
        pytest.param(
            _mutated(_delete((0, "name"))),
            r"^Expected `name` of frame 0 of .*det\.json to be a non-empty str, but got NoneType None\.",
            id="no-name",
        ),
        pytest.param(
            _mutated(_set((0, "attributes"), ["rainy"])),
            rf"^Expected `attributes` {_WHERE} to be a dict, but got list \['rainy'\]\.$",
            id="attributes-list",
        ),
        pytest.param(
            _mutated(_set((0, "attributes", "weather"), 3)),
            rf"^Expected `attributes\.weather` {_WHERE} to be a str, but got int 3\.$",
            id="weather-int",
        ),
        pytest.param(
            _mutated(_set((0, "labels"), {"id": "1"})),
            rf"^Expected `labels` {_WHERE} to be a list, but got dict ",
            id="labels-dict",
        ),
        pytest.param(
            [{"name": "b.jpg", "category": "car", "bbox": [1, 2, 3, 4], "score": 0.5}],
            rf"^Expected `labels` {_WHERE} to be a list of labels, but got a flat box record with keys",
            id="flat-records",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 0, "id"), 1.5)),
            rf"^Expected `labels\[0\]\.id` {_WHERE} to be a str \(det_20\) or an int \(2018 format\), "
            r"but got float 1\.5\.$",
            id="id-float",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 2, "id"), 12)),
            rf"^Expected `labels\[2\]\.id` {_WHERE} to be a str, like the other label ids of this "
            r"det_20 file, but got int 12\.$",
            id="id-mixed-det-20",
        ),
        pytest.param(
            [
                {
                    "name": "b.jpg",
                    "labels": [
                        {"id": 1, "category": "car", "box2d": _box(0, 0, 1, 1)},
                        {"id": "2", "category": "car", "box2d": _box(0, 0, 1, 1)},
                    ],
                }
            ],
            rf"^Expected `labels\[1\]\.id` {_WHERE} to be an int, like the other label ids of this "
            r"2018-format file, but got str '2'\.$",
            id="id-mixed-legacy",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 1), "car")),
            rf"^Expected `labels\[1\]` {_WHERE} to be a dict, but got str 'car'\.$",
            id="label-str",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 1, "category"), "spaceship")),
            rf"^Expected `category` {_LABEL.format(11)} to be one of \[.*'traffic sign', "
            r"'trailer', 'train', 'truck'\], but got str 'spaceship'\.$",
            id="unknown-category",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 1, "category"), "person")),
            rf"^Expected `category` {_LABEL.format(11)} to be one of .*but got str 'person'\.$",
            id="legacy-name-in-det-20",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 1, "box2d"), _box(10, 0, 5, 4))),
            rf"^Expected `box2d` {_LABEL.format(11)} to be a box with x1 <= x2 and y1 <= y2, "
            r"but got dict \{'x1': 10, 'y1': 0, 'x2': 5, 'y2': 4\}\.$",
            id="x2-below-x1",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 0, "box2d"), _box(0, 10, 5, 4))),
            rf"^Expected `box2d` {_LABEL.format(10)} to be a box with x1 <= x2 and y1 <= y2",
            id="y2-below-y1",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 1, "box2d"), {"x1": 0, "y1": 0, "x2": "5", "y2": 4})),
            rf"^Expected `box2d` {_LABEL.format(11)} to be a dict of finite numbers x1, y1, x2, y2",
            id="box-str-coordinate",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 1, "box2d"), [0, 0, 5, 4])),
            rf"^Expected `box2d` {_LABEL.format(11)} to be a dict of finite numbers",
            id="box-list",
        ),
        pytest.param(
            _mutated(_delete((0, "labels", 1, "box2d"))),
            rf"^Expected `box2d` {_LABEL.format(11)} to be a dict with x1, y1, x2, y2, but got no "
            r"box2d and no poly2d\.$",
            id="no-box",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 1, "attributes", "occluded"), "yes")),
            rf"^Expected `attributes\.occluded` {_LABEL.format(11)} to be a bool, but got str 'yes'\.$",
            id="occluded-str",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 1, "attributes"), "occluded")),
            rf"^Expected `attributes` {_LABEL.format(11)} to be a dict, but got str 'occluded'\.$",
            id="label-attributes-str",
        ),
        pytest.param(
            _mutated(_set((0, "labels", 2, "attributes", "trafficLightColor"), 1)),
            rf"^Expected `attributes\.trafficLightColor` {_LABEL.format(12)} to be a str",
            id="colour-int",
        ),
    ],
)
def test_label_file_errors(tmp_path: Path, payload: Any, match: str) -> None:
    path = _write(tmp_path / "det.json", payload)
    with pytest.raises(ValueError, match=match):
        load_bdd100k(path)


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "det.json"
    broken.write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^Expected .*det\.json to hold JSON, but got: "):
        load_bdd100k(broken)
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        load_bdd100k(tmp_path / "missing.json")
    with pytest.raises(TypeError, match=r"^Expected argument `path` to be a str or os\.PathLike"):
        load_bdd100k(3)  # type: ignore[arg-type]
    labels = _write(tmp_path / "labels.json", _det_20_frames())
    with pytest.raises(TypeError, match=r"`pedestrian_attributes` to be a str or os\.PathLike"):
        load_bdd100k(labels, pedestrian_attributes=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        pytest.param(
            "people.txt",
            "",
            r"^Expected argument `pedestrian_attributes` to be a \.csv or \.json file, but got "
            r"'.*people\.txt'\.$",
            id="extension",
        ),
        pytest.param(
            "people.csv",
            "name,skin_tone\nb.jpg,dark\n",
            r"^Expected the pedestrian attribute file .*people\.csv to have the columns `name` and "
            r"`id`, but got \['name', 'skin_tone'\]\.$",
            id="csv-no-id",
        ),
        pytest.param(
            "people.csv",
            "name,id,occluded\nb.jpg,10,yes\n",
            r"^Expected the attribute columns of .*people\.csv to be non-empty names other than "
            r"\['boxes', .*\], but got 'occluded'\.$",
            id="reserved-column",
        ),
        pytest.param(
            "people.csv",
            "name,id,skin_tone\nb.jpg,10,dark\nb.jpg,10,light\n",
            r"^Expected one row per \(name, id\), but got a second row for \('b\.jpg', '10'\) at "
            r"line 3 of .*people\.csv\.$",
            id="duplicate",
        ),
        pytest.param(
            "people.csv",
            "name,id,skin_tone\n,10,dark\n",
            r"^Expected `name` of line 2 of .*people\.csv to be a non-empty str, but got str ''\.$",
            id="csv-empty-name",
        ),
        pytest.param(
            "people.json",
            json.dumps({"b.jpg": {"10": "dark"}}),
            r"^Expected .*people\.json to hold a JSON list of objects with `name` and `id`, but got "
            r"a dict",
            id="json-dict",
        ),
        pytest.param(
            "people.json",
            json.dumps([{"name": "b.jpg", "id": "10", "skin_tone": 4}]),
            r"^Expected `skin_tone` of row 0 of .*people\.json to be a str or null, but got int 4\.$",
            id="json-int-value",
        ),
        pytest.param(
            "people.json",
            json.dumps([{"name": "b.jpg", "id": True, "skin_tone": "dark"}]),
            r"^Expected `id` of row 0 of .*people\.json to be a str or int, but got bool True\.$",
            id="json-bool-id",
        ),
        pytest.param(
            "people.json",
            "[{",
            r"^Expected .*people\.json to hold JSON, but got: ",
            id="json-broken",
        ),
    ],
)
def test_pedestrian_attribute_errors(tmp_path: Path, name: str, content: str, match: str) -> None:
    labels = _write(tmp_path / "det.json", _det_20_frames())
    attributes = tmp_path / name
    attributes.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_bdd100k(labels, pedestrian_attributes=attributes)


# --------------------------------------------------------------------------------------------------
# Synthetic generator


def test_generator_layout_and_truth(synthetic: SyntheticBDD) -> None:
    root = Path(synthetic.root)
    assert Path(synthetic.labels_path) == root / "labels" / "det_val.json"
    assert Path(synthetic.image_dir) == root / "images" / "val"
    assert sorted(path.name for path in Path(synthetic.image_dir).iterdir()) == list(
        synthetic.names
    )
    assert list(synthetic.names) == sorted(synthetic.names)
    with Image.open(Path(synthetic.image_dir) / synthetic.names[0]) as image:
        assert image.size == (64, 64)
        assert image.mode == "RGB"
    on_disk = json.loads(Path(synthetic.truth_path).read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(synthetic.to_dict()))
    assert on_disk["config"] == {
        "schema_version": 1,
        "num_images": 200,
        "image_size": [64, 64],
        "seed": 0,
        "split": "val",
        "max_objects": 5,
    }
    assert synthetic.hard_slices == HARD_SLICES
    assert synthetic.contrast == {
        "weather": WEATHER_CONTRAST,
        "timeofday": TIMEOFDAY_CONTRAST,
        "night_skin_tone": NIGHT_SKIN_TONE_CONTRAST,
    }

    frames = load_bdd100k(
        synthetic.labels_path, pedestrian_attributes=synthetic.pedestrian_attributes_path
    )
    assert [frame.name for frame in frames] == list(synthetic.names)
    for key in ("weather", "timeofday", "scene"):
        assert tuple(frame.attributes[key] for frame in frames) == synthetic.attributes[key]
    assert {value for values in synthetic.attributes.values() for value in values} == {
        "clear",
        "overcast",
        "rainy",
        "foggy",
        "daytime",
        "dawn/dusk",
        "night",
        "city street",
        "highway",
        "residential",
    }
    categories = {name for frame in frames for name in frame.categories}
    assert categories == {"car", "truck", "pedestrian", "traffic sign", "other vehicle"}
    assert any(len(frame) == 0 for frame in frames)
    assert sum(int(frame.iscrowd.sum()) for frame in frames) >= 5
    assert sum(int(frame.box_attributes["truncated"].sum()) for frame in frames) >= 10

    for frame, contrasts, visible in zip(
        frames, synthetic.box_contrast, synthetic.visible_fraction, strict=True
    ):
        assert len(contrasts) == len(visible) == len(frame)
        night = frame.attributes["timeofday"] == "night"
        for k in range(len(frame)):
            # Independent oracle for the planted contrast of every box.
            expected = (
                WEATHER_CONTRAST[frame.attributes["weather"]]
                * TIMEOFDAY_CONTRAST[frame.attributes["timeofday"]]
            )
            skin_tone = frame.box_attributes["skin_tone"][k]
            if frame.categories[k] == "pedestrian":
                assert skin_tone in ("dark", "light")
                assert frame.box_attributes["age_group"][k] in ("adult", "child")
                if night:
                    expected *= NIGHT_SKIN_TONE_CONTRAST[str(skin_tone)]
            else:
                assert skin_tone == "unknown"
            assert contrasts[k] == pytest.approx(expected, abs=1e-6)
            assert frame.box_attributes["occluded"][k] == (visible[k] < 0.9)
            x1, y1, x2, y2 = frame.boxes[k]
            assert 0 <= x1 < x2 <= 64
            assert 0 <= y1 < y2 <= 64
    occluded = [frame.box_attributes["occluded"] for frame in frames]
    assert 20 <= int(np.concatenate(occluded).sum()) <= 200


def test_planted_opacities_stay_below_one() -> None:
    for weather, (weather_gain, _) in _WEATHER_LOOK.items():
        for timeofday, (time_gain, _) in _TIMEOFDAY_LOOK.items():
            condition = WEATHER_CONTRAST[weather] * TIMEOFDAY_CONTRAST[timeofday]
            assert 0 < condition / (weather_gain * time_gain) <= 1.0


def test_generator_is_deterministic(tmp_path: Path) -> None:
    first = make_synthetic_bdd(tmp_path / "a", num_images=30, image_size=(80, 48), seed=5)
    second = make_synthetic_bdd(tmp_path / "b", num_images=30, image_size=(80, 48), seed=5)
    other = make_synthetic_bdd(tmp_path / "c", num_images=30, image_size=(80, 48), seed=6)
    train = make_synthetic_bdd(
        tmp_path / "a", num_images=30, image_size=(80, 48), seed=5, split="train"
    )

    def files(data: SyntheticBDD) -> list[bytes]:
        paths = [Path(data.labels_path), Path(data.pedestrian_attributes_path)]
        paths += [Path(data.image_dir) / name for name in data.names]
        return [path.read_bytes() for path in paths]

    # Read after the train split went into the same root: the val split is untouched.
    assert files(first) == files(second)
    assert first.box_contrast == second.box_contrast
    assert files(first)[0] != files(other)[0]
    assert first.attributes != other.attributes
    assert train.names[0] == "train_000000.png"
    assert files(train)[2:] != files(first)[2:]


def test_generator_keeps_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    foreign = _write(tmp_path / "labels" / "det_val.json", _det_20_frames())
    with pytest.raises(
        FileExistsError,
        match=r"^Expected .* to hold no val labels or synthetic ones, but .*det_val\.json exists and "
        r"was not written by make_synthetic_bdd\. HINT: pick an empty `root` for synthetic data\.$",
    ):
        make_synthetic_bdd(tmp_path, num_images=2)
    assert len(load_bdd100k(foreign)) == 3
    # Other files in the image folder survive a rewrite; the generator's own images are replaced.
    make_synthetic_bdd(tmp_path, num_images=3, split="train")
    (tmp_path / "images" / "train" / "keep.jpg").write_bytes(b"")
    make_synthetic_bdd(tmp_path, num_images=2, split="train")
    assert sorted(path.name for path in (tmp_path / "images" / "train").iterdir()) == [
        "keep.jpg",
        "train_000000.png",
        "train_000001.png",
    ]


def _contrast(image: np.ndarray, box: np.ndarray, pedestrian: bool) -> float:
    """Mean absolute colour difference between the box and the strips left and right of it."""
    x1, y1, x2, y2 = (int(value) for value in box)
    top = y1 + round(0.3 * (y2 - y1)) if pedestrian else y1  # below a pedestrian's head
    inside = image[top:y2, x1:x2].reshape(-1, 3).mean(axis=0)
    strips = [image[top:y2, max(0, x1 - 2) : x1], image[top:y2, x2 : x2 + 2]]
    around = np.concatenate([strip.reshape(-1, 3) for strip in strips]).mean(axis=0)
    return float(np.abs(inside - around).mean())


def test_planted_contrast_shows_in_the_pixels(synthetic: SyntheticBDD) -> None:
    frames = load_bdd100k(
        synthetic.labels_path, pedestrian_attributes=synthetic.pedestrian_attributes_path
    )
    groups: dict[str, list[float]] = {}
    for frame in frames:
        image = np.asarray(Image.open(Path(synthetic.image_dir) / frame.name), dtype=np.float64)
        image /= 255.0
        timeofday = frame.attributes["timeofday"]
        for k in range(len(frame)):
            flags = frame.box_attributes
            x1, _, x2, _ = frame.boxes[k]
            if frame.iscrowd[k] or flags["occluded"][k] or flags["truncated"][k]:
                continue
            if x1 < 2 or x2 > 62:
                continue
            pedestrian = frame.categories[k] == "pedestrian"
            value = _contrast(image, frame.boxes[k], pedestrian)
            groups.setdefault(timeofday, []).append(value)
            groups.setdefault(frame.attributes["weather"], []).append(value)
            if pedestrian:
                night = "night" if timeofday == "night" else "day"
                groups.setdefault(f"{night}/{flags['skin_tone'][k]}", []).append(value)
    mean = {key: float(np.mean(values)) for key, values in groups.items()}
    assert min(len(values) for values in groups.values()) >= 8, {
        k: len(v) for k, v in groups.items()
    }
    # Planted: night keeps 50% of the daytime contrast, fog 40% of clear weather.
    assert mean["night"] < 0.6 * mean["daytime"], mean
    assert mean["foggy"] < 0.6 * mean["clear"], mean
    assert mean["rainy"] < mean["clear"], mean
    # Planted: at night dark-skinned pedestrians keep 30% of what light-skinned ones keep ...
    assert mean["night/dark"] < 0.5 * mean["night/light"], mean
    # ... and by day there is no gap.
    assert mean["day/dark"] == pytest.approx(mean["day/light"], rel=0.25), mean


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"num_images": 0},
            r"^Expected argument `num_images` to be a positive int below 1000000, but got 0\.$",
        ),
        (
            {"image_size": 16},
            r"^Expected argument `image_size` to be an int or a \(width, height\) pair of ints >= "
            r"32, but got 16\.$",
        ),
        ({"image_size": (64, 64, 3)}, r"`image_size` to be an int or a \(width, height\) pair"),
        ({"image_size": (64.0, 48)}, r"`image_size` to be an int or a \(width, height\) pair"),
        ({"seed": -1}, r"^Expected argument `seed` to be a non-negative int, but got -1\.$"),
        (
            {"split": "dev"},
            r"^Expected argument `split` to be one of \('train', 'val', 'test'\), but got 'dev'\.$",
        ),
        (
            {"max_objects": 0},
            r"^Expected argument `max_objects` to be a positive int, but got 0\.$",
        ),
    ],
)
def test_generator_validates_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    arguments: dict[str, Any] = {"num_images": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_synthetic_bdd(tmp_path, **arguments)
    assert not (tmp_path / "labels").exists()


# --------------------------------------------------------------------------------------------------
# Dataset and collate


def test_dataset_items_in_name_order_and_resized(synthetic: SyntheticBDD) -> None:
    frames = load_bdd100k(
        synthetic.labels_path, pedestrian_attributes=synthetic.pedestrian_attributes_path
    )[:12]
    dataset = BDDDetectionDataset(synthetic.image_dir, frames[::-1], image_size=(32, 48))
    assert len(dataset) == 12
    assert [frame.name for frame in dataset.frames] == [frame.name for frame in frames]
    index = next(i for i, frame in enumerate(frames) if len(frame) >= 2)
    item = dataset[index]
    assert set(item) == {"image", "target", "attributes", "sample_id"}
    assert item["sample_id"] == index
    assert item["image"].shape == (3, 48, 32)
    assert item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1.0
    assert item["attributes"] == frames[index].attributes
    expected = torch.from_numpy(frames[index].boxes) * torch.tensor([0.5, 0.75, 0.5, 0.75])
    torch.testing.assert_close(item["target"]["boxes"], expected)
    assert item["target"]["labels"].tolist() == frames[index].labels.tolist()
    assert len(item["target"]["skin_tone"]) == len(frames[index])

    native = BDDDetectionDataset(Path(synthetic.image_dir), frames)[index]
    assert native["image"].shape == (3, 64, 64)
    torch.testing.assert_close(native["target"]["boxes"], torch.from_numpy(frames[index].boxes))
    pixels = np.array(Image.open(Path(synthetic.image_dir) / frames[index].name))
    torch.testing.assert_close(
        native["image"], torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    )


def test_dataset_reads_jpeg(tmp_path: Path) -> None:
    (frame, _, _) = load_bdd100k(_write(tmp_path / "det.json", _det_20_frames()))
    Image.new("RGB", (640, 480), (255, 0, 0)).save(tmp_path / "b.jpg", quality=95)
    item = BDDDetectionDataset(tmp_path, [frame], image_size=320)[0]
    assert item["image"].shape == (3, 320, 320)
    assert float(item["image"][0].mean()) > 0.95
    assert float(item["image"][2].mean()) < 0.05
    torch.testing.assert_close(
        item["target"]["boxes"][1], torch.tensor([50.25, 133.5, 150.0, 266.6666666])
    )


def test_dataset_errors(tmp_path: Path) -> None:
    frames = load_bdd100k(_write(tmp_path / "det.json", _det_20_frames()))
    dataset = BDDDetectionDataset(tmp_path / "images", frames)
    missing = re.escape(str(tmp_path / "images" / "a.jpg"))
    with pytest.raises(
        FileNotFoundError, match=rf"^Expected the image of frame 'a\.jpg' at {missing}, but it is"
    ):
        dataset[0]
    with pytest.raises(
        ValueError,
        match=r"^Expected argument `frames` to have unique names, but got 'b\.jpg' twice\.$",
    ):
        BDDDetectionDataset(tmp_path, [frames[0], copy.copy(frames[0])])
    with pytest.raises(
        TypeError, match=r"^Expected argument `frames` to hold BDDFrame objects, but got a dict\.$"
    ):
        BDDDetectionDataset(tmp_path, [{"name": "a.jpg"}])  # type: ignore[list-item]
    with pytest.raises(
        TypeError, match=r"^Expected argument `image_root` to be a str or os\.PathLike"
    ):
        BDDDetectionDataset(None, frames)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^Expected argument `image_size` to be an int or a"):
        BDDDetectionDataset(tmp_path, frames, image_size=0)


def test_collate_and_loader(synthetic: SyntheticBDD) -> None:
    frames = load_bdd100k(
        synthetic.labels_path, pedestrian_attributes=synthetic.pedestrian_attributes_path
    )[:10]
    dataset = BDDDetectionDataset(synthetic.image_dir, frames)
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_detection)
    batches = list(loader)
    assert [len(batch["target"]) for batch in batches] == [4, 4, 2]
    batch = batches[0]
    assert set(batch) == {"image", "target", "attributes", "sample_id"}
    assert batch["image"].shape == (4, 3, 64, 64)
    assert batch["sample_id"].dtype == torch.int64
    assert torch.cat([b["sample_id"] for b in batches]).tolist() == list(range(10))
    assert set(batch["attributes"]) == {"weather", "timeofday", "scene"}
    assert batch["attributes"]["weather"] == [frame.attributes["weather"] for frame in frames[:4]]
    assert [len(target["labels"]) for target in batch["target"]] == [len(f) for f in frames[:4]]

    small = {**dataset[0], "image": torch.zeros(3, 8, 8)}
    with pytest.raises(
        ValueError,
        match=r"^Expected images of one size in a batch, but got sizes \[\(3, 8, 8\), \(3, 64, 64\)"
        r"\]\. HINT: pass `image_size`",
    ):
        collate_detection([small, dataset[1]])
    with pytest.raises(
        ValueError, match=r"^Expected at least one item to collate, but got none\.$"
    ):
        collate_detection([])
