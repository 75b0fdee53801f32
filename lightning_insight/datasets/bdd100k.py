"""BDD100k detection labels, synthetic BDD-format data with planted disparities, and a torch Dataset.

Nothing here imports Lightning; :class:`~lightning_insight.datasets.BDDDataModule` wraps it.

- :func:`load_bdd100k` reads the box labels of both BDD100k label files: det_20 (``det_train.json``,
  ``det_val.json``; string label ids) and the 2018 release (``bdd100k_labels_images_*.json``; integer
  ids, ``person``/``bike``/``motor``, lane and drivable-area polygons). The format is told by the type of
  the label ids. Per-pedestrian attributes (skin tone, age group, ...) can be merged from a CSV or JSON
  file keyed by image name and label id.
- :func:`make_synthetic_bdd` writes a small data set in the det_20 layout (PNG images, ``det_<split>.json``,
  a pedestrian attribute CSV) whose disparities are known; :class:`SyntheticBDD` records them.
- :class:`BDDDetectionDataset` serves ``{"image", "target", "attributes", "sample_id"}`` items and
  :func:`collate_detection` turns a list of them into the batch layout the detection monitors read.

What :func:`make_synthetic_bdd` plants. Each object is blended over its background so that, in the final
image, its difference from the background it covers is its clear-daytime difference times

- ``WEATHER_CONTRAST[weather]``: clear 1.0, overcast 0.85, rainy 0.6, foggy 0.4;
- times ``TIMEOFDAY_CONTRAST[timeofday]``: daytime 1.0, dawn/dusk 0.75, night 0.5;
- times, for pedestrians at night only, ``NIGHT_SKIN_TONE_CONTRAST[skin_tone]``: light 1.0, dark 0.3.

So a dark-skinned pedestrian at night keeps 15% of its daytime contrast (6% in fog) while a light-skinned
one keeps 50%, and ``weather=foggy&timeofday=night`` objects keep 20%. Children (``age_group=child``) are
drawn at 0.65 times an adult's height. ``scene`` changes only the background texture, never the contrast
(a null control). 20% of vehicles and pedestrians get a patch of scenery over part of them and nearer
objects overlap farther ones; a box less than 90% visible is flagged ``occluded`` (about 30% of vehicles
and pedestrians). Objects cut by the image border are flagged ``truncated``, about 15% of images hold an
``"other vehicle"`` crowd box, and about 3% hold no labelled object (and no ``labels`` key).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "BDDDetectionDataset",
    "BDDFrame",
    "SyntheticBDD",
    "collate_detection",
    "load_bdd100k",
    "make_synthetic_bdd",
]

logger = logging.getLogger(__name__)

#: The 10 det_20 detection classes; a box's label is its position here.
CATEGORIES: tuple[str, ...] = (
    "pedestrian",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
    "traffic light",
    "traffic sign",
)

#: Categories kept as ignored crowd boxes (``iscrowd=True``), with the class whose label they carry.
CROWD_CATEGORIES: dict[str, str] = {
    "other person": "pedestrian",
    "other vehicle": "car",
    "trailer": "truck",
}

#: Names of the 2018 release and what they are in det_20.
LEGACY_ALIASES: dict[str, str] = {
    "person": "pedestrian",
    "bike": "bicycle",
    "motor": "motorcycle",
    "van": "car",
    "caravan": "car",
}

#: Image-level attributes of every frame; a frame without one gets BDD's own ``"undefined"``.
FRAME_ATTRIBUTES: tuple[str, ...] = ("weather", "timeofday", "scene")

#: Value of a string box attribute nobody annotated (non-pedestrians, pedestrians missing from the file).
UNKNOWN = "unknown"

DET_20 = "det_20"
LEGACY = "bdd100k_2018"

#: Box attribute columns the loader fills itself; a pedestrian attribute file may not reuse them.
RESERVED_BOX_KEYS: frozenset[str] = frozenset(
    {"boxes", "labels", "iscrowd", "scores", "occluded", "truncated", "traffic_light_color"}
)

_DET_20_NAMES: dict[str, str] = {name: name for name in (*CATEGORIES, *CROWD_CATEGORIES)}
_LEGACY_NAMES: dict[str, str] = {**_DET_20_NAMES, **LEGACY_ALIASES}
_LIGHT_COLOURS: dict[str, str] = {
    "na": "none",
    "none": "none",
    "g": "green",
    "green": "green",
    "r": "red",
    "red": "red",
    "y": "yellow",
    "yellow": "yellow",
}
_LIGHT_CODES: dict[str, str] = {"none": "NA", "green": "G", "red": "R", "yellow": "Y"}

#: Split name -> code; the code seeds the synthetic generator.
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

WEATHER: tuple[str, ...] = ("clear", "overcast", "rainy", "foggy")
WEATHER_PROBABILITIES: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
TIMEOFDAY: tuple[str, ...] = ("daytime", "dawn/dusk", "night")
TIMEOFDAY_PROBABILITIES: tuple[float, ...] = (0.5, 0.15, 0.35)
SCENE: tuple[str, ...] = ("city street", "highway", "residential")
SCENE_PROBABILITIES: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)

#: Share of an object's clear-daytime contrast that survives each condition (they multiply).
WEATHER_CONTRAST: dict[str, float] = {"clear": 1.0, "overcast": 0.85, "rainy": 0.6, "foggy": 0.4}
TIMEOFDAY_CONTRAST: dict[str, float] = {"daytime": 1.0, "dawn/dusk": 0.75, "night": 0.5}
#: Extra factor for pedestrians at night, by skin tone.
NIGHT_SKIN_TONE_CONTRAST: dict[str, float] = {"light": 1.0, "dark": 0.3}
#: Height of a child relative to an adult.
CHILD_HEIGHT = 0.65

#: Slices whose planted contrast is far below the rest: image-level (det_20 frame attributes) and
#: box-level (``timeofday`` of the image with a pedestrian attribute).
HARD_SLICES: tuple[str, ...] = (
    "weather=foggy&timeofday=night",
    "timeofday=night&skin_tone=dark",
)

SYNTHETIC_CATEGORIES: tuple[str, ...] = ("car", "truck", "pedestrian", "traffic sign")
SYNTHETIC_CATEGORY_PROBABILITIES: tuple[float, ...] = (0.4, 0.1, 0.35, 0.15)
OCCLUSION_PROBABILITY = 0.2
CROWD_PROBABILITY = 0.15

#: An object is flagged ``occluded`` when less than this share of it stays visible.
_OCCLUDED_BELOW = 0.9
_SCHEMA_VERSION = 1
_MIN_SYNTHETIC_SIDE = 32
_MAX_IMAGES = 1_000_000

# Global looks, ``x -> gain * x + offset``, applied after the objects are drawn. An object's opacity is
# its planted contrast divided by the gains, so the product of the two is exactly the planted factor.
_WEATHER_LOOK: dict[str, tuple[float, tuple[float, float, float]]] = {
    "clear": (1.0, (0.0, 0.0, 0.0)),
    "overcast": (0.9, (0.04, 0.04, 0.05)),
    "rainy": (0.85, (0.02, 0.02, 0.04)),
    "foggy": (0.5, (0.36, 0.36, 0.37)),
}
_TIMEOFDAY_LOOK: dict[str, tuple[float, tuple[float, float, float]]] = {
    "daytime": (1.0, (0.0, 0.0, 0.0)),
    "dawn/dusk": (0.8, (0.07, 0.02, -0.03)),
    "night": (0.55, (-0.02, -0.02, 0.0)),
}

# Object colours (RGB in [0, 1]) and sizes (box height as a share of the image height, width/height).
_COLOURS: dict[str, tuple[float, float, float]] = {
    "car": (0.88, 0.12, 0.1),
    "truck": (0.12, 0.25, 0.88),
    "pedestrian": (0.1, 0.85, 0.85),
    "traffic sign": (0.95, 0.85, 0.1),
    "other vehicle": (0.62, 0.32, 0.26),
}
_SKIN_COLOURS: dict[str, tuple[float, float, float]] = {
    "light": (0.96, 0.82, 0.7),
    "dark": (0.4, 0.27, 0.18),
}
_SIZES: dict[str, tuple[float, float, float, float]] = {
    "car": (0.12, 0.22, 1.6, 2.2),
    "truck": (0.2, 0.32, 1.2, 1.6),
    "pedestrian": (0.24, 0.38, 0.33, 0.42),
    "traffic sign": (0.08, 0.12, 0.9, 1.1),
    "other vehicle": (0.09, 0.13, 2.5, 3.5),
}

FloatArray = np.ndarray[Any, np.dtype[np.float32]]


def _got(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def _describe(data: object) -> str:
    if isinstance(data, dict):
        keys = sorted(str(key) for key in data)
        return f"a dict with keys {keys[:6]}"
    return f"a {type(data).__name__}"


def _where(path: Path, index: int, name: object, label_id: str | None = None) -> str:
    if label_id is not None:
        return f"label {label_id!r} of image {name!r} (frame {index} of {path})"
    if isinstance(name, str):
        return f"image {name!r} (frame {index} of {path})"
    return f"frame {index} of {path}"


def _invalid(where: str, field_name: str, expected: str, got: str) -> ValueError:
    return ValueError(f"Expected `{field_name}` of {where} to be {expected}, but got {got}.")


# --------------------------------------------------------------------------------------------------
# Frames and the label loader


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class BDDFrame:
    """The boxes of one image.

    Attributes:
        name: Image file name (``"b1c66a42-6f7d68ca.jpg"``).
        attributes: ``{"weather": ..., "timeofday": ..., "scene": ...}``; ``"undefined"`` where the file
            has none.
        boxes: Float32 array ``(n, 4)`` of ``x1, y1, x2, y2`` pixel coordinates.
        labels: Int64 array ``(n,)``: position of the class in :data:`CATEGORIES` (crowd boxes carry the
            class of :data:`CROWD_CATEGORIES`).
        iscrowd: Bool array ``(n,)``: ``"other person"``, ``"other vehicle"`` and ``"trailer"`` boxes,
            which COCO evaluation ignores.
        label_ids: The label ids, as strings (the 2018 format's integer ids are converted).
        categories: The det_20 category name of each box (``"other vehicle"`` for that crowd box).
        box_attributes: Per-box columns, each an array of length ``n``: ``occluded`` and ``truncated``
            (bool), ``traffic_light_color`` (``"none"``, ``"red"``, ``"green"``, ``"yellow"``) and any
            pedestrian attribute column (str; ``"unknown"`` for other boxes and unannotated pedestrians).
    """

    name: str
    attributes: dict[str, str]
    boxes: FloatArray
    labels: np.ndarray[Any, np.dtype[np.int64]]
    iscrowd: np.ndarray[Any, np.dtype[np.bool_]]
    label_ids: tuple[str, ...]
    categories: tuple[str, ...]
    box_attributes: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.label_ids)

    def to_target(self) -> dict[str, Any]:
        """Return the boxes as a torchmetrics detection target.

        ``{"boxes": float32 (n, 4) xyxy, "labels": int64 (n,), "iscrowd": int64 (n,) of 0/1}``, plus one
        key per box attribute: a bool tensor for flags (``occluded``, ``truncated``) and a list of
        strings for text columns. The tensors are copies.

        Example:
            >>> frame = BDDFrame(name="a.jpg", attributes={}, boxes=np.zeros((0, 4), np.float32),
            ...                  labels=np.zeros(0, np.int64), iscrowd=np.zeros(0, bool), label_ids=(),
            ...                  categories=())
            >>> sorted(frame.to_target())
            ['boxes', 'iscrowd', 'labels']
        """
        target: dict[str, Any] = {
            "boxes": torch.from_numpy(np.array(self.boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.array(self.labels, dtype=np.int64)),
            "iscrowd": torch.from_numpy(np.array(self.iscrowd, dtype=np.int64)),
        }
        for key, values in self.box_attributes.items():
            if values.dtype.kind in "biuf":
                target[key] = torch.from_numpy(np.array(values))
            else:
                target[key] = [str(value) for value in values]
        return target

    def to_dict(self) -> dict[str, Any]:
        """Return the frame in det_20 layout (JSON-safe); pedestrian attributes are left out.

        Example:
            >>> frame = BDDFrame(name="a.jpg", attributes={"weather": "clear"},
            ...                  boxes=np.array([[1, 2, 3, 4]], np.float32), labels=np.array([2]),
            ...                  iscrowd=np.array([False]), label_ids=("7",), categories=("car",))
            >>> frame.to_dict()["labels"][0]["box2d"]
            {'x1': 1.0, 'y1': 2.0, 'x2': 3.0, 'y2': 4.0}
        """
        occluded = self.box_attributes.get("occluded", np.zeros(len(self), dtype=bool))
        truncated = self.box_attributes.get("truncated", np.zeros(len(self), dtype=bool))
        colours = self.box_attributes.get("traffic_light_color", np.full(len(self), "none"))
        labels = []
        for k, label_id in enumerate(self.label_ids):
            x1, y1, x2, y2 = (float(value) for value in self.boxes[k])
            labels.append(
                {
                    "id": label_id,
                    "category": self.categories[k],
                    "attributes": {
                        "occluded": bool(occluded[k]),
                        "truncated": bool(truncated[k]),
                        "trafficLightColor": _LIGHT_CODES.get(str(colours[k]), str(colours[k])),
                    },
                    "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                }
            )
        frame: dict[str, Any] = {
            "name": self.name,
            "attributes": dict(self.attributes),
            "timestamp": 10000,
        }
        if labels:
            frame["labels"] = labels
        return frame


def _frame_list(data: object, path: Path) -> list[Any]:
    # Scalabel's dataset layout wraps the same frames in {"frames": [...], "config": ...}.
    if isinstance(data, dict) and isinstance(data.get("frames"), list):
        frames: list[Any] = data["frames"]
        return frames
    if not isinstance(data, list):
        raise ValueError(
            f"Expected {path} to hold a JSON list of BDD100k frames (det_20 or the 2018 format), but "
            f"got {_describe(data)}. HINT: COCO-format files are not read here; use the BDD100k JSON."
        )
    return data


def _detect_format(frames: list[Any], path: Path) -> str:
    """det_20 label ids are strings, the 2018 format's are integers; the first id decides."""
    for index, frame in enumerate(frames):
        labels = frame.get("labels") if isinstance(frame, dict) else None
        if not isinstance(labels, list):
            continue
        for position, label in enumerate(labels):
            if not isinstance(label, dict) or "id" not in label:
                continue
            label_id = label["id"]
            if isinstance(label_id, str):
                return DET_20
            if isinstance(label_id, int) and not isinstance(label_id, bool):
                return LEGACY
            raise _invalid(
                _where(path, index, frame.get("name")),
                f"labels[{position}].id",
                "a str (det_20) or an int (2018 format)",
                _got(label_id),
            )
    return DET_20


def _frame_attributes(raw: object, where: str) -> dict[str, str]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _invalid(where, "attributes", "a dict", _got(raw))
    attributes: dict[str, str] = {}
    for key in FRAME_ATTRIBUTES:
        value = raw.get(key, "undefined")
        if not isinstance(value, str):
            raise _invalid(where, f"attributes.{key}", "a str", _got(value))
        attributes[key] = value
    return attributes


def _coordinates(box: object) -> tuple[float, float, float, float] | None:
    if not isinstance(box, dict):
        return None
    values = (box.get("x1"), box.get("y1"), box.get("x2"), box.get("y2"))
    # `type(...) in` rather than isinstance: bools are ints but not coordinates.
    if not all(type(value) in (int, float) for value in values):
        return None
    x1, y1, x2, y2 = (float(value) for value in values)  # type: ignore[arg-type]
    if not math.isfinite(x1 + y1 + x2 + y2):
        return None
    return x1, y1, x2, y2


@dataclass(frozen=True, slots=True)
class _Label:
    label_id: str
    category: str
    box: tuple[float, float, float, float]
    occluded: bool
    truncated: bool
    colour: str


def _parse_label(
    label: object, position: int, context: tuple[Path, int, str], label_format: str
) -> _Label | None:
    path, index, name = context
    if not isinstance(label, dict):
        raise _invalid(_where(path, index, name), f"labels[{position}]", "a dict", _got(label))
    raw_id = label.get("id")
    if label_format == DET_20 and not isinstance(raw_id, str):
        expected = "a str, like the other label ids of this det_20 file"
        where = _where(path, index, name)
        raise _invalid(where, f"labels[{position}].id", expected, _got(raw_id))
    if label_format == LEGACY and (isinstance(raw_id, bool) or not isinstance(raw_id, int)):
        expected = "an int, like the other label ids of this 2018-format file"
        where = _where(path, index, name)
        raise _invalid(where, f"labels[{position}].id", expected, _got(raw_id))
    label_id = str(raw_id)
    box = label.get("box2d")
    if box is None:
        if label.get("poly2d") is not None:
            return None  # lane markings and drivable area: polygons, not detection boxes
        raise _invalid(
            _where(path, index, name, label_id),
            "box2d",
            "a dict with x1, y1, x2, y2",
            "no box2d and no poly2d",
        )
    category = label.get("category")
    names = _DET_20_NAMES if label_format == DET_20 else _LEGACY_NAMES
    if not isinstance(category, str) or category not in names:
        known = sorted(names)
        here = _where(path, index, name, label_id)
        raise _invalid(here, "category", f"one of {known}", _got(category))
    coordinates = _coordinates(box)
    if coordinates is None:
        here = _where(path, index, name, label_id)
        raise _invalid(here, "box2d", "a dict of finite numbers x1, y1, x2, y2", _got(box))
    x1, y1, x2, y2 = coordinates
    if x2 < x1 or y2 < y1:
        here = _where(path, index, name, label_id)
        raise _invalid(here, "box2d", "a box with x1 <= x2 and y1 <= y2", _got(box))
    attributes = label.get("attributes")
    if attributes is None:
        attributes = {}
    occluded = attributes.get("occluded", False) if isinstance(attributes, dict) else None
    truncated = attributes.get("truncated", False) if isinstance(attributes, dict) else None
    colour = attributes.get("trafficLightColor", "none") if isinstance(attributes, dict) else ""
    if type(occluded) is not bool or type(truncated) is not bool or not isinstance(colour, str):
        _raise_label_attributes(attributes, _where(path, index, name, label_id))
    return _Label(
        label_id=label_id,
        category=names[category],
        box=coordinates,
        occluded=bool(occluded),
        truncated=bool(truncated),
        colour=_LIGHT_COLOURS.get(colour.lower(), colour.lower()),
    )


def _raise_label_attributes(attributes: object, here: str) -> NoReturn:
    """Raise for the first label attribute that does not fit (the checks of the fast path, spelled out)."""
    if not isinstance(attributes, dict):
        raise _invalid(here, "attributes", "a dict", _got(attributes))
    for key in ("occluded", "truncated"):
        value = attributes.get(key, False)
        if not isinstance(value, bool):
            raise _invalid(here, f"attributes.{key}", "a bool", _got(value))
    colour = attributes.get("trafficLightColor")
    raise _invalid(here, "attributes.trafficLightColor", "a str", _got(colour))


def _parse_frame(raw: object, index: int, path: Path, label_format: str) -> BDDFrame:
    if not isinstance(raw, dict):
        raise ValueError(
            f"Expected frame {index} of {path} to be a dict with `name` and `labels`, "
            f"but got {_got(raw)}."
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(_where(path, index, None), "name", "a non-empty str", _got(name))
    where = _where(path, index, name)
    attributes = _frame_attributes(raw.get("attributes"), where)
    if "labels" not in raw and any(key in raw for key in ("bbox", "box2d", "category", "score")):
        # The flat detection / evaluation layout: one record per box, not one per image.
        raise _invalid(
            where, "labels", "a list of labels", f"a flat box record with keys {sorted(raw)}"
        )
    raw_labels = raw.get("labels")
    if raw_labels is None:
        raw_labels = []
    if not isinstance(raw_labels, list):
        raise _invalid(where, "labels", "a list", _got(raw_labels))
    parsed = [
        _parse_label(label, position, (path, index, name), label_format)
        for position, label in enumerate(raw_labels)
    ]
    labels = [label for label in parsed if label is not None]
    crowd = [label.category in CROWD_CATEGORIES for label in labels]
    return BDDFrame(
        name=name,
        attributes=attributes,
        boxes=np.array([label.box for label in labels], dtype=np.float32).reshape(-1, 4),
        labels=np.array(
            [
                CATEGORIES.index(CROWD_CATEGORIES.get(label.category, label.category))
                for label in labels
            ],
            dtype=np.int64,
        ),
        iscrowd=np.array(crowd, dtype=bool),
        label_ids=tuple(label.label_id for label in labels),
        categories=tuple(label.category for label in labels),
        box_attributes={
            "occluded": np.array([label.occluded for label in labels], dtype=bool),
            "truncated": np.array([label.truncated for label in labels], dtype=bool),
            "traffic_light_color": np.array([label.colour for label in labels], dtype=np.str_),
        },
    )


def _check_path(name: str, value: object) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise TypeError(
            f"Expected argument `{name}` to be a str or os.PathLike, but got {type(value).__name__}."
        )
    return Path(value)


def load_bdd100k(
    path: str | os.PathLike[str],
    *,
    pedestrian_attributes: str | os.PathLike[str] | None = None,
) -> list[BDDFrame]:
    """Read the detection boxes of a BDD100k label file, in file order.

    Both releases are read, told apart by the type of the label ids:

    - det_20 (``det_train.json``, ``det_val.json``; string ids) with the 10 classes of
      :data:`CATEGORIES`.
    - The 2018 release (``bdd100k_labels_images_*.json``; integer ids): ``person``, ``bike``,
      ``motor`` become ``pedestrian``, ``bicycle``, ``motorcycle``; ``van`` and ``caravan`` become
      ``car``; labels with a ``poly2d`` and no ``box2d`` (lanes, drivable area) are skipped.

    ``"other person"``, ``"other vehicle"`` and ``"trailer"`` become crowd boxes (``iscrowd``) labelled
    pedestrian, car and truck. Frames without ``labels`` have no boxes. Scalabel files that wrap the
    frames in ``{"frames": [...]}`` are read too.

    Args:
        path: The JSON label file.
        pedestrian_attributes: Optional per-pedestrian attributes, a ``.csv`` with a header row or a
            ``.json`` list of objects. Both key each row by ``name`` (the image) and ``id`` (the label
            id); every other column (``skin_tone``, ``age_group``, ...) becomes a string box attribute.
            Empty cells and JSON ``null`` read as ``"unknown"``, as do the columns of every box that is
            not a pedestrian or has no row. Rows that match no box are ignored (one file may cover
            several splits).

    Returns:
        One :class:`BDDFrame` per frame of the file.

    Raises:
        FileNotFoundError: If a file does not exist.
        TypeError: If a path is not a str or os.PathLike.
        ValueError: If the file is not a list of BDD100k frames, a field does not fit (the message
            names the file, the frame, the label id and the field), a category is unknown, a box has
            ``x2 < x1`` or ``y2 < y1``, or the attribute file is malformed.

    Example:
        >>> import json, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "det_val.json"
        >>> _ = path.write_text(json.dumps([{"name": "a.jpg", "attributes": {"weather": "rainy",
        ...     "timeofday": "night", "scene": "highway"}, "labels": [{"id": "0", "category": "car",
        ...     "attributes": {"occluded": True}, "box2d": {"x1": 1, "y1": 2, "x2": 30, "y2": 20}}]}]))
        >>> (frame,) = load_bdd100k(path)
        >>> frame.attributes["weather"], frame.labels.tolist(), frame.box_attributes["occluded"].tolist()
        ('rainy', [2], [True])
    """
    path = _check_path("path", path)
    with path.open(encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"Expected {path} to hold JSON, but got: {error}.") from error
    raw_frames = _frame_list(data, path)
    label_format = _detect_format(raw_frames, path)
    frames = [_parse_frame(raw, index, path, label_format) for index, raw in enumerate(raw_frames)]
    logger.debug("Read %d frames (%s format) from %s.", len(frames), label_format, path)
    if pedestrian_attributes is not None:
        source = _check_path("pedestrian_attributes", pedestrian_attributes)
        table, columns = _read_pedestrian_attributes(source)
        frames = _merge_pedestrian_attributes(frames, table, columns, source)
    return frames


# --------------------------------------------------------------------------------------------------
# Per-pedestrian attributes

_AttributeTable = dict[tuple[str, str], dict[str, str]]


def _check_columns(columns: Sequence[str], path: Path) -> tuple[str, ...]:
    missing = [key for key in ("name", "id") if key not in columns]
    if missing:
        raise ValueError(
            f"Expected the pedestrian attribute file {path} to have the columns `name` and `id`, "
            f"but got {list(columns)}."
        )
    attribute_columns = tuple(column for column in columns if column not in ("name", "id"))
    for column in attribute_columns:
        if not column or column in RESERVED_BOX_KEYS:
            raise ValueError(
                f"Expected the attribute columns of {path} to be non-empty names other than "
                f"{sorted(RESERVED_BOX_KEYS)}, but got {column!r}."
            )
    return attribute_columns


def _add_row(
    table: _AttributeTable, row: Mapping[str, object], columns: tuple[str, ...], where: str
) -> None:
    name, label_id = row.get("name"), row.get("id")
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected `name` of {where} to be a non-empty str, but got {_got(name)}.")
    if isinstance(label_id, bool) or not isinstance(label_id, str | int) or label_id == "":
        raise ValueError(f"Expected `id` of {where} to be a str or int, but got {_got(label_id)}.")
    values: dict[str, str] = {}
    for column in columns:
        value = row.get(column)
        if value is None or value == "":
            value = UNKNOWN
        if not isinstance(value, str):
            raise ValueError(
                f"Expected `{column}` of {where} to be a str or null, but got {_got(value)}."
            )
        values[column] = value
    key = (name, str(label_id))
    if key in table:
        raise ValueError(
            f"Expected one row per (name, id), but got a second row for {key} at {where}."
        )
    table[key] = values


def _read_pedestrian_attributes(path: Path) -> tuple[_AttributeTable, tuple[str, ...]]:
    suffix = path.suffix.lower()
    table: _AttributeTable = {}
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = _check_columns(reader.fieldnames or [], path)
            for row in reader:
                _add_row(table, row, columns, f"line {reader.line_num} of {path}")
        return table, columns
    if suffix != ".json":
        raise ValueError(
            "Expected argument `pedestrian_attributes` to be a .csv or .json file, "
            f"but got {str(path)!r}."
        )
    with path.open(encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"Expected {path} to hold JSON, but got: {error}.") from error
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError(
            f"Expected {path} to hold a JSON list of objects with `name` and `id`, "
            f"but got {_describe(data)}."
        )
    seen: dict[str, None] = {}
    for row in data:
        seen.update(dict.fromkeys(str(key) for key in row))
    columns = _check_columns(list(seen) if data else ["name", "id"], path)
    for position, row in enumerate(data):
        _add_row(table, row, columns, f"row {position} of {path}")
    return table, columns


def _merge_pedestrian_attributes(
    frames: list[BDDFrame], table: _AttributeTable, columns: tuple[str, ...], path: Path
) -> list[BDDFrame]:
    pedestrian = CATEGORIES.index("pedestrian")
    used: set[tuple[str, str]] = set()
    other_boxes = 0
    merged = []
    for frame in frames:
        values: dict[str, list[str]] = {column: [] for column in columns}
        for k, label_id in enumerate(frame.label_ids):
            row = table.get((frame.name, label_id))
            if row is not None:
                used.add((frame.name, label_id))
            if row is not None and (frame.labels[k] != pedestrian or frame.iscrowd[k]):
                other_boxes += 1
                row = None
            for column in columns:
                values[column].append(UNKNOWN if row is None else row[column])
        box_attributes = dict(frame.box_attributes)
        box_attributes.update(
            {column: np.array(values[column], dtype=np.str_) for column in columns}
        )
        merged.append(replace(frame, box_attributes=box_attributes))
    if other_boxes:
        logger.warning(
            "%d rows of %s name boxes that are not pedestrians; their attributes read as %r.",
            other_boxes,
            path,
            UNKNOWN,
        )
    logger.debug("Merged %d of %d pedestrian attribute rows from %s.", len(used), len(table), path)
    return merged


# --------------------------------------------------------------------------------------------------
# Synthetic BDD-format data


@dataclass(frozen=True, slots=True, kw_only=True)
class SyntheticBDD:
    """What :func:`make_synthetic_bdd` wrote and planted.

    Attributes:
        root: The data set folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_dir: Folder of the PNG images (``<root>/images/<split>``).
        labels_path: The det_20 label file (``<root>/labels/det_<split>.json``).
        pedestrian_attributes_path: CSV with ``name, id, skin_tone, age_group`` per pedestrian.
        truth_path: This record as JSON (``<root>/labels/synthetic_<split>.json``), written last.
        config: The generator's arguments; the same config gives the same files.
        names: Image file names, in sorted order (which is the generation order).
        attributes: ``{"weather": (...), "timeofday": (...), "scene": (...)}``, one value per image.
        contrast: The planted factors: ``{"weather": WEATHER_CONTRAST, "timeofday": TIMEOFDAY_CONTRAST,
            "night_skin_tone": NIGHT_SKIN_TONE_CONTRAST}``.
        box_contrast: Per image, per box in label order: the share of its clear-daytime contrast the
            box keeps (the product of its factors).
        visible_fraction: Per image, per box: the share of the object's pixels left uncovered.
        hard_slices: Slices planted far below the rest (:data:`HARD_SLICES`).
    """

    root: str
    split: str
    image_dir: str
    labels_path: str
    pedestrian_attributes_path: str
    truth_path: str
    config: dict[str, Any]
    names: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]
    contrast: dict[str, dict[str, float]]
    box_contrast: tuple[tuple[float, ...], ...]
    visible_fraction: tuple[tuple[float, ...], ...]
    hard_slices: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dictionary of plain Python values."""
        return {
            "schema_version": _SCHEMA_VERSION,
            "root": self.root,
            "split": self.split,
            "image_dir": self.image_dir,
            "labels_path": self.labels_path,
            "pedestrian_attributes_path": self.pedestrian_attributes_path,
            "truth_path": self.truth_path,
            "config": dict(self.config),
            "names": list(self.names),
            "attributes": {key: list(values) for key, values in self.attributes.items()},
            "contrast": {key: dict(values) for key, values in self.contrast.items()},
            "box_contrast": [list(values) for values in self.box_contrast],
            "visible_fraction": [list(values) for values in self.visible_fraction],
            "hard_slices": list(self.hard_slices),
        }


def _image_size(name: str, value: object, minimum: int) -> tuple[int, int]:
    """``(width, height)`` from an int (square) or a pair."""
    size: tuple[object, ...] = (
        (value, value) if not isinstance(value, tuple | list) else tuple(value)
    )
    if len(size) != 2 or any(
        isinstance(side, bool) or not isinstance(side, int) or side < minimum for side in size
    ):
        raise ValueError(
            f"Expected argument `{name}` to be an int or a (width, height) pair of ints >= {minimum}, "
            f"but got {value!r}."
        )
    return int(size[0]), int(size[1])  # type: ignore[call-overload]


def synthetic_config(
    *,
    num_images: int,
    image_size: int | tuple[int, int] = (128, 72),
    seed: int = 0,
    split: str = "val",
    max_objects: int = 5,
) -> dict[str, Any]:
    """Check the arguments of :func:`make_synthetic_bdd` and return them as a JSON-safe config.

    Raises:
        ValueError: If an argument is out of range.
    """
    if (
        isinstance(num_images, bool)
        or not isinstance(num_images, int)
        or not 0 < num_images < _MAX_IMAGES
    ):
        raise ValueError(
            f"Expected argument `num_images` to be a positive int below {_MAX_IMAGES}, "
            f"but got {num_images!r}."
        )
    width, height = _image_size("image_size", image_size, _MIN_SYNTHETIC_SIDE)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected argument `seed` to be a non-negative int, but got {seed!r}.")
    if split not in SPLITS:
        raise ValueError(
            f"Expected argument `split` to be one of {tuple(SPLITS)}, but got {split!r}."
        )
    if isinstance(max_objects, bool) or not isinstance(max_objects, int) or max_objects < 1:
        raise ValueError(
            f"Expected argument `max_objects` to be a positive int, but got {max_objects!r}."
        )
    return {
        "schema_version": _SCHEMA_VERSION,
        "num_images": num_images,
        "image_size": [width, height],
        "seed": seed,
        "split": split,
        "max_objects": max_objects,
    }


@dataclass(slots=True)
class _Object:
    category: str
    box: tuple[int, int, int, int]  # clipped to the image, x2 and y2 exclusive
    truncated: bool
    contrast: float
    skin_tone: str = ""
    age_group: str = ""
    pixels: int = 0
    visible: float = 1.0


def _background(
    rng: np.random.Generator, scene: str, width: int, height: int, horizon: int
) -> FloatArray:
    """Scene texture around a mean grey of about 0.4; the scene changes the pattern only."""
    base = 0.4 + rng.uniform(-0.04, 0.04)
    image = np.full((height, width, 3), base, dtype=np.float32)
    image += rng.uniform(-0.02, 0.02, 3).astype(np.float32)
    upper, lower = image[:horizon], image[horizon:]
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    if scene == "city street":
        # Facades of varying grey with a grid of windows; a dashed centre line on the road.
        edges = np.cumsum(rng.integers(max(4, width // 16), max(8, width // 6), size=width))
        levels = rng.uniform(-0.07, 0.07, size=edges.size).astype(np.float32)
        columns = levels[np.searchsorted(edges, np.arange(width), side="right")]
        period = max(3, height // 12)
        windows = ((ys[:horizon] % period) < period / 2) & ((xs % period) < period / 2)
        upper += (columns[None, :] + 0.05 * windows)[..., None]
        dashes = (np.abs(xs - width / 2) < 1.0) & ((ys[horizon:] // max(2, height // 12)) % 2 == 0)
        lower += (0.06 * dashes - 0.03)[..., None]
    elif scene == "highway":
        # Smooth sky-to-horizon gradient, faint banding on the road.
        gradient = 0.06 - 0.08 * ys[:horizon] / max(horizon, 1)
        upper += gradient[..., None] + np.array([-0.02, 0.0, 0.03], dtype=np.float32)
        band = rng.uniform(3.0, 6.0) * height / 64
        lower += (0.03 * np.sin(2 * np.pi * ys[horizon:] / band) - 0.02)[..., None]
    else:
        # Blotchy gardens and hedges above, a green verge along the road.
        blocks = rng.uniform(-0.07, 0.07, size=(4, 8)).astype(np.float32)
        rows = (np.arange(horizon) * 4) // max(horizon, 1)
        cells = (np.arange(width) * 8) // width
        upper += blocks[rows][:, cells][..., None] + np.array([-0.03, 0.03, -0.04], np.float32)
        verge = ys[horizon:] < horizon + max(2, height // 16)
        lower += (np.where(verge, 0.02, -0.02) + 0.0 * xs)[..., None]
    image += rng.uniform(-0.02, 0.02, size=(height, width, 1)).astype(np.float32)
    return image


def _place(
    rng: np.random.Generator,
    category: str,
    width: int,
    height: int,
    horizon: int,
    age_group: str,
) -> tuple[float, float, float, float]:
    """An unclipped ``x1, y1, x2, y2`` box; ground objects grow as they come nearer (lower)."""
    low, high, aspect_low, aspect_high = _SIZES[category]
    box_height = rng.uniform(low, high) * height
    if category == "traffic sign":
        y1 = rng.uniform(0.05 * height, max(0.06 * height, horizon - box_height - 2))
    else:
        bottom = rng.uniform(horizon + 0.2 * (height - horizon), height + 0.05 * height)
        box_height *= 0.7 + 0.6 * (bottom - horizon) / max(height - horizon, 1)
        if age_group == "child":
            box_height *= CHILD_HEIGHT
        y1 = bottom - box_height
    box_height = max(box_height, 6.0)
    box_width = max(box_height * rng.uniform(aspect_low, aspect_high), 3.0)
    x1 = rng.uniform(-0.2 * box_width, width - 0.8 * box_width)
    return x1, y1, x1 + box_width, y1 + box_height


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


def _blend(
    image: FloatArray,
    owner: np.ndarray[Any, np.dtype[np.int64]],
    region: tuple[slice, slice],
    colour: tuple[float, float, float],
    opacity: float,
    index: int,
) -> int:
    patch = image[region]
    patch += opacity * (np.asarray(colour, dtype=np.float32) - patch)
    owner[region] = index
    return int(patch.shape[0] * patch.shape[1])


def _draw(
    rng: np.random.Generator,
    image: FloatArray,
    owner: np.ndarray[Any, np.dtype[np.int64]],
    item: _Object,
    index: int,
    opacity: float,
) -> None:
    x1, y1, x2, y2 = item.box
    colour = _COLOURS[item.category]
    if item.category == "pedestrian":
        # A body with a head in the skin colour, narrower than the body.
        head = max(1, round(0.22 * (y2 - y1)))
        inset = (x2 - x1) // 4
        body = (slice(y1 + head, y2), slice(x1, x2))
        face = (slice(y1, y1 + head), slice(x1 + inset, max(x2 - inset, x1 + inset + 1)))
        item.pixels = _blend(image, owner, body, colour, opacity, index)
        skin = _SKIN_COLOURS[item.skin_tone]
        item.pixels += _blend(image, owner, face, skin, opacity, index)
    elif item.category == "other vehicle":
        # A queue of small vehicles, one crowd box around all of them.
        parts = int(rng.integers(2, 4))
        step = (x2 - x1) / parts
        for part in range(parts):
            left = x1 + round(part * step)
            right = max(left + 1, x1 + round((part + 1) * step) - 1)
            top = y1 + int(rng.integers(0, max(1, (y2 - y1) // 3)))
            item.pixels += _blend(
                image, owner, (slice(top, y2), slice(left, right)), colour, opacity, index
            )
    else:
        if item.category == "traffic sign":
            pole = max(1, (x2 - x1) // 5)
            middle = (x1 + x2) // 2
            pole_region = (slice(y2, y2 + (y2 - y1) * 2), slice(middle - pole // 2, middle + pole))
            image[pole_region] = 0.5 * image[pole_region] + 0.12
        item.pixels = _blend(image, owner, (slice(y1, y2), slice(x1, x2)), colour, opacity, index)


def _occlude(
    rng: np.random.Generator,
    image: FloatArray,
    owner: np.ndarray[Any, np.dtype[np.int64]],
    box: tuple[int, int, int, int],
) -> None:
    """Cover a side of the lower part of the box with scenery (a hedge, a post)."""
    x1, y1, x2, y2 = box
    cover = max(1, round((x2 - x1) * rng.uniform(0.35, 0.6)))
    top = y1 + round((y2 - y1) * rng.uniform(0.25, 0.5))
    columns = slice(x1, x1 + cover) if rng.random() < 0.5 else slice(x2 - cover, x2)
    region = (slice(top, y2), columns)
    image[region] = np.array([0.22, 0.26, 0.18], np.float32) + rng.uniform(-0.03, 0.03)
    owner[region] = -2


def _render(
    rng: np.random.Generator,
    attributes: dict[str, str],
    width: int,
    height: int,
    max_objects: int,
) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], list[_Object]]:
    weather, timeofday, scene = (attributes[key] for key in FRAME_ATTRIBUTES)
    horizon = round(height * rng.uniform(0.35, 0.5))
    image = _background(rng, scene, width, height, horizon)
    owner = np.full((height, width), -1, dtype=np.int64)
    weather_gain, weather_offset = _WEATHER_LOOK[weather]
    time_gain, time_offset = _TIMEOFDAY_LOOK[timeofday]
    condition = WEATHER_CONTRAST[weather] * TIMEOFDAY_CONTRAST[timeofday]

    objects: list[_Object] = []
    wanted = int(rng.binomial(max_objects, 0.5))
    categories = rng.choice(
        len(SYNTHETIC_CATEGORIES), size=wanted, p=SYNTHETIC_CATEGORY_PROBABILITIES
    )
    kinds = [SYNTHETIC_CATEGORIES[code] for code in categories]
    if rng.random() < CROWD_PROBABILITY:
        kinds.append("other vehicle")
    for kind in kinds:
        skin_tone = age_group = ""
        contrast = condition
        if kind == "pedestrian":
            skin_tone = "dark" if rng.random() < 0.5 else "light"
            age_group = "child" if rng.random() < 0.3 else "adult"
            if timeofday == "night":
                contrast *= NIGHT_SKIN_TONE_CONTRAST[skin_tone]
        for _ in range(6):
            x1, y1, x2, y2 = _place(rng, kind, width, height, horizon, age_group)
            box = (
                max(0, math.floor(x1)),
                max(0, math.floor(y1)),
                min(width, math.ceil(x2)),
                min(height, math.ceil(y2)),
            )
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            if all(_iou(box, other.box) <= 0.3 for other in objects):
                truncated = x1 < 0 or y1 < 0 or x2 > width or y2 > height
                objects.append(
                    _Object(
                        kind, box, truncated, contrast, skin_tone=skin_tone, age_group=age_group
                    )
                )
                break

    # Far (higher) objects first so nearer ones overlap them; signs hang above the road.
    objects.sort(key=lambda item: (item.category != "traffic sign", item.box[3]))
    for index, item in enumerate(objects):
        opacity = item.contrast / (weather_gain * time_gain)
        _draw(rng, image, owner, item, index, opacity)
        if item.category in ("car", "truck", "pedestrian") and rng.random() < OCCLUSION_PROBABILITY:
            _occlude(rng, image, owner, item.box)
    for index, item in enumerate(objects):
        item.visible = float(np.count_nonzero(owner == index)) / max(item.pixels, 1)

    image = weather_gain * image + np.asarray(weather_offset, dtype=np.float32)
    image = time_gain * image + np.asarray(time_offset, dtype=np.float32)
    if weather == "rainy":
        ys = np.arange(height)[:, None]
        xs = np.arange(width)[None, :]
        spacing = max(4, width // 12)
        streaks = ((xs + ys // 2 + int(rng.integers(spacing))) % spacing == 0) & (
            rng.random((height, width)) < 0.6
        )
        image += (0.12 * streaks)[..., None]
    if timeofday == "night":
        image += rng.uniform(-0.03, 0.03, size=image.shape).astype(np.float32)
    pixels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return pixels, objects


def _write_json(path: Path, payload: object) -> None:
    """Write through a temporary file so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(temporary, path)


def make_synthetic_bdd(
    root: str | os.PathLike[str],
    *,
    num_images: int,
    image_size: int | tuple[int, int] = (128, 72),
    seed: int = 0,
    split: str = "val",
    max_objects: int = 5,
) -> SyntheticBDD:
    """Write a small BDD-format detection data set with planted disparities.

    Writes ``<root>/images/<split>/<split>_NNNNNN.png``, ``<root>/labels/det_<split>.json`` (det_20
    layout, readable by :func:`load_bdd100k`), ``<root>/labels/pedestrian_attributes_<split>.csv``
    (``name, id, skin_tone, age_group``) and, last, ``<root>/labels/synthetic_<split>.json``
    (:meth:`SyntheticBDD.to_dict`). Images of an earlier run (``<split>_*.png``) are removed first.

    Each image is a street scene (``scene``: city street, highway, residential) under a ``weather``
    (clear, overcast, rainy, foggy) and a ``timeofday`` (daytime, dawn/dusk, night) with up to
    ``max_objects`` objects: red cars (wide), blue trucks (large, squarer), cyan pedestrians (tall and
    narrow, with a head in the skin colour) and yellow traffic signs (small squares on a pole, above the
    horizon). See the module docstring for the planted contrast factors.

    The output depends only on the arguments: the same call writes identical files.

    Args:
        root: Folder to write into (created if missing).
        num_images: Number of images, a positive int below 1,000,000.
        image_size: ``(width, height)`` or the side of a square, each >= 32.
        seed: Non-negative seed; combined with the split to seed one ``numpy`` generator.
        split: ``"train"``, ``"val"`` or ``"test"``.
        max_objects: The number of labelled objects per image is Binomial(``max_objects``, 0.5), so
            a few images have none (and no ``labels`` key); a crowd box may come on top.

    Returns:
        The paths written and the planted truth.

    Raises:
        ValueError: If an argument is out of range or ``split`` is unknown.
        FileExistsError: If ``<root>/labels/det_<split>.json`` exists but was not written here.

    Example:
        >>> import tempfile
        >>> data = make_synthetic_bdd(tempfile.mkdtemp(), num_images=4, image_size=64, seed=0)
        >>> len(load_bdd100k(data.labels_path)), data.contrast["timeofday"]["night"]
        (4, 0.5)
    """
    root = _check_path("root", root)
    config = synthetic_config(
        num_images=num_images,
        image_size=image_size,
        seed=seed,
        split=split,
        max_objects=max_objects,
    )
    width, height = config["image_size"]
    rng = np.random.default_rng([seed, SPLITS[split]])
    image_dir = root / "images" / split
    labels_dir = root / "labels"
    labels_path = labels_dir / f"det_{split}.json"
    if labels_path.exists() and read_synthetic_config(root, split) is None:
        raise FileExistsError(
            f"Expected {root} to hold no {split} labels or synthetic ones, but {labels_path} exists "
            "and was not written by make_synthetic_bdd. HINT: pick an empty `root` for synthetic data."
        )
    # An earlier run's files go first, the record of it before anything else, so an interrupted run
    # never leaves a record that matches half-written files. Only this generator's own images go.
    truth_path = labels_dir / f"synthetic_{split}.json"
    truth_path.unlink(missing_ok=True)
    labels_path.unlink(missing_ok=True)
    for stale in image_dir.glob(f"{split}_*.png"):
        stale.unlink()
    image_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)

    weather = rng.choice(len(WEATHER), size=num_images, p=WEATHER_PROBABILITIES)
    timeofday = rng.choice(len(TIMEOFDAY), size=num_images, p=TIMEOFDAY_PROBABILITIES)
    scene = rng.choice(len(SCENE), size=num_images, p=SCENE_PROBABILITIES)
    names = tuple(f"{split}_{index:06d}.png" for index in range(num_images))
    frames: list[dict[str, Any]] = []
    pedestrian_rows: list[tuple[str, str, str, str]] = []
    box_contrast: list[tuple[float, ...]] = []
    visible_fraction: list[tuple[float, ...]] = []
    next_id = 0
    for index, name in enumerate(names):
        attributes = {
            "weather": WEATHER[weather[index]],
            "timeofday": TIMEOFDAY[timeofday[index]],
            "scene": SCENE[scene[index]],
        }
        pixels, objects = _render(rng, attributes, width, height, max_objects)
        Image.fromarray(pixels).save(image_dir / name, compress_level=1)
        labels = []
        for item in objects:
            label_id = str(next_id)
            next_id += 1
            x1, y1, x2, y2 = item.box
            labels.append(
                {
                    "id": label_id,
                    "category": item.category,
                    "attributes": {
                        "occluded": item.visible < _OCCLUDED_BELOW,
                        "truncated": item.truncated,
                        "trafficLightColor": "NA",
                    },
                    "box2d": {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)},
                }
            )
            if item.category == "pedestrian":
                pedestrian_rows.append((name, label_id, item.skin_tone, item.age_group))
        frame: dict[str, Any] = {"name": name, "attributes": attributes, "timestamp": 10000}
        if labels:
            frame["labels"] = labels
        frames.append(frame)
        box_contrast.append(tuple(round(item.contrast, 6) for item in objects))
        visible_fraction.append(tuple(round(item.visible, 6) for item in objects))

    _write_json(labels_path, frames)
    attributes_path = labels_dir / f"pedestrian_attributes_{split}.csv"
    with attributes_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("name", "id", "skin_tone", "age_group"))
        writer.writerows(pedestrian_rows)
    truth = SyntheticBDD(
        root=str(root),
        split=split,
        image_dir=str(image_dir),
        labels_path=str(labels_path),
        pedestrian_attributes_path=str(attributes_path),
        truth_path=str(truth_path),
        config=config,
        names=names,
        attributes={
            "weather": tuple(WEATHER[code] for code in weather),
            "timeofday": tuple(TIMEOFDAY[code] for code in timeofday),
            "scene": tuple(SCENE[code] for code in scene),
        },
        contrast={
            "weather": dict(WEATHER_CONTRAST),
            "timeofday": dict(TIMEOFDAY_CONTRAST),
            "night_skin_tone": dict(NIGHT_SKIN_TONE_CONTRAST),
        },
        box_contrast=tuple(box_contrast),
        visible_fraction=tuple(visible_fraction),
        hard_slices=HARD_SLICES,
    )
    _write_json(truth_path, truth.to_dict())
    logger.info("Wrote %d synthetic %s images to %s.", num_images, split, image_dir)
    return truth


def read_synthetic_config(root: str | os.PathLike[str], split: str) -> dict[str, Any] | None:
    """The config of the synthetic split under ``root``, or ``None`` if none was completely written."""
    path = Path(root) / "labels" / f"synthetic_{split}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = data.get("config") if isinstance(data, dict) else None
    return config if isinstance(config, dict) else None


# --------------------------------------------------------------------------------------------------
# Dataset and collate


class BDDDetectionDataset(Dataset[dict[str, Any]]):
    """Images and detection targets of BDD frames, in sorted order of the image names.

    Each item is ``{"image": float32 (3, H, W) in [0, 1], "target": BDDFrame.to_target(),
    "attributes": {"weather": str, "timeofday": str, "scene": str}, "sample_id": int}``, where
    ``sample_id`` is the frame's position in the name-sorted frame list. With ``image_size`` the image
    is resized (bilinear) and the boxes scaled to match. Use :func:`collate_detection` as the loader's
    ``collate_fn``.

    Args:
        image_root: Folder holding the images (``<image_root>/<frame.name>``, JPEG or PNG).
        frames: The frames, for example from :func:`load_bdd100k`.
        image_size: ``(width, height)`` or the side of a square to resize to; ``None`` keeps the size.

    Raises:
        TypeError: If ``image_root`` is not a path or ``frames`` holds something else than BDDFrame.
        ValueError: If two frames share a name or ``image_size`` is not positive.
        FileNotFoundError: When an item's image file is missing (on access).

    Example:
        >>> import tempfile
        >>> data = make_synthetic_bdd(tempfile.mkdtemp(), num_images=2, image_size=(64, 48))
        >>> dataset = BDDDetectionDataset(data.image_dir, load_bdd100k(data.labels_path), image_size=32)
        >>> item = dataset[1]
        >>> tuple(item["image"].shape), item["sample_id"], sorted(item["target"])[:3]
        ((3, 32, 32), 1, ['boxes', 'iscrowd', 'labels'])
    """

    def __init__(
        self,
        image_root: str | os.PathLike[str],
        frames: Sequence[BDDFrame],
        image_size: int | tuple[int, int] | None = None,
    ) -> None:
        self.image_root = _check_path("image_root", image_root)
        bad = [type(frame).__name__ for frame in frames if not isinstance(frame, BDDFrame)]
        if bad:
            raise TypeError(
                f"Expected argument `frames` to hold BDDFrame objects, but got a {bad[0]}."
            )
        self.frames = sorted(frames, key=lambda frame: frame.name)
        for previous, frame in zip(self.frames, self.frames[1:], strict=False):
            if previous.name == frame.name:
                raise ValueError(
                    f"Expected argument `frames` to have unique names, but got {frame.name!r} twice."
                )
        self.image_size = None if image_size is None else _image_size("image_size", image_size, 1)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame = self.frames[index]
        path = self.image_root / frame.name
        if not path.is_file():
            raise FileNotFoundError(
                f"Expected the image of frame {frame.name!r} at {path}, but it is missing."
            )
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        target = frame.to_target()
        if self.image_size is not None and image.size != self.image_size:
            scale_x = self.image_size[0] / image.size[0]
            scale_y = self.image_size[1] / image.size[1]
            image = image.resize(self.image_size, Image.Resampling.BILINEAR)
            scale = torch.tensor([scale_x, scale_y, scale_x, scale_y], dtype=torch.float32)
            target["boxes"] = target["boxes"] * scale
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
        return {
            "image": pixels.permute(2, 0, 1).float().div_(255.0),
            "target": target,
            "attributes": dict(frame.attributes),
            "sample_id": index,
        }


def collate_detection(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Turn :class:`BDDDetectionDataset` items into one batch.

    The batch is ``{"image": float32 (B, 3, H, W), "target": [per-image target dict, ...],
    "attributes": {"weather": [str, ...], "timeofday": [...], "scene": [...]},
    "sample_id": int64 (B,)}``.

    Raises:
        ValueError: If the items are empty or their images differ in size.

    Example:
        >>> item = {"image": torch.zeros(3, 4, 4), "target": {}, "sample_id": 5,
        ...         "attributes": {"weather": "clear", "timeofday": "night", "scene": "highway"}}
        >>> batch = collate_detection([item, item])
        >>> tuple(batch["image"].shape), batch["attributes"]["timeofday"], batch["sample_id"].tolist()
        ((2, 3, 4, 4), ['night', 'night'], [5, 5])
    """
    if not items:
        raise ValueError("Expected at least one item to collate, but got none.")
    shapes = {tuple(item["image"].shape) for item in items}
    if len(shapes) > 1:
        raise ValueError(
            f"Expected images of one size in a batch, but got sizes {sorted(shapes)}. "
            "HINT: pass `image_size` to the dataset or the datamodule."
        )
    return {
        "image": torch.stack([item["image"] for item in items]),
        "target": [item["target"] for item in items],
        "attributes": {
            key: [str(item["attributes"][key]) for item in items] for key in FRAME_ATTRIBUTES
        },
        "sample_id": torch.tensor([int(item["sample_id"]) for item in items], dtype=torch.int64),
    }
