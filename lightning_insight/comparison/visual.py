"""Pictures of a comparison: exemplar regions with paired A/B bars, and per-image A / B / difference maps.

The images are ``uint8`` RGB arrays ``(H, W, 3)`` laid out with
:func:`~lightning_insight.discovery.mosaic.attribution_mosaic`, ready for any sink's ``image``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from lightning_insight.comparison.results import AttributionComparisonReport, ComparisonCluster
from lightning_insight.discovery.mosaic import CELL_COLOURS, attribution_mosaic, display_rgb

__all__ = ["ComparisonEvidence", "cluster_drill_down", "cluster_exemplars", "comparison_images"]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

#: Bar colours: model A blue, model B orange (the mosaic's TN / FP frame colours).
_COLOUR_A = np.array(CELL_COLOURS["TN"], dtype=np.float32) / 255
_COLOUR_B = np.array(CELL_COLOURS["FP"], dtype=np.float32) / 255
#: Outline of the region in the drill-down's first column.
_OUTLINE = np.array([1.0, 0.85, 0.0], dtype=np.float32)
#: Attribution maps are kept at most this many pixels per side.
MAP_SIDE = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonEvidence:
    """What the pictures are drawn from: the probe images and both models' attribution maps.

    Attributes:
        inputs: Probe inputs ``(N, C, H, W)`` on the CPU, in probe order.
        sample_ids: Their sample ids ``(N,)``.
        maps_a: Model A's rectified attribution maps ``(N, h, w)`` (at most :data:`MAP_SIDE` per side).
        maps_b: Model B's, the same shape.
        masses_a: Model A's share of attribution per grid cell ``(N, grid * grid)``.
        masses_b: Model B's.
    """

    inputs: torch.Tensor
    sample_ids: np.ndarray[Any, np.dtype[np.int64]]
    maps_a: torch.Tensor
    maps_b: torch.Tensor
    masses_a: FloatArray
    masses_b: FloatArray

    def row(self, sample_id: int) -> int:
        """Probe position of ``sample_id``.

        Raises:
            KeyError: If the sample is not in the probe set.
        """
        rows = np.flatnonzero(self.sample_ids == sample_id)
        if rows.shape[0] == 0:
            raise KeyError(f"sample id {sample_id} is not in the probe set")
        return int(rows[0])


def small_maps(maps: torch.Tensor) -> torch.Tensor:
    """Rectified maps ``(N, h, w)``, average-pooled down to at most :data:`MAP_SIDE` per side."""
    rectified = maps.detach().float().clamp_min(0).cpu()
    height, width = int(rectified.shape[-2]), int(rectified.shape[-1])
    if max(height, width) <= MAP_SIDE:
        return rectified
    size = (min(height, MAP_SIDE), min(width, MAP_SIDE))
    return F.adaptive_avg_pool2d(rectified[:, None], size)[:, 0]


def _display(image: torch.Tensor) -> torch.Tensor:
    return display_rgb(image[None])[0]


def _resize(image: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(image[None], size=(side, side), mode="nearest")[0]


def _heat(values: torch.Tensor, scale: float, side: int) -> torch.Tensor:
    """A rectified map as a white-to-red heat image ``(3, side, side)``; ``scale`` maps to full red."""
    level = F.interpolate(values[None, None], size=(side, side), mode="bilinear")[0, 0]
    level = (level / scale).clamp(0, 1) if scale > 0 else torch.zeros_like(level)
    return torch.stack([torch.ones_like(level), 1 - level, 1 - level])


def _diverging(difference: torch.Tensor, scale: float, side: int) -> torch.Tensor:
    """``B - A`` as orange (B more) / blue (A more) on white."""
    level = F.interpolate(difference[None, None], size=(side, side), mode="bilinear")[0, 0]
    level = (level / scale).clamp(-1, 1) if scale > 0 else torch.zeros_like(level)
    white = torch.ones(3, side, side)
    towards_b = torch.as_tensor(_COLOUR_B)[:, None, None] - white
    towards_a = torch.as_tensor(_COLOUR_A)[:, None, None] - white
    return white + level.clamp_min(0) * towards_b + (-level).clamp_min(0) * towards_a


def _outlined(image: torch.Tensor, box: tuple[int, int, int, int], side: int) -> torch.Tensor:
    """``image`` resized to ``side`` with ``box`` (input pixels) outlined."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    out = _resize(_display(image), side)
    x0, y0, x1, y1 = box
    top, bottom = round(y0 * side / height), max(round(y1 * side / height) - 1, 0)
    left, right = round(x0 * side / width), max(round(x1 * side / width) - 1, 0)
    colour = torch.as_tensor(_OUTLINE)[:, None]
    out[:, top, left : right + 1] = colour
    out[:, bottom, left : right + 1] = colour
    out[:, top : bottom + 1, left] = colour
    out[:, top : bottom + 1, right] = colour
    return out


def _cell(report: AttributionComparisonReport, box: Sequence[int]) -> int:
    height, width = report.input_size
    x0, y0 = int(box[0]), int(box[1])
    row = min(y0 * report.grid // height, report.grid - 1)
    column = min(x0 * report.grid // width, report.grid - 1)
    return row * report.grid + column


def cluster_exemplars(
    report: AttributionComparisonReport,
    evidence: ComparisonEvidence,
    cluster: ComparisonCluster,
    *,
    count: int = 8,
    side: int = 48,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The cluster's first ``count`` exemplar regions, each above a pair of bars: A (blue), B (orange).

    A bar's height is the region's share of that model's attribution in its image, on one scale across
    the tiles (the tallest bar fills its strip).
    """
    chosen = cluster.exemplars[:count]
    shares = []
    for sample_id, box in chosen:
        row, cell = evidence.row(sample_id), _cell(report, box)
        shares.append((evidence.masses_a[row, cell], evidence.masses_b[row, cell]))
    top = max((max(a, b) for a, b in shares), default=0.0)
    crop_side, strip = side - side // 4, side // 4
    tiles = []
    for (sample_id, box), (share_a, share_b) in zip(chosen, shares, strict=True):
        x0, y0, x1, y1 = box
        image = evidence.inputs[evidence.row(sample_id)]
        crop = _display(image)[:, y0:y1, x0:x1]
        tile = torch.ones(3, side, side)
        tile[:, :crop_side, (side - crop_side) // 2 : (side - crop_side) // 2 + crop_side] = (
            F.interpolate(crop[None], size=(crop_side, crop_side), mode="nearest")[0]
        )
        half = side // 2
        for offset, share, colour in ((0, share_a, _COLOUR_A), (half, share_b, _COLOUR_B)):
            height = round(strip * share / top) if top > 0 else 0
            if height:
                tile[:, side - height :, offset + 2 : offset + half - 2] = torch.as_tensor(colour)[
                    :, None, None
                ]
        tiles.append(tile)
    return attribution_mosaic(torch.stack(tiles), columns=min(count, 8), border=1)


def cluster_drill_down(
    report: AttributionComparisonReport,
    evidence: ComparisonEvidence,
    cluster: ComparisonCluster,
    *,
    count: int = 4,
    side: int = 64,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A / B / difference drill-down: one row per image (the cluster's most extreme, distinct ones).

    Columns: the image with the region outlined, A's map, B's map (one colour scale for both), and
    ``B - A`` (orange: B relies on it more; blue: A does).
    """
    rows: list[tuple[int, tuple[int, int, int, int]]] = []
    for sample_id, box in cluster.exemplars:
        if all(sample_id != seen for seen, _ in rows):
            rows.append((sample_id, box))
        if len(rows) == count:
            break
    tiles = []
    for sample_id, box in rows:
        row = evidence.row(sample_id)
        map_a = evidence.maps_a[row] / evidence.maps_a[row].sum().clamp_min(1e-12)
        map_b = evidence.maps_b[row] / evidence.maps_b[row].sum().clamp_min(1e-12)
        scale = float(torch.maximum(map_a.max(), map_b.max()))
        difference = map_b - map_a
        tiles.extend(
            [
                _outlined(evidence.inputs[row], box, side),
                _heat(map_a, scale, side),
                _heat(map_b, scale, side),
                _diverging(difference, float(difference.abs().max()), side),
            ]
        )
    return attribution_mosaic(torch.stack(tiles), columns=4, border=1)


def comparison_images(
    report: AttributionComparisonReport,
    evidence: ComparisonEvidence,
    *,
    clusters: int = 3,
    exemplars: int = 8,
    drill_down: int = 4,
) -> dict[str, np.ndarray[Any, np.dtype[np.uint8]]]:
    """The pictures of the ``clusters`` top-ranked clusters.

    Keys are ``cluster_{id}/exemplars`` (:func:`cluster_exemplars`) and ``cluster_{id}/drill_down``
    (:func:`cluster_drill_down`).

    Example:
        >>> from lightning_insight.comparison import AttributionComparer
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(4, 2))
        >>> comparer = AttributionComparer("1", num_clusters=2, grid=2, bootstrap=20)
        >>> report = comparer.fit(model, model, [(torch.rand(8, 3, 8, 8), torch.randint(0, 2, (8,)))])
        >>> images = comparison_images(report, comparer.evidence_, clusters=1)
        >>> sorted(images), images["cluster_0/drill_down"].shape[1]
        (['cluster_0/drill_down', 'cluster_0/exemplars'], 264)
    """
    images: dict[str, np.ndarray[Any, np.dtype[np.uint8]]] = {}
    for cluster in report.clusters[:clusters]:
        name = f"cluster_{cluster.cluster_id}"
        images[f"{name}/exemplars"] = cluster_exemplars(report, evidence, cluster, count=exemplars)
        images[f"{name}/drill_down"] = cluster_drill_down(
            report, evidence, cluster, count=drill_down
        )
    return images
