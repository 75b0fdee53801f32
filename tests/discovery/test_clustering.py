from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from sklearn.metrics import adjusted_rand_score, confusion_matrix

from lightning_insight.discovery import clustering
from lightning_insight.discovery.clustering import (
    cluster_features,
    default_num_slices,
    match_clusters,
)
from lightning_insight.discovery.functional import (
    confusion_counts,
    mislabel_scores,
    spurious_probability,
    wilson_lower_bound,
)
from lightning_insight.discovery.mosaic import CELL_COLOURS, attribution_mosaic


def blobs(
    per_blob: int = 40, centres: int = 4, dims: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(centres), per_blob)
    means = rng.normal(0, 20, size=(centres, dims))
    return means[truth] + rng.normal(0, 1, size=(truth.size, dims)), truth


def test_cluster_features_recovers_blobs_deterministically() -> None:
    data, truth = blobs()
    first = cluster_features(data, num_clusters=4, random_state=3)
    again = cluster_features(data, num_clusters=4, random_state=3)
    assert adjusted_rand_score(truth, first.labels) == 1.0
    assert np.array_equal(first.labels, again.labels)
    assert first.reduced.shape == (160, 6)  # 50 components capped at the 6 features
    assert first.centroids.shape == (4, 6)
    members = first.members(int(first.labels[0]))
    assert members.shape == (40,)
    assert np.all(np.diff(first.distances[members]) >= 0)  # most central first


def test_cluster_features_caps_and_minibatch(monkeypatch: pytest.MonkeyPatch) -> None:
    data, truth = blobs(per_blob=3, centres=2)
    small = cluster_features(torch.from_numpy(data), n_components=50)
    assert small.reduced.shape[1] == 5  # n - 1
    assert np.unique(small.labels).size == 6  # default k capped at N
    monkeypatch.setattr(clustering, "MINIBATCH_ABOVE", 10)
    data, truth = blobs()
    assert adjusted_rand_score(truth, cluster_features(data, num_clusters=4).labels) == 1.0


def test_cluster_features_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, D\) with N >= 2, but got shape \(5,\)"):
        cluster_features(np.zeros(5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        cluster_features(np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 1.0]]))


def test_default_num_slices() -> None:
    assert [default_num_slices(n) for n in (3, 100, 1000, 2000, 10_000)] == [3, 8, 20, 40, 64]


def test_match_clusters_follows_members() -> None:
    previous = {5: [0, 1, 2, 3], 8: [10, 11, 12, 13], 9: [20, 21]}
    new = [[10, 11, 12], [30, 31], [0, 1, 2, 3, 4], [20, 40, 41, 42, 43, 44]]
    # cluster 3 shares 1 of 7 ids with slice 9 (Jaccard 1/7 < 0.2): a new slice
    assert match_clusters(previous, new) == {0: 8, 2: 5}
    assert match_clusters(previous, new, min_jaccard=0.1) == {0: 8, 2: 5, 3: 9}
    assert match_clusters({}, new) == {}
    # one previous slice, two candidates: the larger overlap wins
    assert match_clusters({1: [0, 1, 2, 3]}, [[0], [1, 2, 3]]) == {1: 1}


@pytest.mark.parametrize(("errors", "total"), [(0, 10), (3, 10), (10, 10), (40, 100), (1, 1)])
def test_wilson_lower_bound_matches_scipy(errors: int, total: int) -> None:
    expected = binomtest(errors, total).proportion_ci(confidence_level=0.95, method="wilson").low
    assert wilson_lower_bound(errors, total) == pytest.approx(expected, abs=2e-4)
    assert np.isnan(wilson_lower_bound(0, 0))


def test_confusion_counts_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    targets, predictions = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    matrix = confusion_matrix(targets, predictions, labels=[0, 1, 2])
    counts = confusion_counts(targets, predictions, 3)
    assert counts == {f"true{t}_pred{p}": int(matrix[t, p]) for t in range(3) for p in range(3)}
    tn, fp, fn, tp = confusion_matrix(targets % 2, predictions % 2).ravel()
    assert confusion_counts(targets % 2, predictions % 2, 2) == {
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


def test_mislabel_scores_rank_flipped_labels_first() -> None:
    data, truth = blobs(per_blob=50, centres=2)
    given = truth.copy()
    flipped = np.array([3, 17, 60, 91])
    given[flipped] = 1 - given[flipped]
    # a model that learned the clean labels
    probabilities = np.where(truth[:, None] == np.arange(2), 0.9, 0.1)
    scores = mislabel_scores(data, given, probabilities)
    assert set(np.argsort(-scores)[:4]) == set(flipped)
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[flipped].min() > 0.85  # model 0.9, almost every neighbour disagrees


def test_spurious_probability_spreads_annotations() -> None:
    data, truth = blobs(per_blob=30, centres=2)
    annotated = np.full(60, -1)
    annotated[0] = 1  # one spurious sample in blob 0
    annotated[30] = 0  # one core sample in blob 1
    probability = spurious_probability(data, annotated)
    assert probability[truth == 0].min() > 0.9
    assert probability[truth == 1].max() < 0.1
    with pytest.raises(ValueError, match="1 spurious and 0 core"):
        spurious_probability(data, np.where(annotated == 0, -1, annotated))


def test_mosaic_shape_dtype_and_frames() -> None:
    patches = torch.full((5, 3, 4, 4), 0.5)
    cells = ["TP", "FP", "FN", "TN", None]
    image = attribution_mosaic(patches, cells, columns=3, border=2)
    assert image.shape == (2 * 8, 3 * 8, 3)
    assert image.dtype == np.uint8
    for index, cell in enumerate(cells):
        top, left = (index // 3) * 8, (index % 3) * 8
        assert tuple(image[top, left]) == CELL_COLOURS[cell]
        assert tuple(image[top + 7, left + 7]) == CELL_COLOURS[cell]
        assert np.all(image[top + 2 : top + 6, left + 2 : left + 6] == 128)  # 0.5 -> 128
    assert np.all(image[8:, 16:] == 0)  # the empty sixth tile
    assert attribution_mosaic(np.ones((2, 3, 4, 4)), columns=8).shape == (8, 16, 3)


def test_mosaic_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(M, 3, p, p\) with M >= 1, but got \(2, 1, 4, 4\)"):
        attribution_mosaic(np.ones((2, 1, 4, 4)))
    with pytest.raises(
        ValueError, match=r"cells among \['TP', 'TN', 'FP', 'FN'\] or None, but got \['XX'\]"
    ):
        attribution_mosaic(np.ones((1, 3, 4, 4)), ["XX"])
    with pytest.raises(ValueError, match="one cell per patch"):
        attribution_mosaic(np.ones((2, 3, 4, 4)), ["TP"])
    with pytest.raises(ValueError, match="`columns` to be a positive int"):
        attribution_mosaic(np.ones((2, 3, 4, 4)), columns=0)
    with pytest.raises(ValueError, match="`border` to be a non-negative int"):
        attribution_mosaic(np.ones((2, 3, 4, 4)), border=-1)
