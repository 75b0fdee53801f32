"""Failure modes from robust-model features (Barlow): where a model fails, in features a person can read.

Layers: :mod:`~lightning_insight.failure_modes.functional` (mutual-information feature selection, the
failure tree, ER/EC/IV, BER and ALER), the estimator :class:`FailureModeMiner`, the results
:class:`FailureModeReport` / :class:`FailureMode` / :class:`FailureModeGroup` / :class:`TreeNode`, a
robust extractor made by adversarial training (:func:`make_robust_extractor`) and the pictures
(:mod:`~lightning_insight.failure_modes.visualize`). None of them imports Lightning; the callback
:class:`~lightning_insight.failure_modes.callback.FailureModeMonitor` does.
"""

from __future__ import annotations

from lightning_insight.failure_modes.functional import (
    LeafErrors,
    average_leaf_error_rate,
    base_error_rate,
    decision_paths,
    fit_failure_tree,
    leaf_errors,
    mutual_information,
    node_error_counts,
    select_features,
)
from lightning_insight.failure_modes.miner import GROUPINGS, FailureModeMiner
from lightning_insight.failure_modes.results import (
    GROUP_STATUSES,
    FailureMode,
    FailureModeGroup,
    FailureModeReport,
    TreeNode,
)
from lightning_insight.failure_modes.robust import (
    RobustExtractor,
    adversarial_finetune,
    make_robust_extractor,
    pgd_l2_attack,
)

__all__ = [
    "GROUPINGS",
    "GROUP_STATUSES",
    "FailureMode",
    "FailureModeGroup",
    "FailureModeMiner",
    "FailureModeReport",
    "LeafErrors",
    "RobustExtractor",
    "TreeNode",
    "adversarial_finetune",
    "average_leaf_error_rate",
    "base_error_rate",
    "decision_paths",
    "fit_failure_tree",
    "leaf_errors",
    "make_robust_extractor",
    "mutual_information",
    "node_error_counts",
    "pgd_l2_attack",
    "select_features",
]
