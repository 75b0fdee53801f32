"""What a person looks at for one failure mode: top images, feature heatmaps, feature attacks, a panel.

These helpers work on plain tensors, so they serve the miner, the callback and a notebook alike:

- :func:`most_activating`: the samples where a feature is strongest (optionally among a subset,
  e.g. one predicted class).
- :func:`feature_heatmaps`: where in each image the feature fires, as a colour overlay.
- :func:`feature_attack`: the images changed, within a norm ball, to make the feature stronger, which
  shows what the feature responds to (opt-in, a bounded number of steps).
- :func:`failure_mode_panel`: rows of images tiled into one ``(3, H, W)`` picture, built on
  :func:`~lightning_insight.discovery.mosaic.attribution_mosaic`.

Gradient work runs inside ``torch.inference_mode(False)`` and ``torch.enable_grad()``
(:func:`~lightning_insight.failure_modes.robust.gradients_enabled`) on clones of the inputs, so :func:`feature_attack` works under Lightning's ``trainer.validate()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lightning_insight.discovery.mosaic import CELL_COLOURS, attribution_mosaic
from lightning_insight.failure_modes.robust import (
    check_clamp,
    check_images,
    check_positive_float,
    gradients_enabled,
    project_perturbation,
    unit_direction,
)
from lightning_insight.fairness.functional import check_positive_int

__all__ = [
    "MAX_ATTACK_STEPS",
    "NORMS",
    "failure_mode_panel",
    "feature_attack",
    "feature_heatmaps",
    "most_activating",
]

#: The most gradient steps :func:`feature_attack` takes; it runs inside validation, so it is bounded.
MAX_ATTACK_STEPS = 200
#: Norm balls :func:`feature_attack` knows.
NORMS: tuple[str, ...] = ("l2", "linf")

#: matplotlib's "inferno" at 9 evenly spaced points: dark (cold) to bright yellow (hot), with a
#: brightness that rises monotonically, so the hottest spot is also the brightest.
_INFERNO: tuple[tuple[float, float, float], ...] = (
    (0.0015, 0.0005, 0.0139),
    (0.1293, 0.0473, 0.2908),
    (0.3415, 0.0623, 0.4294),
    (0.5409, 0.1347, 0.4151),
    (0.7357, 0.2159, 0.3302),
    (0.8943, 0.3534, 0.1936),
    (0.9784, 0.5579, 0.0349),
    (0.9746, 0.7977, 0.2063),
    (0.9884, 0.9984, 0.6449),
)


def _check_tensor(name: str, value: object, ndim: int, shape: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"Expected argument `{name}` to be a torch.Tensor, but got {type(value).__name__}."
        )
    if value.ndim != ndim:
        raise ValueError(
            f"Expected argument `{name}` of shape {shape}, but got shape {tuple(value.shape)}."
        )
    return value


def _check_feature_index(feature_index: object, count: int) -> int:
    if (
        isinstance(feature_index, bool)
        or not isinstance(feature_index, int)
        or not 0 <= feature_index < count
    ):
        raise ValueError(
            f"Expected argument `feature_index` to be an int in [0, {count - 1}], but got "
            f"{feature_index!r}. HINT: use an original feature index, below the feature count {count}."
        )
    return feature_index


def _candidates(among: object, count: int, device: torch.device) -> torch.Tensor:
    if among is None:
        return torch.arange(count, device=device)
    if isinstance(among, torch.Tensor | np.ndarray) or (
        isinstance(among, Sequence) and not isinstance(among, str)
    ):
        chosen = torch.as_tensor(
            np.asarray(among) if not isinstance(among, torch.Tensor) else among
        )
    else:
        raise TypeError(
            f"Expected argument `among` to be None, a boolean mask or a sequence of indices, but got "
            f"{type(among).__name__}."
        )
    if chosen.ndim != 1:
        raise ValueError(
            f"Expected argument `among` to be one-dimensional, but got shape {tuple(chosen.shape)}."
        )
    if chosen.dtype == torch.bool:
        if chosen.shape[0] != count:
            raise ValueError(
                f"Expected a boolean `among` with one entry per sample ({count}), but got "
                f"{chosen.shape[0]}."
            )
        return torch.nonzero(chosen.to(device), as_tuple=True)[0]
    if chosen.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if chosen.is_floating_point() or chosen.is_complex():
        raise TypeError(
            f"Expected argument `among` to hold integer indices or booleans, but got {chosen.dtype}."
        )
    chosen = chosen.long().to(device)
    if int(chosen.min()) < 0 or int(chosen.max()) >= count:
        raise ValueError(
            f"Expected the indices in `among` to lie in [0, {count - 1}], but got values from "
            f"{int(chosen.min())} to {int(chosen.max())}."
        )
    return chosen


def most_activating(
    features: torch.Tensor,
    feature_index: int,
    *,
    k: int,
    among: torch.Tensor | np.ndarray[Any, Any] | Sequence[int] | None = None,
) -> torch.Tensor:
    """Indices of the ``k`` samples with the largest value of one feature, largest first.

    Ties keep the samples' order (a stable sort). With ``among``, only those samples compete, and
    the indices returned still index ``features`` (not the subset).

    Args:
        features: ``(N, D)`` feature values.
        feature_index: The feature ``d`` in ``[0, D)``.
        k: How many indices at most; fewer come back when fewer samples compete.
        among: The competing samples: integer indices into ``features`` or a boolean mask ``(N,)``;
            ``None`` for all.

    Returns:
        Int64 tensor ``(min(k, M),)`` on the features' device, where ``M`` is the number of competing
        samples.

    Raises:
        ValueError: For features that are not 2-D, an index out of range, ``k < 1``, a mask of another
            length, or a competing sample whose feature value is NaN.
        TypeError: If ``features`` is not a tensor or ``among`` has another type.

    Example:
        >>> features = torch.tensor([[0.1, 5.0], [0.9, 1.0], [0.5, 3.0], [0.7, 2.0]])
        >>> most_activating(features, 0, k=2).tolist()
        [1, 3]
        >>> most_activating(features, 1, k=5, among=[1, 3]).tolist()
        [3, 1]
    """
    features = _check_tensor("features", features, 2, "(N, D)")
    index = _check_feature_index(feature_index, features.shape[1])
    check_positive_int("k", k)
    candidates = _candidates(among, features.shape[0], features.device)
    values = features.detach()[candidates, index]
    if bool(values.isnan().any()):
        raise ValueError(
            f"Expected finite values of feature {index}, but got NaN for samples "
            f"{candidates[values.isnan()][:5].tolist()}. HINT: drop those samples with `among`."
        )
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    return candidates[order]


def _colour_map(heat: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` values in ``[0, 1]`` to ``(N, 3, H, W)`` inferno colours."""
    table = torch.tensor(_INFERNO, dtype=heat.dtype, device=heat.device)
    position = heat.clamp(0.0, 1.0) * (table.shape[0] - 1)
    lower = position.floor().long().clamp(max=table.shape[0] - 2)
    fraction = (position - lower)[..., None]
    colours = table[lower] * (1.0 - fraction) + table[lower + 1] * fraction
    return colours.permute(0, 3, 1, 2)


def _as_rgb(images: torch.Tensor, name: str) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"Expected argument `{name}` to hold images (N, 1, H, W) or (N, 3, H, W), but got shape "
            f"{tuple(images.shape)}."
        )
    rgb = images.detach().float().clamp(0.0, 1.0)
    return rgb.expand(-1, 3, -1, -1) if rgb.shape[1] == 1 else rgb


def feature_heatmaps(
    feature_map: torch.Tensor,
    feature_index: int,
    images: torch.Tensor,
    *,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Where feature ``d`` fires in each image: channel ``d`` of the feature map as a colour overlay.

    The channel is upsampled to the image size (bilinear), scaled to ``[0, 1]`` per image (min to
    max; a constant channel becomes 0, the coldest colour, everywhere), coloured with the "inferno" colour map (dark is
    cold, bright yellow is hot) and blended over the image as
    ``(1 - alpha) * image + alpha * colour``. A channel whose spread is below ``1e-5`` of its largest
    magnitude counts as constant. Grayscale images are repeated to 3 channels; images are
    clipped to ``[0, 1]``.

    Args:
        feature_map: ``(N, D, h, w)`` spatial features, e.g.
            :meth:`~lightning_insight.failure_modes.robust.RobustExtractor.feature_map`.
        feature_index: The feature ``d`` in ``[0, D)``.
        images: ``(N, C, H, W)`` with ``C`` 1 or 3, values in ``[0, 1]``.
        alpha: Weight of the heatmap in the blend, in ``[0, 1]`` (1 shows the heatmap alone).

    Returns:
        Float32 tensor ``(N, 3, H, W)`` with values in ``[0, 1]``, on the images' device.

    Raises:
        ValueError: For shapes that do not fit, an index out of range or ``alpha`` outside ``[0, 1]``.
        TypeError: If ``feature_map`` or ``images`` is not a tensor.

    Example:
        >>> feature_map = torch.zeros(1, 2, 2, 2)
        >>> feature_map[0, 1, 0, 0] = 1.0
        >>> overlay = feature_heatmaps(feature_map, 1, torch.zeros(1, 1, 8, 8), alpha=1.0)
        >>> tuple(overlay.shape), overlay[0, :, 0, 0].tolist() > overlay[0, :, 7, 7].tolist()
        ((1, 3, 8, 8), True)
    """
    feature_map = _check_tensor("feature_map", feature_map, 4, "(N, D, h, w)")
    images = _check_tensor("images", images, 4, "(N, C, H, W)")
    index = _check_feature_index(feature_index, feature_map.shape[1])
    if feature_map.shape[0] != images.shape[0]:
        raise ValueError(
            f"Expected one feature map per image, but got {feature_map.shape[0]} feature maps and "
            f"{images.shape[0]} images."
        )
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected argument `alpha` to be a float in [0, 1], but got {alpha!r}.")
    base = _as_rgb(images, "images")
    height, width = images.shape[-2:]
    channel = feature_map.detach()[:, index : index + 1].float().to(images.device)
    heat = F.interpolate(channel, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    low = heat.amin(dim=(1, 2), keepdim=True)
    high = heat.amax(dim=(1, 2), keepdim=True)
    span = high - low
    # Bilinear upsampling of a constant channel leaves rounding ripples: a flat map stays flat.
    flat = span <= 1e-5 * torch.maximum(low.abs(), high.abs())
    heat = torch.where(flat, 0.0, (heat - low) / span.clamp_min(torch.finfo(heat.dtype).tiny))
    overlay = (1.0 - alpha) * base + alpha * _colour_map(heat)
    return overlay.clamp(0.0, 1.0)


def _features_of(extractor: Callable[[torch.Tensor], Any], images: torch.Tensor) -> torch.Tensor:
    features = extractor(images)
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        got = (
            f"shape {tuple(features.shape)}"
            if isinstance(features, torch.Tensor)
            else f"a {type(features).__name__}"
        )
        raise ValueError(
            f"Expected the extractor to return features of shape (N, D), but got {got}. HINT: pass a "
            "module whose forward returns the pooled features, e.g. a RobustExtractor."
        )
    return features


def feature_attack(
    extractor: nn.Module | Callable[[torch.Tensor], Any],
    images: torch.Tensor,
    feature_index: int,
    *,
    steps: int = 40,
    step_size: float = 0.5,
    epsilon: float = 8.0,
    norm: str = "l2",
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Change the images, within a norm ball, to make feature ``d`` of the extractor stronger.

    Projected gradient ascent on the sum of feature ``d`` over the batch: each step moves a sample by
    ``step_size`` along its normalised gradient (the gradient's sign for ``"linf"``), clamps it to
    ``clamp`` and projects the change back into the ball of radius ``epsilon``. What appears in the
    images is what the feature responds to; on a robust extractor it reads as an object part or a
    texture. The extractor is used as it is: call ``eval()`` first so that batch-norm statistics stay
    fixed.

    Args:
        extractor: Maps images to ``(N, D)`` features.
        images: ``(N, C, H, W)`` (or any ``(N, ...)`` the extractor takes), floating point.
        feature_index: The feature ``d`` in ``[0, D)``.
        steps: Gradient steps, at most :data:`MAX_ATTACK_STEPS`.
        step_size: Length of each step in the chosen norm.
        epsilon: Radius of the ball around each image.
        norm: ``"l2"`` (over all of a sample's values) or ``"linf"``.
        clamp: The valid value range of the images, or ``None``.

    Returns:
        The attacked images, detached, with the dtype and device of ``images``.

    Raises:
        ValueError: For ``steps`` outside ``[1, MAX_ATTACK_STEPS]``, a ``step_size`` or ``epsilon``
            that is not > 0, an unknown norm, a bad ``clamp``, an index out of range, or an extractor
            that does not return ``(N, D)`` features.
        TypeError: If ``images`` is not a tensor.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> extractor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                           nn.Flatten()).eval()
        >>> images = torch.rand(2, 3, 8, 8)
        >>> attacked = feature_attack(extractor, images, 1, steps=5, step_size=0.5, epsilon=2.0)
        >>> bool((extractor(attacked)[:, 1] > extractor(images)[:, 1]).all())
        True
    """
    check_positive_int("steps", steps)
    if steps > MAX_ATTACK_STEPS:
        raise ValueError(
            f"Expected argument `steps` to be at most {MAX_ATTACK_STEPS}, but got {steps}. HINT: a "
            "feature attack runs during validation; raise `step_size` instead of the step count."
        )
    step_size = check_positive_float("step_size", step_size)
    epsilon = check_positive_float("epsilon", epsilon)
    if norm not in NORMS:
        raise ValueError(f"Expected argument `norm` to be one of {NORMS}, but got {norm!r}.")
    bounds = check_clamp(clamp)
    check_images(images)
    with gradients_enabled():
        clean = images.detach().clone()
        delta = torch.zeros_like(clean)
        for step in range(steps):
            delta.requires_grad_(True)
            features = _features_of(extractor, clean + delta)
            if step == 0:
                _check_feature_index(feature_index, features.shape[1])
            (gradient,) = torch.autograd.grad(features[:, feature_index].sum(), delta)
            with torch.no_grad():
                delta = delta.detach() + step_size * unit_direction(gradient, norm=norm)
                delta = project_perturbation(clean, delta, epsilon=epsilon, norm=norm, clamp=bounds)
        # Made here, the result is a normal tensor even under inference mode: usable with autograd.
        return (clean + delta.detach()).to(images.dtype)


def _row_images(row: object, position: int) -> torch.Tensor | None:
    blocks = [row] if isinstance(row, torch.Tensor) else row
    if not isinstance(blocks, Sequence) or not all(
        isinstance(block, torch.Tensor) for block in blocks
    ):
        raise TypeError(
            f"Expected row {position} to be an image tensor (M, C, H, W) or a sequence of them, but "
            f"got {type(row).__name__}."
        )
    parts = [_as_rgb(block, f"rows[{position}]") for block in blocks if block.shape[0] > 0]
    if not parts:
        return None
    sizes = {tuple(part.shape[-2:]) for part in parts}
    if len(sizes) > 1:
        raise ValueError(
            f"Expected the images of row {position} to share one size, but got sizes {sorted(sizes)}."
        )
    return torch.cat([part.cpu() for part in parts])


def failure_mode_panel(
    rows: Sequence[torch.Tensor | Sequence[torch.Tensor]],
    *,
    cells: Sequence[str | Sequence[str | None] | None] | None = None,
    border: int = 1,
) -> torch.Tensor:
    """Tile rows of images into one picture, one row per feature (and one of failure samples).

    A row is an image tensor ``(M, C, p, p)`` or a sequence of them joined left to right, e.g.
    ``[top_images, heatmaps, attacked]`` for one feature on a path, then ``[failures]`` for the leaf.
    Each row goes through :func:`~lightning_insight.discovery.mosaic.attribution_mosaic`: every image
    is framed by ``border`` pixels in the colour of its cell (grey by default), rows shorter than the
    longest are padded with black on the right, and an empty row stays as a black strip so that the
    layout does not shift.

    Args:
        rows: The rows, top to bottom. Images are square, of one size across the panel, with 1 or 3
            channels and values in ``[0, 1]`` (clipped).
        cells: Per row, a cell name of :data:`~lightning_insight.discovery.mosaic.CELL_COLOURS` for
            every frame of the row (``"FN"`` frames a row of missed positives in red), one name per
            image, or ``None`` for grey.
        border: Frame width in pixels.

    Returns:
        Float32 RGB image ``(3, H, W)`` with values in ``[0, 1]``, ready for a sink's image logging.

    Raises:
        ValueError: For no rows, no image at all, images of another shape or of different sizes,
            ``cells`` of another length, an unknown cell name or ``border < 0``.
        TypeError: If a row is neither a tensor nor a sequence of tensors.

    Example:
        >>> top, heat = torch.ones(3, 3, 4, 4), torch.zeros(3, 1, 4, 4)
        >>> panel = failure_mode_panel([[top, heat], torch.ones(2, 3, 4, 4)], cells=[None, "FN"])
        >>> tuple(panel.shape), (panel[:, 6, 0] * 255).round().tolist()
        ((3, 12, 36), [214.0, 39.0, 40.0])
    """
    if isinstance(rows, torch.Tensor) or not isinstance(rows, Sequence) or not rows:
        raise ValueError(
            f"Expected argument `rows` to be a non-empty sequence of rows, but got "
            f"{type(rows).__name__ if not isinstance(rows, Sequence) or rows else 'an empty one'}. "
            "HINT: wrap a single row in a list."
        )
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise ValueError(
            f"Expected argument `border` to be a non-negative int, but got {border!r}."
        )
    if cells is not None and len(cells) != len(rows):
        raise ValueError(
            f"Expected one entry of `cells` per row ({len(rows)}), but got {len(cells)}."
        )
    images = [_row_images(row, position) for position, row in enumerate(rows)]
    present = [row for row in images if row is not None]
    if not present:
        raise ValueError("Expected at least one image in `rows`, but every row is empty.")
    sides = {tuple(row.shape[-2:]) for row in present}
    height, width = present[0].shape[-2:]
    if len(sides) > 1 or height != width:
        raise ValueError(
            f"Expected square images of one size across the panel, but got sizes {sorted(sides)}. "
            "HINT: resize the images (torch.nn.functional.interpolate) before tiling."
        )
    tile = height + 2 * border
    strips: list[np.ndarray[Any, np.dtype[np.uint8]]] = []
    for position, row in enumerate(images):
        if row is None:
            strips.append(np.zeros((tile, tile, 3), dtype=np.uint8))
            continue
        row_cells = None if cells is None else cells[position]
        if isinstance(row_cells, str):
            if row_cells not in CELL_COLOURS:
                raise ValueError(
                    f"Expected cells among {[c for c in CELL_COLOURS if c]} or None, but got "
                    f"{row_cells!r} for row {position}."
                )
            row_cells = [row_cells] * row.shape[0]
        strips.append(
            attribution_mosaic(row, row_cells, columns=max(1, row.shape[0]), border=border)
        )
    panel_width = max(strip.shape[1] for strip in strips)
    panel = np.zeros((tile * len(strips), panel_width, 3), dtype=np.uint8)
    for position, strip in enumerate(strips):
        panel[position * tile : (position + 1) * tile, : strip.shape[1]] = strip
    return torch.from_numpy(panel).permute(2, 0, 1).float().div(255.0)
