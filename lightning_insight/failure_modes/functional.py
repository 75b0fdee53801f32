"""The math of Barlow-style failure modes: feature selection, the failure tree and its error statistics.

Numpy and scikit-learn only (no Lightning). For one group of samples (e.g. all samples predicted as one
class) with features ``X`` of shape ``(N, D)`` and a failure indicator ``y`` (prediction != label):

1. :func:`select_features` ranks the ``D`` features by their mutual information with ``y`` and keeps
   the top ``num_features`` (on a seeded, stratified subsample of a large group).
2. :func:`fit_failure_tree` fits a shallow entropy tree that separates failures from successes, with
   balanced class weights so that rare failures still drive the splits.
3. Each leaf is a candidate failure mode. With ``n_l`` samples and ``e_l`` failures in leaf ``l`` and
   ``E`` failures in the group: error rate ``ER_l = e_l / n_l``, error coverage ``EC_l = e_l / E``,
   importance ``IV_l = ER_l * EC_l``; base error rate ``BER = E / N`` and average leaf error rate
   ``ALER = sum_l EC_l * ER_l``. The leaves partition the group, so ``BER <= ALER <= 1``
   (Cauchy-Schwarz), with equality on the left only when every leaf has the same error rate.

Every count here is a raw sample count: the tree's own ``tree_.value`` holds class-weighted fractions,
which are not error rates. Leaf membership comes from ``tree.apply``.

Decision paths are given in the ORIGINAL feature indices (column numbers of ``X`` before selection),
as ``(feature_index, threshold, direction)`` conditions with direction ``"<="`` (left child) or
``">"`` (right child), root first. scikit-learn's trees compare ``float32`` copies of the features with
``float64`` thresholds, so a value within float32 rounding of a threshold is placed as its float32
copy says.

For detection models, :func:`detection_misses` gives the failure indicator: an image with a missed
object fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_selection import mutual_info_classif
from sklearn.tree import DecisionTreeClassifier

from lightning_insight.failure_modes.results import Condition

__all__ = [
    "MUTUAL_INFORMATION_METHODS",
    "Condition",
    "LeafErrors",
    "average_leaf_error_rate",
    "base_error_rate",
    "decision_paths",
    "detection_misses",
    "fit_failure_tree",
    "leaf_errors",
    "mutual_information",
    "node_error_counts",
    "select_features",
    "stratified_subsample",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

#: ``"knn"``: scikit-learn's ``mutual_info_classif`` (k-nearest-neighbour estimator, as Barlow);
#: ``"binned"``: a histogram estimator over 16 quantile bins, vectorised over features.
MUTUAL_INFORMATION_METHODS: tuple[str, ...] = ("knn", "binned")

_LEAF = -1  # scikit-learn's marker for "no child" / "no feature" in ``tree_``.


def _failure_vector(failures: Any, count: int) -> BoolArray:
    values = np.asarray(failures).reshape(-1)
    if values.shape[0] != count:
        raise ValueError(
            f"Expected argument `failures` to hold one value per sample ({count}), but got {values.shape[0]}."
        )
    return values.astype(bool)


def stratified_subsample(
    failures: Any, max_samples: int | None, *, random_state: int = 0
) -> IntArray:
    """Row indices of a seeded subsample of at most ``max_samples`` rows that keeps the failure rate.

    Failures and successes are drawn separately in proportion to their counts (each class keeps at
    least one row when it has one), so a rare failure class is not lost. All rows (``0..N-1``) come
    back when ``max_samples`` is ``None`` or at least ``N``. Indices are sorted.

    Example:
        >>> rows = stratified_subsample(np.arange(1000) < 100, 50, random_state=0)
        >>> len(rows), int((rows < 100).sum())
        (50, 5)
    """
    flags = np.asarray(failures).reshape(-1).astype(bool)
    count = flags.shape[0]
    if max_samples is None or max_samples >= count:
        return np.arange(count, dtype=np.int64)
    rng = np.random.default_rng(random_state)
    failed = np.flatnonzero(flags)
    passed = np.flatnonzero(~flags)
    take_failed = round(max_samples * failed.size / count)
    take_failed = min(max(take_failed, int(failed.size > 0)), failed.size, max_samples)
    take_passed = min(max_samples - take_failed, passed.size)
    chosen = np.concatenate(
        [
            rng.choice(failed, size=take_failed, replace=False),
            rng.choice(passed, size=take_passed, replace=False),
        ]
    )
    return np.sort(chosen).astype(np.int64)


def _binned_mutual_information(
    features: FloatArray, failures: BoolArray, num_bins: int
) -> FloatArray:
    count, width = features.shape
    quantiles = np.linspace(0.0, 1.0, num_bins + 1)[1:-1]
    edges = np.quantile(features, quantiles, axis=0)
    # Comparing with each inner edge keeps tied values (e.g. ReLU zeros) in one bin.
    bins = np.zeros(features.shape, dtype=np.int64)
    for edge in edges:
        bins += features > edge
    cell = bins + num_bins * failures.astype(np.int64)[:, None]
    cell += (2 * num_bins) * np.arange(width, dtype=np.int64)[None, :]
    joint = np.bincount(cell.ravel(), minlength=2 * num_bins * width).reshape(width, 2, num_bins)
    joint = joint.astype(np.float64) / count
    marginal_bins = joint.sum(axis=1, keepdims=True)
    marginal_failures = joint.sum(axis=2, keepdims=True)
    expected = marginal_bins * marginal_failures
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / expected), 0.0)
    return np.asarray(np.maximum(terms.sum(axis=(1, 2)), 0.0), dtype=np.float64)


def mutual_information(
    features: FloatArray,
    failures: Any,
    *,
    method: str = "knn",
    random_state: int = 0,
    max_samples: int | None = None,
    num_bins: int = 16,
) -> FloatArray:
    """Mutual information (nats) between each feature column and the failure indicator.

    Args:
        features: ``(N, D)`` finite features.
        failures: ``(N,)`` failure indicator (truthy = the model failed on the sample).
        method: ``"knn"`` (scikit-learn's ``mutual_info_classif``, seeded; about 6-11 ms per feature
            on a few thousand rows) or ``"binned"`` (``num_bins`` quantile bins per feature, one
            vectorised pass; about 1 s for 5000 x 2048).
        random_state: Seed of the subsample and of ``mutual_info_classif``'s jitter.
        max_samples: Estimate on a stratified subsample of at most this many rows
            (:func:`stratified_subsample`); ``None`` for all rows.
        num_bins: Bins per feature of the ``"binned"`` estimator.

    Returns:
        ``(D,)`` non-negative float64 scores; all zeros when ``failures`` holds one class only.

    Raises:
        ValueError: For an unknown ``method``, a ``failures`` of another length than ``features``.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(400, 3))
        >>> scores = mutual_information(x, x[:, 1] > 0.5, method="binned")
        >>> int(scores.argmax())
        1
    """
    if method not in MUTUAL_INFORMATION_METHODS:
        raise ValueError(
            f"Expected argument `method` to be one of {MUTUAL_INFORMATION_METHODS}, but got {method!r}."
        )
    data = np.asarray(features, dtype=np.float64)
    flags = _failure_vector(failures, data.shape[0])
    if flags.all() or not flags.any():
        return np.zeros(data.shape[1], dtype=np.float64)
    rows = stratified_subsample(flags, max_samples, random_state=random_state)
    data, flags = data[rows], flags[rows]
    if method == "binned":
        return _binned_mutual_information(data, flags, num_bins)
    scores = mutual_info_classif(
        data, flags.astype(np.int64), discrete_features=False, random_state=random_state
    )
    return np.asarray(scores, dtype=np.float64)


def select_features(
    features: FloatArray,
    failures: Any,
    *,
    num_features: int,
    method: str = "knn",
    random_state: int = 0,
    max_samples_per_group: int | None = None,
) -> IntArray:
    """Column indices of the ``num_features`` features most informative about failure, best first.

    Ties keep the lower index first. When ``num_features >= D`` every column is kept in index order and
    no mutual information is computed.

    Args:
        features: ``(N, D)`` finite features of one group.
        failures: ``(N,)`` failure indicator.
        num_features: How many columns to keep.
        method: See :func:`mutual_information`.
        random_state: Seed of the subsample and of the estimator.
        max_samples_per_group: Estimate on a stratified subsample of at most this many rows.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(400, 5))
        >>> select_features(x, x[:, 3] > 0.5, num_features=2, method="binned")[0]
        np.int64(3)
    """
    data = np.asarray(features, dtype=np.float64)
    width = data.shape[1]
    if num_features >= width:
        return np.arange(width, dtype=np.int64)
    scores = mutual_information(
        data, failures, method=method, random_state=random_state, max_samples=max_samples_per_group
    )
    order = np.lexsort((np.arange(width), -scores))
    return np.asarray(order[:num_features], dtype=np.int64)


def fit_failure_tree(
    features: FloatArray,
    failures: Any,
    *,
    max_depth: int = 3,
    min_samples_leaf: int | float = 1,
    random_state: int = 0,
) -> DecisionTreeClassifier:
    """A shallow tree separating failures (class 1) from successes (class 0).

    ``criterion="entropy"`` and ``class_weight="balanced"``, as Barlow: without the weights a rare
    failure class barely moves the impurity and the tree stays a stump.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(300, 2))
        >>> tree = fit_failure_tree(x, x[:, 0] > 1.0, max_depth=1)
        >>> int(tree.tree_.feature[0]), round(float(tree.tree_.threshold[0]), 1)
        (0, 1.0)
    """
    data = np.asarray(features, dtype=np.float64)
    flags = _failure_vector(failures, data.shape[0])
    tree = DecisionTreeClassifier(
        criterion="entropy",
        class_weight="balanced",
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        random_state=random_state,
    )
    return tree.fit(data, flags.astype(np.int64))


def decision_paths(
    tree: DecisionTreeClassifier, feature_indices: Any = None
) -> dict[int, tuple[Condition, ...]]:
    """The conditions from the root to every leaf, in original feature indices.

    Args:
        tree: A fitted tree.
        feature_indices: ``feature_indices[j]`` is the original index of the tree's column ``j`` (what
            :func:`select_features` returned); ``None`` when the tree was fit on all columns.

    Returns:
        ``{leaf node id: ((feature_index, threshold, direction), ...)}`` in node-id order; a tree that
        is a single leaf gives ``{0: ()}``.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(300, 2))
        >>> tree = fit_failure_tree(x[:, [1]], x[:, 1] > 1.0, max_depth=1)
        >>> {leaf: [(f, round(t, 1), d) for f, t, d in path] for leaf, path in decision_paths(tree, [1]).items()}
        {1: [(1, 1.0, '<=')], 2: [(1, 1.0, '>')]}
    """
    structure = tree.tree_
    columns = (
        np.arange(structure.n_features, dtype=np.int64)
        if feature_indices is None
        else np.asarray(feature_indices, dtype=np.int64).reshape(-1)
    )
    paths: dict[int, tuple[Condition, ...]] = {}
    stack: list[tuple[int, tuple[Condition, ...]]] = [(0, ())]
    while stack:
        node, path = stack.pop()
        left, right = int(structure.children_left[node]), int(structure.children_right[node])
        if left == _LEAF:
            paths[node] = path
            continue
        feature = int(columns[int(structure.feature[node])])
        threshold = float(structure.threshold[node])
        stack.append((right, (*path, (feature, threshold, ">"))))
        stack.append((left, (*path, (feature, threshold, "<="))))
    return dict(sorted(paths.items()))


def node_error_counts(
    tree: DecisionTreeClassifier, features: FloatArray, failures: Any
) -> tuple[IntArray, IntArray]:
    """Samples and failures that pass through each node of ``tree``.

    Args:
        tree: A fitted tree.
        features: ``(N, d)`` features in the tree's columns (the selected subset).
        failures: ``(N,)`` failure indicator.

    Returns:
        ``(sizes, failure_counts)``, each ``(node_count,)`` int64; the true error rate of node ``k`` is
        ``failure_counts[k] / sizes[k]`` (not the class-weighted ``tree_.value``).
    """
    data = np.asarray(features, dtype=np.float64)
    flags = _failure_vector(failures, data.shape[0])
    indicator = tree.decision_path(data).tocsc()
    sizes = np.diff(indicator.indptr).astype(np.int64)
    errors = np.asarray(indicator.T @ flags.astype(np.int64), dtype=np.int64).reshape(-1)
    return sizes, errors


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafErrors:
    """Per-leaf raw counts and rates (rows in ascending leaf id).

    Attributes:
        leaves: Leaf ids ``(L,)`` that hold at least one sample.
        sizes: Samples per leaf.
        failures: Failures per leaf.
        error_rate: ``ER = failures / sizes``.
        error_coverage: ``EC = failures / total failures`` (NaN when the group has no failure).
        importance: ``IV = ER * EC``.
    """

    leaves: IntArray
    sizes: IntArray
    failures: IntArray
    error_rate: FloatArray
    error_coverage: FloatArray
    importance: FloatArray


def leaf_errors(leaf_ids: Any, failures: Any) -> LeafErrors:
    """ER, EC and IV of every leaf from each sample's leaf id (``tree.apply``) and failure flag.

    Example:
        >>> table = leaf_errors([1, 1, 2, 2, 2], [1, 0, 1, 1, 0])
        >>> table.leaves.tolist(), table.error_rate.tolist(), table.error_coverage.tolist()
        ([1, 2], [0.5, 0.6666666666666666], [0.3333333333333333, 0.6666666666666666])
    """
    ids = np.asarray(leaf_ids, dtype=np.int64).reshape(-1)
    flags = _failure_vector(failures, ids.shape[0])
    leaves, inverse = np.unique(ids, return_inverse=True)
    sizes = np.bincount(inverse, minlength=leaves.size).astype(np.int64)
    errors = np.bincount(inverse, weights=flags.astype(np.float64), minlength=leaves.size)
    errors = errors.round().astype(np.int64)
    total = int(errors.sum())
    error_rate = errors / sizes
    error_coverage = errors / total if total else np.full(leaves.size, np.nan)
    return LeafErrors(
        leaves=leaves.astype(np.int64),
        sizes=sizes,
        failures=errors,
        error_rate=error_rate.astype(np.float64),
        error_coverage=np.asarray(error_coverage, dtype=np.float64),
        importance=np.asarray(error_rate * error_coverage, dtype=np.float64),
    )


def base_error_rate(failures: Any) -> float:
    """``BER``: the fraction of failures (NaN for no samples).

    Example:
        >>> base_error_rate([0, 1, 0, 0])
        0.25
    """
    flags = np.asarray(failures).reshape(-1).astype(bool)
    return float(flags.mean()) if flags.size else float("nan")


def average_leaf_error_rate(leaf_ids: Any, failures: Any) -> float:
    """``ALER = sum over leaves of EC * ER``: the error rate of the leaf a random failure falls in.

    NaN when there is no failure (EC is undefined).

    Example:
        >>> average_leaf_error_rate([1, 1, 2, 2], [1, 0, 1, 1]), base_error_rate([1, 0, 1, 1])
        (0.8333333333333333, 0.75)
    """
    table = leaf_errors(leaf_ids, failures)
    if not table.failures.sum():
        return float("nan")
    return float(np.sum(table.error_coverage * table.error_rate))


def _box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of every pair of xyxy boxes, ``(len(first), len(second))``."""
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    area_first = (first[:, 2:] - first[:, :2]).clip(0.0).prod(axis=1)
    area_second = (second[:, 2:] - second[:, :2]).clip(0.0).prod(axis=1)
    union = area_first[:, None] + area_second[None, :] - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, overlap / union, 0.0)


def _array(value: Any, columns: int | None = None) -> np.ndarray:
    data = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    return data.reshape(-1, columns) if columns else data.reshape(-1)


def detection_misses(
    preds: Any, target: Any, *, iou_threshold: float = 0.5, score_threshold: float = 0.0
) -> BoolArray:
    """Whether each image has a missed object: an image-level failure for detection models.

    An image fails when one of its ground-truth boxes (``iscrowd`` boxes aside) is matched by no
    detection of its class with ``score >= score_threshold`` at IoU ``>= iou_threshold``. Matching is
    COCO's greedy rule: detections in descending score order, each taking the unmatched box of its class
    it overlaps most (at least the threshold).

    Args:
        preds: Per image, a dict with ``boxes`` (xyxy), ``scores`` and ``labels`` (torchmetrics format).
        target: Per image, a dict with ``boxes``, ``labels`` and optionally ``iscrowd``.
        iou_threshold: The IoU a match needs.
        score_threshold: Detections below this score are not counted (the operating point).

    Returns:
        A boolean array, one entry per image.

    Raises:
        ValueError: If ``preds`` and ``target`` have different lengths.

    Example:
        >>> import torch
        >>> box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        >>> found = {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
        >>> truth = {"boxes": box, "labels": torch.tensor([1])}
        >>> detection_misses([found, found], [truth, {"boxes": box, "labels": torch.tensor([2])}]).tolist()
        [False, True]
    """
    if len(preds) != len(target):
        raise ValueError(
            f"Expected one prediction dict per target dict, but got {len(preds)} predictions and "
            f"{len(target)} targets."
        )
    out = np.zeros(len(target), dtype=bool)
    for image, (pred, truth) in enumerate(zip(preds, target, strict=True)):
        gt_boxes, gt_labels = _array(truth["boxes"], 4), _array(truth["labels"])
        crowd = (
            _array(truth["iscrowd"]).astype(bool)
            if "iscrowd" in truth
            else np.zeros(len(gt_labels), dtype=bool)
        )
        scores = _array(pred["scores"])
        keep = scores >= score_threshold
        dt_boxes, dt_labels = _array(pred["boxes"], 4)[keep], _array(pred["labels"])[keep]
        order = np.argsort(-scores[keep], kind="stable")
        matched = np.zeros(len(gt_labels), dtype=bool)
        for detection in order:
            same = np.flatnonzero((gt_labels == dt_labels[detection]) & ~matched)
            if same.size == 0:
                continue
            overlaps = _box_iou(dt_boxes[detection : detection + 1], gt_boxes[same])[0]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou_threshold:
                matched[same[best]] = True
        out[image] = bool((~matched & ~crowd).any())
    return out
