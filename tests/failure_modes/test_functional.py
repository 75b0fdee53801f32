from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from lightning_insight.failure_modes.functional import (
    average_leaf_error_rate,
    base_error_rate,
    decision_paths,
    detection_misses,
    fit_failure_tree,
    leaf_errors,
    mutual_information,
    node_error_counts,
    select_features,
    stratified_subsample,
)


def planted(n: int = 2000, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    failures = (x[:, 3] > 0.5) & (x[:, 9] <= -0.3)
    return x, failures


@pytest.mark.parametrize("method", ["knn", "binned"])
def test_mutual_information_ranks_planted_features_first(method: str) -> None:
    x, failures = planted()
    chosen = select_features(x, failures, num_features=2, method=method, max_samples_per_group=1500)
    assert sorted(chosen.tolist()) == [3, 9]


def test_mutual_information_is_zero_for_one_class_and_rejects_unknown_method() -> None:
    x, _ = planted(n=50)
    assert not mutual_information(x, np.zeros(50, dtype=bool)).any()
    with pytest.raises(ValueError, match="Expected argument `method` to be one of"):
        mutual_information(x, np.zeros(50), method="gini")
    with pytest.raises(
        ValueError, match=r"`failures` to hold one value per sample \(50\), but got 49"
    ):
        mutual_information(x, np.zeros(49))


def test_select_features_keeps_every_column_when_asked_for_more() -> None:
    x, failures = planted(n=100)
    assert select_features(x[:, :4], failures, num_features=10).tolist() == [0, 1, 2, 3]


def test_binned_estimator_keeps_ties_in_one_bin() -> None:
    # Half the column is an exact zero (a ReLU): independent of failure, so the score stays ~0.
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(4000, 1)), 0.0)
    failures = rng.random(4000) < 0.2
    assert mutual_information(x, failures, method="binned")[0] < 0.01


def test_stratified_subsample_keeps_failure_rate_and_is_seeded() -> None:
    failures = np.arange(10_000) < 300
    rows = stratified_subsample(failures, 1000, random_state=3)
    assert rows.size == 1000
    assert np.all(np.diff(rows) > 0)
    assert int(failures[rows].sum()) == 30
    assert np.array_equal(rows, stratified_subsample(failures, 1000, random_state=3))
    assert not np.array_equal(rows, stratified_subsample(failures, 1000, random_state=4))
    # A single failure survives any subsample.
    one = np.zeros(10_000, dtype=bool)
    one[17] = True
    assert 17 in stratified_subsample(one, 10, random_state=0)
    assert stratified_subsample(failures, None).size == 10_000


def test_decision_paths_use_original_indices_and_match_membership() -> None:
    x, failures = planted()
    columns = np.array([9, 0, 3])
    tree = fit_failure_tree(x[:, columns], failures, max_depth=2, min_samples_leaf=5)
    paths = decision_paths(tree, columns)
    leaf_of = tree.apply(x[:, columns])
    assert set(paths) == set(np.unique(leaf_of).tolist())
    data32 = x.astype(np.float32)  # scikit-learn's trees compare float32 values
    for leaf, path in paths.items():
        inside = np.ones(len(x), dtype=bool)
        for feature, threshold, direction in path:
            inside &= (
                (data32[:, feature] <= threshold)
                if direction == "<="
                else (data32[:, feature] > threshold)
            )
        assert np.array_equal(inside, leaf_of == leaf)
    used = {feature for path in paths.values() for feature, _, _ in path}
    assert used <= {0, 3, 9}
    assert {3, 9} <= used


def test_single_leaf_tree_has_empty_path() -> None:
    x, failures = planted(n=20)
    tree = fit_failure_tree(x, failures, max_depth=3, min_samples_leaf=20)
    assert decision_paths(tree) == {0: ()}


def test_leaf_errors_and_rates_against_hand_counts() -> None:
    leaves = [4, 4, 4, 4, 2, 2, 7]
    failures = [1, 1, 1, 0, 0, 1, 0]
    table = leaf_errors(leaves, failures)
    assert table.leaves.tolist() == [2, 4, 7]
    assert table.sizes.tolist() == [2, 4, 1]
    assert table.failures.tolist() == [1, 3, 0]
    np.testing.assert_allclose(table.error_rate, [0.5, 0.75, 0.0])
    np.testing.assert_allclose(table.error_coverage, [0.25, 0.75, 0.0])
    np.testing.assert_allclose(table.importance, [0.125, 0.5625, 0.0])
    assert base_error_rate(failures) == pytest.approx(4 / 7)
    assert average_leaf_error_rate(leaves, failures) == pytest.approx(0.25 * 0.5 + 0.75 * 0.75)


def test_undefined_rates_are_nan() -> None:
    assert np.isnan(base_error_rate([]))
    assert np.isnan(average_leaf_error_rate([1, 2], [0, 0]))
    assert np.isnan(leaf_errors([1, 2], [0, 0]).error_coverage).all()


def test_node_error_counts_are_raw_counts() -> None:
    x, failures = planted()
    tree = fit_failure_tree(x, failures, max_depth=2)
    sizes, errors = node_error_counts(tree, x, failures)
    assert sizes[0] == len(x)
    assert errors[0] == failures.sum()
    structure = tree.tree_
    for node in range(structure.node_count):
        left, right = structure.children_left[node], structure.children_right[node]
        if left != right:
            assert sizes[node] == sizes[left] + sizes[right]
            assert errors[node] == errors[left] + errors[right]
        else:
            members = tree.apply(x) == node
            assert sizes[node] == members.sum()
            assert errors[node] == failures[members].sum()


def _detections(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, Any]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_detection_misses_follow_coco_greedy_matching() -> None:
    box, near, far = [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]
    two = {"boxes": torch.tensor([box, far]), "labels": torch.tensor([1, 1])}
    crowd = {
        "boxes": torch.tensor([box, far]),
        "labels": torch.tensor([1, 1]),
        "iscrowd": torch.tensor([0, 1]),
    }
    cases = [
        (_detections([near, far], [0.9, 0.8], [1, 1]), two, False),  # both found (IoU 0.68 >= 0.5)
        (_detections([near], [0.9], [1]), two, True),  # the far object is missed
        (_detections([near, far], [0.9, 0.8], [1, 2]), two, True),  # wrong class at the far one
        (_detections([near, far], [0.9, 0.1], [1, 1]), two, True),  # far one under the score cut
        (_detections([near], [0.9], [1]), crowd, False),  # an unmatched crowd box is no miss
        # one detection cannot find two objects: the better-scored duplicate takes one, not both
        (
            _detections([near, near], [0.9, 0.8], [1, 1]),
            {"boxes": torch.tensor([box, near]), "labels": torch.tensor([1, 1])},
            False,
        ),
        (
            _detections([near], [0.9], [1]),
            {"boxes": torch.tensor([box, near]), "labels": torch.tensor([1, 1])},
            True,
        ),
        (_detections([], [], []), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}, False),
    ]
    got = detection_misses([c[0] for c in cases], [c[1] for c in cases], score_threshold=0.3)
    assert got.tolist() == [c[2] for c in cases]
    strict = detection_misses([cases[0][0]], [two], iou_threshold=0.7)
    assert strict.tolist() == [True]  # IoU 0.68 is not enough at 0.7
    with pytest.raises(ValueError, match="one prediction dict per target dict, but got 1"):
        detection_misses([cases[0][0]], [two, two])
