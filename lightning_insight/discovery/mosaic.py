"""Attribution mosaics: a grid of top patches, each framed in the colour of its confusion cell."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["CELL_COLOURS", "attribution_mosaic", "display_rgb"]

#: Frame colour (RGB) per confusion cell: TP green, TN blue, FP orange, FN red; grey when unknown.
CELL_COLOURS: dict[str | None, tuple[int, int, int]] = {
    "TP": (44, 160, 44),
    "TN": (31, 119, 180),
    "FP": (255, 127, 14),
    "FN": (214, 39, 40),
    None: (128, 128, 128),
}


def display_rgb(images: torch.Tensor) -> torch.Tensor:
    """Model inputs ``(N, C, H, W)`` as RGB in ``[0, 1]`` for display.

    Inputs already in ``[0, 1]`` are shown as they are (a dark image stays dark); otherwise (e.g.
    normalised inputs) the batch is min-max scaled as a whole, so images stay comparable. One channel
    is repeated, two get their last repeated, channels past the third are dropped.

    Example:
        >>> display_rgb(torch.tensor([[[[0.25, 0.5]]]]))[0, :, 0].tolist()
        [[0.25, 0.5], [0.25, 0.5], [0.25, 0.5]]
        >>> display_rgb(torch.tensor([[[[-1.0, 1.0]]]]))[0, 0, 0].tolist()
        [0.0, 1.0]
    """
    x = images.detach().float()
    if x.shape[1] < 3:
        x = torch.cat([x, x[:, -1:].expand(-1, 3 - x.shape[1], -1, -1)], dim=1)
    x = x[:, :3]
    if x.numel() == 0:
        return x
    low, high = float(x.min()), float(x.max())
    if low >= 0.0 and high <= 1.0:
        return x
    return (x - low) / (high - low) if high > low else torch.zeros_like(x)


def attribution_mosaic(
    patches: torch.Tensor | np.ndarray[Any, Any],
    cells: Sequence[str | None] | None = None,
    *,
    columns: int = 8,
    border: int = 2,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Lay patches out in a grid, each framed by ``border`` pixels in its cell's colour.

    Args:
        patches: ``(M, 3, p, p)`` with values in ``[0, 1]`` (clipped).
        cells: One of ``"TP"``, ``"FP"``, ``"FN"``, ``"TN"`` (or ``None``) per patch; ``None`` frames
            every patch in grey. Empty grid cells after the last patch stay black.
        columns: Patches per row (fewer when ``M`` is smaller).
        border: Frame width in pixels.

    Returns:
        An RGB image ``(rows * (p + 2 * border), columns * (p + 2 * border), 3)`` of ``uint8``.

    Raises:
        ValueError: For patches of another shape, no patches, a cell name outside
            :data:`CELL_COLOURS`, a ``cells`` of another length, or ``columns < 1`` / ``border < 0``.

    Example:
        >>> image = attribution_mosaic(torch.ones(3, 3, 4, 4), ["TP", "FN", None], columns=2, border=1)
        >>> image.shape, image.dtype, image[0, 0].tolist(), image[0, 6].tolist()
        ((12, 12, 3), dtype('uint8'), [44, 160, 44], [214, 39, 40])
    """
    data = np.asarray(
        patches.detach().float().cpu() if isinstance(patches, torch.Tensor) else patches,
        dtype=np.float32,
    )
    if data.ndim != 4 or data.shape[1] != 3 or data.shape[0] == 0 or data.shape[2] != data.shape[3]:
        raise ValueError(
            f"Expected square RGB patches of shape (M, 3, p, p) with M >= 1, but got {data.shape}."
        )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"Expected argument `columns` to be a positive int, but got {columns!r}.")
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise ValueError(
            f"Expected argument `border` to be a non-negative int, but got {border!r}."
        )
    count, _, side, _ = data.shape
    labels: list[str | None] = [None] * count if cells is None else list(cells)
    if len(labels) != count:
        raise ValueError(f"Expected one cell per patch ({count}), but got {len(labels)} cells.")
    unknown = sorted({str(label) for label in labels if label not in CELL_COLOURS})
    if unknown:
        raise ValueError(
            f"Expected cells among {[c for c in CELL_COLOURS if c]} or None, but got {unknown}."
        )
    tile = side + 2 * border
    width = min(columns, count)
    rows = math.ceil(count / width)
    image = np.zeros((rows * tile, width * tile, 3), dtype=np.uint8)
    pixels = np.rint(np.clip(data, 0.0, 1.0) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for index in range(count):
        top, left = (index // width) * tile, (index % width) * tile
        image[top : top + tile, left : left + tile] = CELL_COLOURS[labels[index]]
        image[top + border : top + border + side, left + border : left + border + side] = pixels[
            index
        ]
    return image
