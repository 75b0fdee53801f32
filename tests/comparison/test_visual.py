"""Pictures of a comparison, checked on hand-made evidence whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_insight.comparison.results import AttributionComparisonReport, ComparisonCluster
from lightning_insight.comparison.visual import (
    MAP_SIDE,
    ComparisonEvidence,
    cluster_drill_down,
    cluster_exemplars,
    comparison_images,
    small_maps,
)
from lightning_insight.discovery.mosaic import CELL_COLOURS

BLUE, ORANGE = CELL_COLOURS["TN"], CELL_COLOURS["FP"]


def _report() -> AttributionComparisonReport:
    cluster = ComparisonCluster(
        cluster_id=0,
        regions=2,
        images=2,
        attribution_a=0.5,
        attribution_b=0.5,
        difference=0.0,
        lower=-0.1,
        upper=0.1,
        effect_size=0.0,
        accuracy_a=1.0,
        accuracy_b=1.0,
        exemplars=((5, (0, 0, 4, 4)), (7, (4, 4, 8, 8))),
    )
    return AttributionComparisonReport(
        layer_a="a",
        layer_b="b",
        method="gradcam",
        target="label",
        grid=2,
        top_regions=1,
        input_size=(8, 8),
        num_samples=2,
        num_regions=2,
        accuracy_a=1.0,
        accuracy_b=1.0,
        random_state=0,
        bootstrap=10,
        clusters=(cluster,),
    )


def _evidence() -> ComparisonEvidence:
    # image 5: A looks at the top-left cell, B at the bottom-right; image 7 the other way round
    maps_a = torch.zeros(2, 2, 2)
    maps_b = torch.zeros(2, 2, 2)
    maps_a[0, 0, 0], maps_b[0, 1, 1] = 1.0, 1.0
    maps_a[1, 1, 1], maps_b[1, 0, 0] = 1.0, 1.0
    masses_a = np.array([[1.0, 0, 0, 0], [0, 0, 0, 0.25]])
    masses_b = np.array([[0.25, 0, 0, 0.75], [0.75, 0, 0, 0.5]])
    return ComparisonEvidence(
        inputs=torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
        sample_ids=np.array([5, 7]),
        maps_a=maps_a,
        maps_b=maps_b,
        masses_a=masses_a,
        masses_b=masses_b,
    )


def _count(region: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(region == np.array(colour, dtype=np.uint8), axis=-1).sum())


def test_exemplar_bars_follow_each_model_share_of_the_region() -> None:
    report, evidence = _report(), _evidence()
    image = cluster_exemplars(report, evidence, report.clusters[0], side=48)
    assert image.shape == (50, 100, 3) and image.dtype == np.uint8
    strip = slice(50 - 1 - 12, 50 - 1)  # the bar strip: the bottom quarter inside the frame
    first, second = image[strip, 1:49], image[strip, 51:99]
    # region (5, top-left): A 1.0, B 0.25; region (7, bottom-right): A 0.25, B 0.5
    assert _count(first, BLUE) == 4 * _count(first, ORANGE) > 0
    assert _count(second, ORANGE) == 2 * _count(second, BLUE) > 0


def test_drill_down_rows_show_region_maps_and_the_signed_difference() -> None:
    report, evidence = _report(), _evidence()
    image = cluster_drill_down(report, evidence, report.clusters[0], side=64)
    assert image.shape == (2 * 66, 4 * 66, 3)
    first_row = image[1:65]
    outline = first_row[0, 1 : 1 + 32]
    assert np.all(outline == np.array([255, 217, 0], dtype=np.uint8))  # the top-left box outlined
    heat_a, heat_b, difference = (first_row[:, 1 + 66 * i : 65 + 66 * i] for i in (1, 2, 3))
    # A's heat is red at the top-left, white at the bottom-right; B's the other way round
    assert heat_a[4, 4, 1] < 100 and heat_a[60, 60].tolist() == [255, 255, 255]
    assert heat_b[60, 60, 1] < 100 and heat_b[4, 4].tolist() == [255, 255, 255]
    # B - A: blue where only A looks, orange where only B looks
    assert difference[4, 4].tolist() == list(BLUE)
    assert difference[60, 60].tolist() == list(ORANGE)


def test_comparison_images_names_and_count() -> None:
    report, evidence = _report(), _evidence()
    images = comparison_images(report, evidence, clusters=5, exemplars=1, drill_down=1)
    assert sorted(images) == ["cluster_0/drill_down", "cluster_0/exemplars"]
    assert images["cluster_0/exemplars"].shape[:2] == (50, 50)
    assert images["cluster_0/drill_down"].shape[:2] == (66, 4 * 66)


def test_small_maps_rectify_and_pool_large_maps() -> None:
    maps = -torch.ones(2, 100, 100)
    maps[:, :50, :50] = 4.0
    small = small_maps(maps)
    assert small.shape == (2, MAP_SIDE, MAP_SIDE)
    assert float(small.min()) == 0.0 and float(small[0, 0, 0]) == 4.0
    assert torch.allclose(
        small.sum(dim=(1, 2)) * (100 / MAP_SIDE) ** 2, maps.clamp_min(0).sum(dim=(1, 2))
    )


def test_a_sample_outside_the_probe_set_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="sample id 9 is not in the probe set"):
        _evidence().row(9)
