from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lightning_insight.discovery.mosaic import CELL_COLOURS
from lightning_insight.failure_modes.robust import RobustExtractor
from lightning_insight.failure_modes.visualize import (
    MAX_ATTACK_STEPS,
    failure_mode_panel,
    feature_attack,
    feature_heatmaps,
    most_activating,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ most_activating


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_most_activating_matches_numpy_argsort(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values: many ties, which a stable sort keeps in sample order.
    values = rng.integers(0, 6, size=(40, 4)).astype(np.float32)
    features = torch.from_numpy(values)
    for index in range(4):
        expected = np.argsort(-values[:, index], kind="stable")[:k]
        result = most_activating(features, index, k=k)
        assert result.dtype == torch.int64
        assert result.tolist() == expected.tolist()


@pytest.mark.parametrize("form", ["indices", "tensor", "numpy", "mask"])
def test_most_activating_among_a_subset_returns_original_indices(form: str) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(30, 3))
    subset = np.sort(rng.choice(30, size=12, replace=False))
    mask = np.zeros(30, dtype=bool)
    mask[subset] = True
    among: Any = {
        "indices": subset.tolist(),
        "tensor": torch.from_numpy(subset),
        "numpy": subset,
        "mask": torch.from_numpy(mask),
    }[form]
    expected = subset[np.argsort(-values[subset, 2], kind="stable")][:5]
    result = most_activating(torch.from_numpy(values), 2, k=5, among=among)
    assert result.tolist() == expected.tolist()
    assert set(result.tolist()) <= set(subset.tolist())


def test_most_activating_with_few_or_no_candidates() -> None:
    features = torch.tensor([[1.0], [3.0], [2.0]])
    assert most_activating(features, 0, k=10).tolist() == [1, 2, 0]
    assert most_activating(features, 0, k=2, among=[]).tolist() == []
    assert most_activating(features, 0, k=2, among=torch.zeros(3, dtype=torch.bool)).tolist() == []
    # A NaN outside the competing samples does not matter.
    with_nan = torch.tensor([[float("nan")], [3.0], [2.0]])
    assert most_activating(with_nan, 0, k=2, among=[1, 2]).tolist() == [1, 2]


@pytest.mark.parametrize(
    ("features", "arguments", "error", "match"),
    [
        ([[1.0]], {}, TypeError, "`features` to be a torch.Tensor, but got list"),
        (torch.zeros(4), {}, ValueError, r"`features` of shape \(N, D\), but got shape \(4,\)"),
        (torch.zeros(4, 2), {"feature_index": 2}, ValueError, r"`feature_index` to be an int in \[0, 1\], but got 2. HINT"),
        (torch.zeros(4, 2), {"feature_index": -1}, ValueError, "`feature_index` to be an int in"),
        (torch.zeros(4, 2), {"feature_index": True}, ValueError, "`feature_index` to be an int in"),
        (torch.zeros(4, 2), {"k": 0}, ValueError, "`k` to be an int >= 1, but got 0"),
        (torch.zeros(4, 2), {"among": "abc"}, TypeError, "`among` to be None, a boolean mask or a sequence of indices, but got str"),
        (torch.zeros(4, 2), {"among": 3}, TypeError, "`among` to be None, a boolean mask"),
        (torch.zeros(4, 2), {"among": [[0, 1]]}, ValueError, r"`among` to be one-dimensional, but got shape \(1, 2\)"),
        (torch.zeros(4, 2), {"among": torch.ones(3, dtype=torch.bool)}, ValueError, r"one entry per sample \(4\), but got 3"),
        (torch.zeros(4, 2), {"among": [0, 4]}, ValueError, r"in `among` to lie in \[0, 3\], but got values from 0 to 4"),
        (torch.zeros(4, 2), {"among": [0.5]}, TypeError, "integer indices or booleans, but got torch.float64"),
        (torch.tensor([[0.0], [float("nan")]]), {"feature_index": 0}, ValueError, r"finite values of feature 0, but got NaN for samples \[1\]. HINT"),
    ],
)  # fmt: skip
def test_most_activating_rejects_bad_arguments(
    features: Any, arguments: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        most_activating(features, **{"feature_index": 1, "k": 2, **arguments})


# ------------------------------------------------------------------ feature_heatmaps


def brightness(overlay: torch.Tensor) -> torch.Tensor:
    return overlay.sum(dim=1)


@pytest.mark.parametrize(("row", "column"), [(0, 0), (1, 3), (3, 2), (2, 0)])
def test_heatmap_hot_spot_follows_a_planted_activation(row: int, column: int) -> None:
    feature_map = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.1
    feature_map[:, 1, row, column] = 5.0
    images = torch.zeros(2, 3, 32, 32)
    overlay = feature_heatmaps(feature_map, 1, images, alpha=1.0)
    assert overlay.shape == (2, 3, 32, 32) and overlay.dtype == torch.float32
    for sample in range(2):
        hottest = int(brightness(overlay)[sample].argmax())
        y, x = divmod(hottest, 32)
        # Each feature cell covers an 8x8 block of the image.
        assert (y // 8, x // 8) == (row, column)
    # The other channels' planted noise plays no part: a different channel gives another map.
    other = feature_heatmaps(feature_map, 0, images, alpha=1.0)
    assert not torch.equal(other, overlay)


def test_heatmap_blend_range_and_grayscale() -> None:
    generator = torch.Generator().manual_seed(2)
    feature_map = torch.randn(3, 2, 5, 5, generator=generator) * 10
    images = torch.rand(3, 1, 20, 20, generator=generator)
    overlay = feature_heatmaps(feature_map, 0, images)
    assert overlay.shape == (3, 3, 20, 20)
    assert overlay.min() >= 0.0 and overlay.max() <= 1.0
    untouched = feature_heatmaps(feature_map, 0, images, alpha=0.0)
    torch.testing.assert_close(untouched, images.expand(-1, 3, -1, -1))
    alone = feature_heatmaps(feature_map, 0, images, alpha=1.0)
    torch.testing.assert_close(overlay, 0.5 * untouched + 0.5 * alone)
    # Per-image normalisation: every image spans the colour map from coldest to hottest.
    for sample in range(3):
        assert brightness(alone)[sample].min() < 0.1 and brightness(alone)[sample].max() > 2.5


def test_heatmap_of_a_constant_channel_is_cold_everywhere() -> None:
    overlay = feature_heatmaps(torch.full((1, 1, 2, 2), 7.0), 0, torch.zeros(1, 3, 6, 6), alpha=1.0)
    assert torch.isfinite(overlay).all()
    assert torch.equal(overlay, overlay[:, :, :1, :1].expand_as(overlay))
    assert brightness(overlay).max() < 0.05


def test_heatmap_of_no_images_is_empty() -> None:
    overlay = feature_heatmaps(torch.zeros(0, 2, 4, 4), 1, torch.zeros(0, 3, 8, 8))
    assert overlay.shape == (0, 3, 8, 8)


@pytest.mark.parametrize(
    ("feature_map", "images", "arguments", "error", "match"),
    [
        ("map", torch.zeros(1, 3, 8, 8), {}, TypeError, "`feature_map` to be a torch.Tensor, but got str"),
        (torch.zeros(1, 2, 4), torch.zeros(1, 3, 8, 8), {}, ValueError, r"`feature_map` of shape \(N, D, h, w\)"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(3, 8, 8), {}, ValueError, r"`images` of shape \(N, C, H, W\)"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 8, 8), {}, ValueError, r"images \(N, 1, H, W\) or \(N, 3, H, W\)"),
        (torch.zeros(2, 2, 4, 4), torch.zeros(1, 3, 8, 8), {}, ValueError, "one feature map per image, but got 2 feature maps and 1 images"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 8, 8), {"feature_index": 2}, ValueError, r"int in \[0, 1\], but got 2"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 8, 8), {"alpha": 1.5}, ValueError, r"`alpha` to be a float in \[0, 1\], but got 1.5"),
    ],
)  # fmt: skip
def test_heatmaps_reject_bad_arguments(
    feature_map: Any, images: Any, arguments: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        feature_heatmaps(feature_map, arguments.pop("feature_index", 0), images, **arguments)


# ------------------------------------------------------------------ feature_attack


@pytest.fixture(scope="module")
def extractor() -> RobustExtractor:
    torch.manual_seed(0)
    return RobustExtractor(num_classes=2, widths=(8, 16)).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 0.8 + 0.1


@pytest.mark.parametrize(("norm", "epsilon", "step_size"), [("l2", 2.0, 0.5), ("linf", 0.05, 0.01)])
def test_feature_attack_raises_the_feature_inside_the_ball(
    extractor: RobustExtractor, images: torch.Tensor, norm: str, epsilon: float, step_size: float
) -> None:
    for index in (0, 5, 15):
        attacked = feature_attack(
            extractor, images, index, steps=10, step_size=step_size, epsilon=epsilon, norm=norm
        )
        with torch.no_grad():
            before, after = extractor(images)[:, index], extractor(attacked)[:, index]
        assert (after > before).all(), (index, before, after)
        delta = (attacked - images).flatten(1)
        size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
        assert (size <= epsilon + 1e-5).all()
        assert attacked.min() >= 0.0 and attacked.max() <= 1.0
    assert all(parameter.grad is None for parameter in extractor.parameters())


def test_feature_attack_more_steps_go_further(
    extractor: RobustExtractor, images: torch.Tensor
) -> None:
    def strength(steps: int) -> float:
        attacked = feature_attack(extractor, images, 3, steps=steps, step_size=0.3, epsilon=4.0)
        with torch.no_grad():
            return float(extractor(attacked)[:, 3].mean())

    with torch.no_grad():
        clean = float(extractor(images)[:, 3].mean())
    assert clean < strength(2) < strength(12)


def test_feature_attack_under_inference_mode(extractor: RobustExtractor) -> None:
    with torch.inference_mode():
        images = torch.rand(3, 3, 16, 16)
        attacked = feature_attack(extractor, images, 2, steps=3, step_size=0.5, epsilon=1.0)
    assert not attacked.is_inference()
    with torch.no_grad():
        assert (extractor(attacked)[:, 2] > extractor(images.clone())[:, 2]).all()


class MapOutput(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"steps": MAX_ATTACK_STEPS + 1}, rf"`steps` to be at most {MAX_ATTACK_STEPS}, but got {MAX_ATTACK_STEPS + 1}. HINT"),
        ({"steps": 0}, "`steps` to be an int >= 1"),
        ({"step_size": 0.0}, "`step_size` to be a finite float > 0"),
        ({"epsilon": float("nan")}, "`epsilon` to be a finite float > 0"),
        ({"norm": "l1"}, r"`norm` to be one of \('l2', 'linf'\), but got 'l1'"),
        ({"clamp": (1.0, 0.0)}, r"`clamp` to be None or a pair .* HINT: use \(0.0, 1.0\)"),
        ({"clamp": (0.0, float("inf"))}, "`clamp` to be None or a pair"),
        ({"feature_index": 16}, r"`feature_index` to be an int in \[0, 15\], but got 16"),
        ({"extractor": MapOutput()}, r"features of shape \(N, D\), but got shape \(2, 3, 16, 16\). HINT"),
        ({"images": torch.zeros(2, 3, 16, 16, dtype=torch.long)}, "floating-point tensor"),
    ],
)  # fmt: skip
def test_feature_attack_rejects_bad_arguments(
    extractor: RobustExtractor, arguments: dict[str, Any], match: str
) -> None:
    call: dict[str, Any] = {
        "extractor": extractor,
        "images": torch.rand(2, 3, 16, 16),
        "feature_index": 0,
        "steps": 2,
        **arguments,
    }
    with pytest.raises(ValueError, match=match):
        feature_attack(**call)


def test_feature_attack_rejects_a_non_tensor(extractor: RobustExtractor) -> None:
    with pytest.raises(TypeError, match=r"`images` to be a torch\.Tensor, but got list"):
        feature_attack(extractor, [0.0], 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------ failure_mode_panel


def test_panel_tiles_rows_and_pads_short_ones() -> None:
    top = torch.full((3, 3, 4, 4), 1.0)
    heat = torch.full((3, 1, 4, 4), 0.5)
    failures = torch.zeros(2, 3, 4, 4)
    panel = failure_mode_panel([[top, heat], [failures]], cells=[None, "FN"], border=1)
    tile = 4 + 2
    assert panel.shape == (3, 2 * tile, 6 * tile) and panel.dtype == torch.float32
    assert panel.min() >= 0.0 and panel.max() <= 1.0
    pixels = (panel * 255).round().to(torch.uint8).permute(1, 2, 0)
    grey, red = list(CELL_COLOURS[None]), list(CELL_COLOURS["FN"])
    # Row 0: frames grey, three white tiles, then three mid-grey heatmap tiles (grayscale expanded).
    assert pixels[0, 0].tolist() == grey
    assert pixels[1, 1].tolist() == [255, 255, 255]
    assert pixels[1, 3 * tile + 1].tolist() == [128, 128, 128]
    # Row 1: red frames around black failures, then black padding.
    assert pixels[tile, 0].tolist() == red
    assert pixels[tile + 1, 1].tolist() == [0, 0, 0]
    assert pixels[tile:, 2 * tile :].max() == 0


def test_panel_per_image_cells_and_empty_rows() -> None:
    images = torch.rand(2, 3, 5, 5)
    panel = failure_mode_panel(
        [images, torch.zeros(0, 3, 5, 5), images], cells=[["TP", "FP"], None, None]
    )
    tile = 5 + 2
    assert panel.shape == (3, 3 * tile, 2 * tile)
    pixels = (panel * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert pixels[0, 0].tolist() == list(CELL_COLOURS["TP"])
    assert pixels[0, tile].tolist() == list(CELL_COLOURS["FP"])
    # The empty row stays as a black strip so rows keep their places.
    assert pixels[tile : 2 * tile].max() == 0
    assert pixels[2 * tile, 0].tolist() == list(CELL_COLOURS[None])
    # Image content survives (to 8-bit precision).
    torch.testing.assert_close(panel[:, 1:6, 1:6], images[0], atol=1 / 255, rtol=0)


@pytest.mark.parametrize(
    ("rows", "arguments", "error", "match"),
    [
        ([], {}, ValueError, "non-empty sequence of rows, but got an empty one. HINT"),
        (torch.zeros(2, 3, 4, 4), {}, ValueError, "non-empty sequence of rows, but got Tensor"),
        ([torch.zeros(0, 3, 4, 4)], {}, ValueError, "at least one image in `rows`, but every row is empty"),
        (["abc"], {}, TypeError, "row 0 to be an image tensor"),
        ([torch.zeros(1, 3, 4, 6)], {}, ValueError, r"square images of one size across the panel, but got sizes \[\(4, 6\)\]. HINT"),
        ([torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 5, 5)], {}, ValueError, r"square images of one size .* \[\(4, 4\), \(5, 5\)\]"),
        ([[torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 5, 5)]], {}, ValueError, "row 0 to share one size"),
        ([torch.zeros(1, 2, 4, 4)], {}, ValueError, r"`rows\[0\]` to hold images \(N, 1, H, W\) or \(N, 3, H, W\)"),
        ([torch.zeros(1, 3, 4, 4)], {"cells": [None, None]}, ValueError, r"one entry of `cells` per row \(1\), but got 2"),
        ([torch.zeros(1, 3, 4, 4)], {"cells": ["XX"]}, ValueError, "cells among .* but got 'XX' for row 0"),
        ([torch.zeros(2, 3, 4, 4)], {"cells": [["TP"]]}, ValueError, r"one cell per patch \(2\), but got 1 cells"),
        ([torch.zeros(1, 3, 4, 4)], {"border": -1}, ValueError, "`border` to be a non-negative int, but got -1"),
    ],
)  # fmt: skip
def test_panel_rejects_bad_arguments(
    rows: Any, arguments: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        failure_mode_panel(rows, **arguments)


def test_panel_of_a_full_explanation(extractor: RobustExtractor) -> None:
    """The pieces together, as the miner will use them: top images of a feature, their heatmaps,
    attack images and a row of failures."""
    images = torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        features, feature_map = extractor(images), extractor.feature_map(images)
    failures = torch.arange(20) % 3 == 0
    top = most_activating(features, 4, k=4, among=~failures)
    heatmaps = feature_heatmaps(feature_map[top], 4, images[top])
    attacked = feature_attack(extractor, images[top], 4, steps=3)
    panel = failure_mode_panel(
        [[images[top], heatmaps, attacked], images[failures][:4]], cells=[None, "FN"]
    )
    assert panel.shape == (3, 2 * 18, 12 * 18)
