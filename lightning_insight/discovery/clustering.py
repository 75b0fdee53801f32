"""Clustering of attribution-weighted features into slices, and slice ids stable across epochs.

The pipeline is standardise (``StandardScaler``) -> PCA (``n_components``, capped by the number of
samples and features) -> k-means (``KMeans``, or ``MiniBatchKMeans`` past :data:`MINIBATCH_ABOVE`
samples). scikit-learn's BLAS/OpenMP pools run single-threaded inside these calls
(``threadpoolctl``): on a loaded 2-core machine more threads made clustering 10-40x slower.

Slice ids are matched by *member overlap*: the probe set of :class:`~lightning_insight.discovery.SliceFinder`
is a fixed set of sample ids, so the same samples are clustered every epoch, and a new cluster takes the
id of the previous slice it shares the most samples with (Hungarian assignment on the Jaccard index).
Centroids could not be matched: each compute fits its own PCA to features of a model that has changed,
so two epochs' centroids live in different spaces.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from threadpoolctl import threadpool_limits

__all__ = [
    "MINIBATCH_ABOVE",
    "Clustering",
    "cluster_features",
    "default_num_slices",
    "match_clusters",
]

#: Above this many samples k-means runs as ``MiniBatchKMeans`` (full k-means grows too slow).
MINIBATCH_ABOVE = 20_000

FloatArray = np.ndarray[Any, np.dtype[np.floating[Any]]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


def default_num_slices(num_samples: int) -> int:
    """``clip(round(N / 50), 8, 64)``, and never more than ``N``: slices of about 50 samples.

    Slices of ~50 rather than ~100 (``N / 100``) samples: on the synthetic scenes the coarser
    clustering merged the errors the spurious cue causes into larger, mixed clusters, and the
    attribution-weighted features lost their edge over plain average pooling; at ~50 the worst
    slices were made of those errors for every seed tried.

    Example:
        >>> default_num_slices(2000), default_num_slices(300), default_num_slices(5)
        (40, 8, 5)
    """
    return int(min(num_samples, np.clip(round(num_samples / 50), 8, 64)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Clustering:
    """A clustering of N samples.

    Attributes:
        reduced: The standardised, PCA-reduced features ``(N, d)``.
        labels: Cluster index per sample ``(N,)``, in ``[0, k)``.
        centroids: ``(k, d)`` in the reduced space.
        distances: Euclidean distance of each sample to its centroid ``(N,)``.
    """

    reduced: FloatArray
    labels: IntArray
    centroids: FloatArray
    distances: FloatArray

    def members(self, cluster: int) -> IntArray:
        """Row indices of the cluster's samples, most central first (ties by row)."""
        rows = np.flatnonzero(self.labels == cluster)
        return rows[np.argsort(self.distances[rows], kind="stable")]


def cluster_features(
    features: np.ndarray[Any, Any] | Any,
    *,
    num_clusters: int | None = None,
    n_components: int = 50,
    random_state: int = 0,
) -> Clustering:
    """Standardise, reduce with PCA and cluster with k-means.

    Args:
        features: ``(N, D)`` array (or tensor) of features.
        num_clusters: ``k``; ``None`` for :func:`default_num_slices`. Capped at ``N``.
        n_components: PCA dimensions, capped at ``min(N - 1, D)``.
        random_state: Seed of PCA and k-means: the same data and seed give the same clusters.

    Raises:
        ValueError: If ``features`` is not 2-D, has fewer than 2 rows, or holds non-finite values.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> data = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(10, 1, (20, 3))])
        >>> result = cluster_features(data, num_clusters=2)
        >>> sorted(np.bincount(result.labels).tolist())
        [20, 20]
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    data = np.asarray(features, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(
            f"Expected `features` of shape (N, D) with N >= 2, but got shape {data.shape}."
        )
    if not np.isfinite(data).all():
        raise ValueError(
            "Expected finite features, but got NaN or infinite values. HINT: check the model's "
            "activations at this layer (e.g. a diverged model)."
        )
    n = data.shape[0]
    k = default_num_slices(n) if num_clusters is None else min(int(num_clusters), n)
    components = max(1, min(int(n_components), n - 1, data.shape[1]))
    with threadpool_limits(limits=1):
        scaled = StandardScaler().fit_transform(data)
        reduced = PCA(n_components=components, random_state=random_state).fit_transform(scaled)
        if n > MINIBATCH_ABOVE:
            model: Any = MiniBatchKMeans(
                n_clusters=k, n_init="auto", random_state=random_state, batch_size=4096
            )
        else:
            model = KMeans(n_clusters=k, n_init="auto", random_state=random_state)
        labels = model.fit_predict(reduced).astype(np.int64)
    centroids = np.asarray(model.cluster_centers_, dtype=np.float64)
    distances = np.linalg.norm(reduced - centroids[labels], axis=1)
    return Clustering(reduced=reduced, labels=labels, centroids=centroids, distances=distances)


def match_clusters(
    previous: Mapping[int, Collection[int]],
    new: Sequence[Collection[int]],
    *,
    min_jaccard: float = 0.2,
) -> dict[int, int]:
    """Which previous slice each new cluster continues, by shared sample ids.

    The Jaccard index ``|A & B| / |A | B|`` of every (previous, new) pair of member sets is maximised
    with one Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`); a pair below
    ``min_jaccard`` is not a match, so its new cluster gets a fresh id from the caller.

    Args:
        previous: Previous slice id -> its member sample ids.
        new: The new clusters' member sample ids, by cluster index.
        min_jaccard: Smallest overlap that still counts as the same slice.

    Returns:
        New cluster index -> previous slice id, for the matched clusters only.

    Example:
        >>> match_clusters({7: [1, 2, 3], 9: [4, 5, 6]}, [[4, 5], [1, 2, 3], [10, 11]])
        {0: 9, 1: 7}
    """
    if not previous or not new:
        return {}
    old_ids = list(previous)
    old_sets = [set(previous[i]) for i in old_ids]
    new_sets = [set(members) for members in new]
    jaccard = np.zeros((len(new_sets), len(old_sets)))
    for row, members in enumerate(new_sets):
        for column, before in enumerate(old_sets):
            union = len(members | before)
            jaccard[row, column] = len(members & before) / union if union else 0.0
    rows, columns = linear_sum_assignment(jaccard, maximize=True)
    return {
        int(row): int(old_ids[column])
        for row, column in zip(rows, columns, strict=True)
        if jaccard[row, column] >= min_jaccard
    }
