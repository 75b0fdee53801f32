"""Synthetic street scenes with planted disparities, a spurious cue and label noise.

Each image is a small RGB street scene. The binary label says whether a pedestrian-like object (a
bright vertical bar with a head) is present; a negative image holds a distractor of another shape (a
horizontal bar or a disc) drawn from the same colours and sizes, so only the shape tells them apart.

What is planted, and recorded in :class:`PlantedTruth` so tests and demos can check that a tool finds it:

- Disparities by condition. ``weather`` and ``timeofday`` change how the image looks (fog blends toward
  grey, rain adds streaks, snow adds speckles, night darkens, lowers contrast and adds sensor noise) and
  how much of the object's contrast survives. ``weather=foggy&timeofday=night`` loses almost all of it,
  so a trained model is far less accurate there than on ``weather=clear&timeofday=day``.
- A null control: ``scene`` changes only the background texture, never the difficulty.
- A spurious cue: a small red patch in the top-left corner. In ``"train"`` it agrees with the label 90%
  of the time by default; in ``"val"`` and ``"test"`` it is independent of the label.
- Label noise: a fixed fraction of the labels is flipped after rendering.

Everything is drawn from one ``numpy`` generator seeded by ``(seed, split)``, fully vectorised: 4000
images of 3x32x32 take a few hundred milliseconds on one core.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["PlantedTruth", "SceneData", "ScenesDataset", "make_scenes"]

logger = logging.getLogger(__name__)

#: Split name -> code; the code seeds the generator and offsets the sample ids.
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

#: Sample ids of split ``s`` are ``SPLITS[s] * ID_OFFSET + i``, so splits never share an id.
ID_OFFSET = 1_000_000

WEATHER: tuple[str, ...] = ("clear", "rainy", "foggy", "snowy")
WEATHER_PROBABILITIES: tuple[float, ...] = (0.45, 0.2, 0.2, 0.15)
TIMEOFDAY: tuple[str, ...] = ("day", "night")
TIMEOFDAY_PROBABILITIES: tuple[float, ...] = (0.65, 0.35)
SCENE: tuple[str, ...] = ("city", "highway", "residential")
SCENE_PROBABILITIES: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)

#: Planted loss of object contrast per condition; a weather and a time of day combine as
#: ``1 - (1 - w) * (1 - t)``, except foggy at night, which overrides the product.
WEATHER_DIFFICULTY: dict[str, float] = {"clear": 0.0, "rainy": 0.05, "foggy": 0.1, "snowy": 0.05}
TIMEOFDAY_DIFFICULTY: dict[str, float] = {"day": 0.0, "night": 0.1}
FOGGY_NIGHT_DIFFICULTY = 0.93

#: Slices whose planted difficulty is far above the rest, in the project's slice-name format.
HARD_SLICES: tuple[str, ...] = ("weather=foggy&timeofday=night",)

_DEFAULT_AGREEMENT: dict[str, float] = {"train": 0.9, "val": 0.5, "test": 0.5}
_DIFFICULTY_JITTER = 0.04
_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PlantedTruth:
    """What :func:`make_scenes` planted, per sample and per slice.

    Attributes:
        hard_slices: Slice names (``"weather=foggy&timeofday=night"``) whose planted difficulty is far
            above the rest; a working slice-discovery tool should rank these worst.
        spurious_cue: Boolean array ``(N,)``: which images carry the red corner patch.
        spurious_agreement: The planted probability that the cue agrees with the clean label
            (``P(cue | y=1) = P(no cue | y=0)``); 0.5 means independent of the label.
        flipped: Boolean array ``(N,)``: which labels were flipped (``targets != clean_targets``).
        difficulty: Float array ``(N,)`` in ``[0, 1]``: the planted loss of object contrast. The object
            is blended onto its background with opacity ``1 - difficulty`` before the condition's look
            (fog, rain, snow, night) is applied to the whole image. 0 is a clean object, 1 invisible.
    """

    hard_slices: tuple[str, ...]
    spurious_cue: np.ndarray[Any, np.dtype[np.bool_]]
    spurious_agreement: float
    flipped: np.ndarray[Any, np.dtype[np.bool_]]
    difficulty: np.ndarray[Any, np.dtype[np.float64]]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dictionary of plain Python values."""
        return {
            "schema_version": _SCHEMA_VERSION,
            "hard_slices": list(self.hard_slices),
            "spurious_cue": [bool(value) for value in self.spurious_cue],
            "spurious_agreement": float(self.spurious_agreement),
            "flipped": [bool(value) for value in self.flipped],
            "difficulty": [float(value) for value in self.difficulty],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SceneData:
    """One split of synthetic scenes.

    Attributes:
        images: Float32 tensor ``(N, 3, H, W)`` with values in ``[0, 1]``.
        targets: Int64 tensor ``(N,)`` of observed labels (after label noise); 1 = pedestrian present.
        clean_targets: Int64 tensor ``(N,)`` of the labels as rendered.
        sample_ids: Int64 tensor ``(N,)`` of ids unique across splits (``split_code * 1_000_000 + i``).
        attributes: ``{"weather": [...], "timeofday": [...], "scene": [...]}``, one string per sample.
        truth: What was planted.
    """

    images: torch.Tensor
    targets: torch.Tensor
    clean_targets: torch.Tensor
    sample_ids: torch.Tensor
    attributes: dict[str, list[str]]
    truth: PlantedTruth

    def __len__(self) -> int:
        return int(self.targets.shape[0])


class ScenesDataset(Dataset[dict[str, Any]]):
    """A map-style dataset over :class:`SceneData`.

    Each item is ``{"image": Tensor[3, H, W], "target": int64 scalar, "sample_id": int64 scalar,
    "attributes": {"weather": str, "timeofday": str, "scene": str}}``; PyTorch's default collate turns
    a batch's ``attributes`` into lists of strings (``batch["attributes"]["weather"]``).

    Args:
        data: The split to serve.

    Example:
        >>> dataset = ScenesDataset(make_scenes(4, seed=0))
        >>> item = dataset[0]
        >>> tuple(item["image"].shape), sorted(item["attributes"])
        ((3, 32, 32), ['scene', 'timeofday', 'weather'])
    """

    def __init__(self, data: SceneData) -> None:
        if not isinstance(data, SceneData):
            raise TypeError(
                f"Expected argument `data` to be a SceneData, but got {type(data).__name__}."
            )
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        data = self.data
        return {
            "image": data.images[index],
            "target": data.targets[index],
            "sample_id": data.sample_ids[index],
            "attributes": {name: values[index] for name, values in data.attributes.items()},
        }


def _check_arguments(
    num_samples: int,
    image_size: int,
    seed: int,
    split: str,
    spurious_correlation: float | None,
    label_noise: float,
) -> None:
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, int)
        or not 0 < num_samples < ID_OFFSET
    ):
        raise ValueError(
            f"Expected argument `num_samples` to be a positive int below {ID_OFFSET}, but got {num_samples!r}."
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(
            f"Expected argument `image_size` to be an int >= 16, but got {image_size!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected argument `seed` to be a non-negative int, but got {seed!r}.")
    if split not in SPLITS:
        raise ValueError(
            f"Expected argument `split` to be one of {tuple(SPLITS)}, but got {split!r}."
        )
    if spurious_correlation is not None and not (
        isinstance(spurious_correlation, int | float)
        and not isinstance(spurious_correlation, bool)
        and 0.0 <= spurious_correlation <= 1.0
    ):
        raise ValueError(
            "Expected argument `spurious_correlation` to be None or a float in [0, 1], "
            f"but got {spurious_correlation!r}."
        )
    if not (
        isinstance(label_noise, int | float)
        and not isinstance(label_noise, bool)
        and 0.0 <= label_noise < 0.5
    ):
        raise ValueError(
            f"Expected argument `label_noise` to be a float in [0, 0.5), but got {label_noise!r}."
        )


def _uniform(
    rng: np.random.Generator, low: float, high: float, shape: tuple[int, ...]
) -> np.ndarray:
    """Float32 uniform draws; float32 keeps the (N, C, H, W) work cheap."""
    return low + (high - low) * rng.random(shape, dtype=np.float32)


def _box(half_width: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of an interval of ``half_width`` at ``distance`` from its centre."""
    coverage: np.ndarray = np.clip(half_width + 0.5 - np.abs(distance), 0.0, 1.0)
    return coverage


def _disc(radius: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a disc of ``radius``, with ``dy`` (N, H, 1) and ``dx`` (N, 1, W)."""
    coverage: np.ndarray = np.clip(radius + 0.5 - np.sqrt(dy * dy + dx * dx), 0.0, 1.0)
    return coverage


def _background(rng: np.random.Generator, scene: np.ndarray, size: int, scale: float) -> np.ndarray:
    """Grey-ish backgrounds ``(N, 3, H, W)`` whose texture depends on the scene only."""
    n = scene.shape[0]
    yy = np.arange(size, dtype=np.float32)[None, :, None] + 0.5
    xx = np.arange(size, dtype=np.float32)[None, None, :] + 0.5
    base = _uniform(rng, 0.22, 0.42, (n, 1)) + _uniform(rng, -0.04, 0.04, (n, 3))
    texture = np.empty((n, size, size), dtype=np.float32)

    city = np.flatnonzero(scene == SCENE.index("city"))
    # Building facades: a grid of windows (separable, so an outer product).
    period = _uniform(rng, 4.0, 8.0, (city.size, 2, 1, 1)) * scale
    phase = _uniform(rng, 0.0, 2 * np.pi, (city.size, 2, 1, 1))
    columns = np.sin(2 * np.pi * xx / period[:, 0] + phase[:, 0])
    rows = np.sin(2 * np.pi * yy / period[:, 1] + phase[:, 1])
    texture[city] = 0.06 * rows * columns

    highway = np.flatnonzero(scene == SCENE.index("highway"))
    # A sky-to-road gradient with faint horizontal banding.
    period = _uniform(rng, 5.0, 10.0, (highway.size, 1, 1)) * scale
    bands = 0.08 * (0.5 - yy / size) + 0.03 * np.sin(2 * np.pi * yy / period)
    texture[highway] = np.broadcast_to(bands, (highway.size, size, size))

    residential = np.flatnonzero(scene == SCENE.index("residential"))
    # Blotchy low-frequency noise: gardens and houses.
    coarse = _uniform(rng, -0.08, 0.08, (residential.size, 4, 4))
    cell = (np.arange(size) * 4) // size
    texture[residential] = coarse[:, cell[:, None], cell[None, :]]

    texture += _uniform(rng, -0.025, 0.025, (n, size, size))
    images: np.ndarray = base[:, :, None, None] + texture[:, None]
    return images


def _objects(rng: np.random.Generator, label: np.ndarray, size: int, scale: float) -> np.ndarray:
    """Object coverage masks ``(N, H, W)``: pedestrians for label 1, distractors for label 0."""
    n = label.shape[0]
    center_y = _uniform(rng, 12.0 * scale, size - 10.0 * scale, (n, 1, 1))
    center_x = _uniform(rng, 6.0 * scale, size - 6.0 * scale, (n, 1, 1))
    long_side = _uniform(rng, 4.5, 7.0, (n, 1, 1)) * scale
    short_side = _uniform(rng, 1.2, 2.0, (n, 1, 1)) * scale
    radius = _uniform(rng, 3.0, 4.5, (n, 1, 1)) * scale
    is_disc = rng.random(n) < 0.5
    dy = np.arange(size, dtype=np.float32)[None, :, None] + 0.5 - center_y
    dx = np.arange(size, dtype=np.float32)[None, None, :] + 0.5 - center_x

    coverage = np.empty((n, size, size), dtype=np.float32)
    # Pedestrian: a vertical body with a head on top.
    people = np.flatnonzero(label == 1)
    body = _box(short_side[people], dx[people]) * _box(long_side[people], dy[people])
    head_dy = dy[people] + long_side[people] + 0.8 * short_side[people]
    head = _disc(1.1 * short_side[people], head_dy, dx[people])
    coverage[people] = np.maximum(body, head)
    # Distractors: a horizontal bar or a disc.
    bars = np.flatnonzero((label == 0) & ~is_disc)
    coverage[bars] = _box(long_side[bars], dx[bars]) * _box(short_side[bars], dy[bars])
    discs = np.flatnonzero((label == 0) & is_disc)
    coverage[discs] = _disc(radius[discs], dy[discs], dx[discs])
    return coverage


def _apply_conditions(
    rng: np.random.Generator,
    images: np.ndarray,
    weather: np.ndarray,
    night: np.ndarray,
    scale: float,
) -> None:
    """Apply each condition's look to the whole image, in place."""
    size = images.shape[-1]

    foggy = np.flatnonzero(weather == WEATHER.index("foggy"))
    veil = _uniform(rng, 0.45, 0.6, (foggy.size, 1, 1, 1))
    images[foggy] = (1.0 - veil) * images[foggy] + veil * 0.72

    rainy = np.flatnonzero(weather == WEATHER.index("rainy"))
    # Thin slanted dashed streaks, lighter than the scene.
    yy = np.arange(size, dtype=np.float32)[None, :, None] + 0.5
    xx = np.arange(size, dtype=np.float32)[None, None, :] + 0.5
    spacing = _uniform(rng, 4.0, 7.0, (rainy.size, 1, 1)) * scale
    slope = _uniform(rng, 0.2, 0.45, (rainy.size, 1, 1))
    phase = _uniform(rng, 0.0, 1.0, (rainy.size, 1, 1)) * spacing
    on_line = np.mod(xx + slope * yy + phase, spacing) < 1.0
    dashed = rng.random((rainy.size, size, size), dtype=np.float32) < 0.7
    streaks = (on_line & dashed).astype(np.float32)[:, None]
    drops = images[rainy]
    images[rainy] = 0.92 * (drops + streaks * (0.25 * (0.85 - drops)))

    snowy = np.flatnonzero(weather == WEATHER.index("snowy"))
    flakes = 0.75 * (rng.random((snowy.size, 1, size, size), dtype=np.float32) < 0.05)
    images[snowy] = images[snowy] * (1.0 - flakes) + 0.95 * flakes + 0.04

    dark = np.flatnonzero(night)
    scenes = images[dark]
    mean = scenes.mean(axis=(1, 2, 3), keepdims=True)
    sensor = _uniform(rng, -0.04, 0.04, scenes.shape)
    images[dark] = 0.55 * (mean + 0.8 * (scenes - mean)) + sensor


def make_scenes(
    num_samples: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    split: str = "train",
    spurious_correlation: float | None = None,
    label_noise: float = 0.03,
) -> SceneData:
    """Generate a split of synthetic street scenes with planted disparities.

    The result depends only on ``(seed, split)`` and the other arguments: the same call gives identical
    tensors, and different splits give different samples with disjoint sample ids. See the module
    docstring for what is planted; :attr:`SceneData.truth` records it.

    Args:
        num_samples: Number of images, a positive int below 1,000,000.
        image_size: Height and width in pixels (>= 16); shapes scale with it.
        seed: Non-negative seed; combined with the split to seed one ``numpy`` generator.
        split: ``"train"``, ``"val"`` or ``"test"``.
        spurious_correlation: Probability that the red corner cue agrees with the clean label
            (``P(cue | y=1) = P(no cue | y=0)``). ``None`` uses 0.9 for ``"train"`` and 0.5 (the cue is
            independent of the label) for ``"val"`` and ``"test"``.
        label_noise: Fraction of labels flipped after rendering, in ``[0, 0.5)``; exactly
            ``round(label_noise * num_samples)`` labels are flipped.

    Returns:
        The images, observed and clean targets, sample ids, attributes and the planted truth.

    Raises:
        ValueError: If an argument is out of range or ``split`` is unknown.

    Example:
        >>> data = make_scenes(8, seed=0, split="val")
        >>> tuple(data.images.shape), data.targets.dtype, int(data.sample_ids[0])
        ((8, 3, 32, 32), torch.int64, 1000000)
        >>> data.truth.hard_slices
        ('weather=foggy&timeofday=night',)
    """
    _check_arguments(num_samples, image_size, seed, split, spurious_correlation, label_noise)
    split_code = SPLITS[split]
    agreement = (
        _DEFAULT_AGREEMENT[split] if spurious_correlation is None else float(spurious_correlation)
    )
    rng = np.random.default_rng([seed, split_code])
    n = num_samples
    scale = image_size / 32.0

    label = (rng.random(n) < 0.5).astype(np.int64)
    weather = rng.choice(len(WEATHER), size=n, p=WEATHER_PROBABILITIES)
    night = rng.random(n) < TIMEOFDAY_PROBABILITIES[1]
    scene = rng.choice(len(SCENE), size=n, p=SCENE_PROBABILITIES)

    weather_difficulty = np.array([WEATHER_DIFFICULTY[name] for name in WEATHER])[weather]
    time_difficulty = np.where(night, TIMEOFDAY_DIFFICULTY["night"], TIMEOFDAY_DIFFICULTY["day"])
    difficulty = 1.0 - (1.0 - weather_difficulty) * (1.0 - time_difficulty)
    difficulty = np.where(
        (weather == WEATHER.index("foggy")) & night, FOGGY_NIGHT_DIFFICULTY, difficulty
    )
    jitter = rng.uniform(-_DIFFICULTY_JITTER, _DIFFICULTY_JITTER, size=n)
    difficulty = np.clip(difficulty + jitter, 0.0, 1.0)

    images = _background(rng, scene, image_size, scale)
    coverage = _objects(rng, label, image_size, scale)
    colour = _uniform(rng, 0.6, 1.0, (n, 3))
    opacity = (coverage * (1.0 - difficulty.astype(np.float32))[:, None, None])[:, None]
    images += opacity * (colour[:, :, None, None] - images)
    _apply_conditions(rng, images, weather, night, scale)
    np.clip(images, 0.0, 1.0, out=images)

    # The cue is drawn after the conditions so it stays equally visible everywhere: a shortcut the
    # model can take even where the object itself is invisible.
    agrees = rng.random(n) < agreement
    cue = np.where(agrees, label == 1, label == 0)
    patch = max(1, round(3 * scale))
    images[cue, :, :patch, :patch] = np.array([1.0, 0.0, 0.0], dtype=np.float32)[:, None, None]

    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=round(label_noise * n), replace=False)] = True
    targets = np.where(flipped, 1 - label, label)

    logger.debug("Generated %d %s scenes (seed=%d, cue agreement=%.2f).", n, split, seed, agreement)
    truth = PlantedTruth(
        hard_slices=HARD_SLICES,
        spurious_cue=cue,
        spurious_agreement=agreement,
        flipped=flipped,
        difficulty=difficulty,
    )
    return SceneData(
        images=torch.from_numpy(images),
        targets=torch.from_numpy(targets),
        clean_targets=torch.from_numpy(label),
        sample_ids=torch.arange(n, dtype=torch.int64) + split_code * ID_OFFSET,
        attributes={
            "weather": [WEATHER[code] for code in weather],
            "timeofday": [TIMEOFDAY[int(code)] for code in night],
            "scene": [SCENE[code] for code in scene],
        },
        truth=truth,
    )
