"""FailureModeMiner: where a model fails, explained with features of a separate (robust) model (Barlow).

The estimator behind :class:`FailureModeMonitor`, usable without a Trainer:
``FailureModeMiner().fit(features, preds, target)`` returns a
:class:`~lightning_insight.failure_modes.FailureModeReport`. The math lives in
:mod:`~lightning_insight.failure_modes.functional`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.tree import DecisionTreeClassifier

from lightning_insight.discovery.mosaic import display_rgb
from lightning_insight.failure_modes.functional import (
    MUTUAL_INFORMATION_METHODS,
    base_error_rate,
    decision_paths,
    fit_failure_tree,
    leaf_errors,
    node_error_counts,
    select_features,
)
from lightning_insight.failure_modes.results import (
    FITTED,
    NO_SUCCESSES,
    NOT_ENOUGH_FAILURES,
    FailureMode,
    FailureModeGroup,
    FailureModeReport,
    Group,
    TreeNode,
)
from lightning_insight.failure_modes.visualize import (
    failure_mode_panel,
    feature_attack,
    feature_heatmaps,
    most_activating,
)
from lightning_insight.fairness.functional import check_positive_int

__all__ = ["GROUPINGS", "FailureModeMiner"]

logger = logging.getLogger(__name__)

#: How samples are grouped before a tree is fit per group: by predicted class (Barlow's default), by
#: label, or all samples in one group (key ``"all"``).
GROUPINGS: tuple[str, ...] = ("prediction", "label", "all")

_ALL = "all"


def _to_numpy(name: str, value: Any) -> np.ndarray[Any, Any]:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Expected argument `{name}` to be a numpy array, a tensor or a sequence, but got "
            f"{type(value).__name__}."
        ) from error


def _check_features(features: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    array = _to_numpy("features", features)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise TypeError(
            f"Expected argument `features` to hold numbers, but got dtype {array.dtype}."
        )
    if array.ndim != 2:
        raise ValueError(
            f"Expected argument `features` to be 2-D (N samples, D features), but got shape "
            f"{tuple(array.shape)}. HINT: flatten or pool a feature map to (N, D) first."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"Expected argument `features` to have at least one sample and one feature, but got shape "
            f"{tuple(array.shape)}."
        )
    data = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"Expected argument `features` to be finite, but got NaN or inf in {rows.size} of "
            f"{data.shape[0]} rows (first rows: {rows[:5].tolist()}). HINT: check the feature "
            "extractor's output (e.g. a division by zero in normalisation) or drop those samples."
        )
    return data


def _integral(values: np.ndarray[Any, Any]) -> bool:
    if values.dtype == np.bool_ or np.issubdtype(values.dtype, np.integer):
        return True
    return bool(
        np.issubdtype(values.dtype, np.floating)
        and np.isfinite(values).all()
        and np.all(values == np.round(values))
    )


def _check_labels(name: str, value: Any, count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    array = _to_numpy(name, value)
    if array.ndim != 1 or not _integral(array):
        raise ValueError(
            f"Expected argument `{name}` to be (N,) integer class labels, but got shape "
            f"{tuple(array.shape)} of dtype {array.dtype}."
        )
    if array.shape[0] != count:
        raise ValueError(
            f"Expected argument `{name}` to hold one value per row of `features` ({count}), but got "
            f"{array.shape[0]}."
        )
    return array.astype(np.int64)


def _check_predictions(preds: Any, count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    array = _to_numpy("preds", preds)
    if array.ndim == 2 and np.issubdtype(array.dtype, np.number):
        if array.shape[0] != count:
            raise ValueError(
                f"Expected argument `preds` to hold one row per row of `features` ({count}), but got "
                f"{array.shape[0]}."
            )
        return np.asarray(array.argmax(axis=1), dtype=np.int64)
    if array.ndim == 1 and not _integral(array):
        raise ValueError(
            f"Expected argument `preds` to be (N,) integer labels or (N, C) scores, but got (N,) values "
            f"of dtype {array.dtype} that are not integers. HINT: for binary probabilities pass "
            "`preds > 0.5` (or your threshold) as labels."
        )
    return _check_labels("preds", array, count)


def _check_groups(groups: Any, count: int) -> list[Group]:
    array = _to_numpy("groups", groups)
    if array.ndim != 1 or array.shape[0] != count:
        raise ValueError(
            f"Expected argument `groups` to be one group value per row of `features` ({count}), but got "
            f"shape {tuple(array.shape)}."
        )
    if _integral(array):
        return [int(value) for value in array.tolist()]
    if array.dtype.kind in "USO" and all(isinstance(v, str) for v in array.tolist()):
        return [str(value) for value in array.tolist()]
    raise TypeError(
        f"Expected argument `groups` to hold integers or strings, but got dtype {array.dtype}."
    )


def _check_sample_ids(sample_ids: Any, count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    if sample_ids is None:
        return np.arange(count, dtype=np.int64)
    array = _to_numpy("sample_ids", sample_ids)
    if array.ndim != 1 or array.shape[0] != count or not _integral(array):
        raise ValueError(
            f"Expected argument `sample_ids` to be one integer id per row of `features` ({count}), but "
            f"got shape {tuple(array.shape)} of dtype {array.dtype}."
        )
    return array.astype(np.int64)


def _tree_nodes(
    tree: DecisionTreeClassifier,
    columns: np.ndarray[Any, np.dtype[np.int64]],
    sizes: np.ndarray[Any, np.dtype[np.int64]],
    errors: np.ndarray[Any, np.dtype[np.int64]],
) -> tuple[TreeNode, ...]:
    structure = tree.tree_
    depth = np.zeros(structure.node_count, dtype=np.int64)
    nodes: list[TreeNode] = []
    for node in range(structure.node_count):
        left, right = int(structure.children_left[node]), int(structure.children_right[node])
        split = left != right
        if split:
            depth[left] = depth[right] = depth[node] + 1
        nodes.append(
            TreeNode(
                node_id=node,
                depth=int(depth[node]),
                size=int(sizes[node]),
                failures=int(errors[node]),
                error_rate=float(errors[node] / sizes[node]) if sizes[node] else float("nan"),
                feature=int(columns[int(structure.feature[node])]) if split else None,
                threshold=float(structure.threshold[node]) if split else None,
                left=left if split else None,
                right=right if split else None,
            )
        )
    return tuple(nodes)


class FailureModeMiner:
    """Explain where a model fails with a shallow tree over features of a separate (robust) model.

    Barlow (Singla et al., CVPR 2021): samples are grouped (by predicted class by default), and in each
    group a failure is a prediction that differs from the label. The ``num_features`` features with the
    highest mutual information with failure are kept, and an entropy decision tree with balanced class
    weights separates failures from successes. Each leaf is a failure mode: its decision path (in the
    ORIGINAL feature indices), error rate ER, error coverage EC and importance IV = ER x EC. Modes of all
    groups are ranked by IV; each group also gets its base error rate BER and ALER = sum of EC x ER
    (``BER <= ALER <= 1``; the closer ALER is to 1, the better the leaves isolate failures).

    Parameters are stored unchanged and checked in :meth:`fit` (or by :meth:`check_params`).

    Args:
        max_depth: Depth of each tree (at most ``2 ** max_depth`` modes per group).
        num_features: Features kept by mutual information before the tree is fit.
        min_samples_leaf: Smallest leaf, as a count (int >= 1) or a fraction of the group (float in
            ``(0, 0.5]``), as scikit-learn's.
        grouping: ``"prediction"`` (predicted class), ``"label"`` or ``"all"`` (one group, ``"all"``);
            ignored when ``fit`` gets ``groups``.
        min_failures: A group with fewer failures gets no tree: it is reported with the status
            ``"not enough failures"`` and its counts (not an error). A group where every sample failed
            gets ``"no successes"``.
        max_samples_per_group: Mutual information is estimated on a seeded stratified subsample of at
            most this many rows per group (``None``: all rows); the tree always sees every row.
        mutual_information: ``"binned"`` (the default: 16 quantile bins, vectorised; 1.2 s for a
            group of 1e4 rows x 2048 features on 2 CPU cores) or ``"knn"`` (scikit-learn's
            ``mutual_info_classif``, Barlow's estimator; 25 s there, see docs/benchmarks.md). Both
            recover the planted features of the tests.
        random_state: Seed of the subsample, the estimator and the tree.

    Attributes:
        report_: The last :class:`~lightning_insight.failure_modes.FailureModeReport`.
        trees_: ``{group: fitted DecisionTreeClassifier}`` for the fitted groups; a tree's columns are
            ``selected_features_[group]``.
        selected_features_: ``{group: original feature indices (int64 array)}``, most informative first.
        groups_: Every group key, ascending.
        failures_: ``(N,)`` failure indicator of the last fit.
        features_: ``(N, D)`` features of the last fit (kept for :meth:`explain_images`).
        sample_ids_: ``(N,)`` their sample ids.
        sample_groups_: Each sample's group.
        n_features_in_: ``D``, the number of feature columns seen by ``fit``.

    Raises:
        ValueError: From ``fit`` for a bad parameter or input (features not 2-D or not finite, lengths
            that disagree, labels that are not integers).
        TypeError: From ``fit`` for inputs of the wrong type (non-numeric features, groups that are
            neither integers nor strings).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(500, 6))
        >>> target = np.zeros(500, dtype=int)
        >>> preds = np.where(x[:, 4] > 1.0, 1, target)
        >>> report = FailureModeMiner(max_depth=1, grouping="all", num_features=3).fit(x, preds, target)
        >>> top = report.modes[0]
        >>> [(f, round(t, 1), d) for f, t, d in top.path], top.error_rate
        ([(4, 1.0, '>')], 1.0)
    """

    def __init__(
        self,
        *,
        max_depth: int = 3,
        num_features: int = 50,
        min_samples_leaf: int | float = 10,
        grouping: str = "prediction",
        min_failures: int = 10,
        max_samples_per_group: int | None = 5000,
        mutual_information: str = "binned",
        random_state: int = 0,
    ) -> None:
        self.max_depth = max_depth
        self.num_features = num_features
        self.min_samples_leaf = min_samples_leaf
        self.grouping = grouping
        self.min_failures = min_failures
        self.max_samples_per_group = max_samples_per_group
        self.mutual_information = mutual_information
        self.random_state = random_state

    def check_params(self) -> None:
        """Check the parameters (``fit`` calls it; a callback may call it early).

        Raises:
            ValueError: For a value out of range or an unknown choice, naming the argument.
        """
        for name in ("max_depth", "num_features", "min_failures"):
            check_positive_int(name, getattr(self, name))
        leaf = self.min_samples_leaf
        if isinstance(leaf, bool) or not (
            (isinstance(leaf, int) and leaf >= 1) or (isinstance(leaf, float) and 0.0 < leaf <= 0.5)
        ):
            raise ValueError(
                "Expected argument `min_samples_leaf` to be an int >= 1 or a float in (0, 0.5], but "
                f"got {leaf!r}."
            )
        if self.grouping not in GROUPINGS:
            raise ValueError(
                f"Expected argument `grouping` to be one of {GROUPINGS}, but got {self.grouping!r}. "
                "HINT: pass explicit per-sample groups to `fit(..., groups=...)` for any other grouping."
            )
        limit = self.max_samples_per_group
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 2
        ):
            raise ValueError(
                f"Expected argument `max_samples_per_group` to be None or an int >= 2, but got {limit!r}."
            )
        if self.mutual_information not in MUTUAL_INFORMATION_METHODS:
            raise ValueError(
                f"Expected argument `mutual_information` to be one of {MUTUAL_INFORMATION_METHODS}, "
                f"but got {self.mutual_information!r}."
            )
        seed = self.random_state
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(
                f"Expected argument `random_state` to be an int >= 0, but got {seed!r}."
            )

    def fit(
        self,
        features: Any,
        preds: Any,
        target: Any,
        groups: Any = None,
        sample_ids: Any = None,
        *,
        feature_names: Any = None,
        epoch: int | None = None,
        step: int | None = None,
        source: str = "data",
    ) -> FailureModeReport:
        """Mine failure modes: per group, select features, fit a tree, rank its leaves.

        Returns the report (also kept as ``report_``), as the issue's API asks, rather than ``self``.

        Args:
            features: ``(N, D)`` features of the robust model (numpy array or tensor), finite.
            preds: ``(N,)`` predicted labels or ``(N, C)`` scores (the argmax is the prediction).
            target: ``(N,)`` labels. A failure is ``prediction != target``.
            groups: Optional ``(N,)`` group value per sample (ints or strings); overrides ``grouping``.
            sample_ids: Optional ``(N,)`` integer ids (default ``0..N-1``), listed in each mode.
            feature_names: Optional ``D`` names of the feature columns (used to describe paths).
            epoch: Recorded in the report.
            step: Recorded in the report.
            source: Recorded in the report (``"val"``, ``"test"``, ``"data"``).
        """
        self.check_params()
        data = _check_features(features)
        count, width = data.shape
        predicted = _check_predictions(preds, count)
        labels = _check_labels("target", target, count)
        ids = _check_sample_ids(sample_ids, count)
        names = None if feature_names is None else tuple(str(n) for n in feature_names)
        if names is not None and len(names) != width:
            raise ValueError(
                f"Expected argument `feature_names` to name the {width} feature columns, but got "
                f"{len(names)} names."
            )
        failures = predicted != labels
        if groups is not None:
            keys: list[Group] = _check_groups(groups, count)
            grouping = "explicit"
        elif self.grouping == "all":
            keys = [_ALL] * count
            grouping = self.grouping
        else:
            source_labels = predicted if self.grouping == "prediction" else labels
            keys = [int(v) for v in source_labels.tolist()]
            grouping = self.grouping

        members: dict[Group, list[int]] = {}
        for row, key in enumerate(keys):
            members.setdefault(key, []).append(row)
        ordered = sorted(members, key=lambda key: (isinstance(key, str), key))

        self.trees_: dict[Group, DecisionTreeClassifier] = {}
        self.selected_features_: dict[Group, np.ndarray[Any, np.dtype[np.int64]]] = {}
        entries: list[FailureModeGroup] = []
        modes: list[FailureMode] = []
        for key in ordered:
            rows = np.asarray(members[key], dtype=np.int64)
            entry, group_modes = self._fit_group(key, data[rows], failures[rows], ids[rows])
            entries.append(entry)
            modes.extend(group_modes)
        position = {key: index for index, key in enumerate(ordered)}
        modes.sort(key=lambda m: (-m.importance, position[m.group], m.leaf_id))

        self.groups_ = tuple(ordered)
        self.failures_ = failures
        self.features_ = data
        self.sample_ids_ = ids
        self.sample_groups_ = keys
        self.n_features_in_ = width
        self.report_ = FailureModeReport(
            modes=tuple(modes),
            groups=tuple(entries),
            num_samples=count,
            grouping=grouping,
            feature_names=names,
            epoch=epoch,
            step=step,
            source=source,
        )
        return self.report_

    def explain_images(
        self,
        mode: FailureMode | int,
        images: Any,
        *,
        sample_ids: Any,
        feature_map: torch.Tensor | None = None,
        extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        attack_steps: int = 0,
        top_k: int = 6,
        max_failures: int = 12,
    ) -> np.ndarray[Any, np.dtype[np.uint8]] | None:
        """The picture of one failure mode of the last fit, drawn from the ``images`` at hand.

        One row per feature on the mode's path (each feature once): the ``top_k`` images of the
        mode's group with the largest value of that feature, then (with ``feature_map``) that
        feature's heatmap over them, then (with ``extractor`` and ``attack_steps > 0``) the images
        pushed by :func:`~lightning_insight.failure_modes.visualize.feature_attack` to excite it. Last,
        a red-framed row of up to ``max_failures`` of the mode's failures. Only samples among
        ``images`` are shown (a monitor keeps a seeded subset).

        Args:
            mode: A mode of ``report_`` or its rank in ``report_.modes``.
            images: ``(M, C, H, W)`` inputs (any value range: each is min-max scaled for display).
            sample_ids: ``(M,)`` their ids; ids not in the last fit are ignored.
            feature_map: ``(M, D, h, w)`` spatial features of ``images`` (channel ``d`` is the
                heatmap of feature ``d``), or ``None`` for no heatmaps.
            extractor: ``images -> (M, D)`` features with gradients, for the feature attack.
            attack_steps: Steps of the feature attack (0: none; at most 200).
            top_k: Images per feature row.
            max_failures: Images in the failure row.

        Returns:
            An RGB ``uint8`` image ``(H, W, 3)``, or ``None`` when none of the images belongs to the
            mode's group.

        Raises:
            RuntimeError: Before :meth:`fit`.
            ValueError: For a mode rank out of range, or ``images``/``sample_ids`` of other lengths.
        """
        if not hasattr(self, "report_"):
            raise RuntimeError(
                "FailureModeMiner.explain_images needs a fitted miner: call fit first."
            )
        if isinstance(mode, int):
            if not 0 <= mode < len(self.report_.modes):
                raise ValueError(
                    f"Expected argument `mode` to be a rank in [0, {len(self.report_.modes)}), but "
                    f"got {mode}."
                )
            mode = self.report_.modes[mode]
        pixels = torch.as_tensor(images)
        ids = _check_sample_ids(sample_ids, int(pixels.shape[0]))
        row_of = {int(i): row for row, i in enumerate(self.sample_ids_)}
        known = np.array([int(i) in row_of for i in ids], dtype=bool)
        rows = np.array([row_of[int(i)] for i in ids[known]], dtype=np.int64)
        local = np.flatnonzero(known)
        in_group = np.array([self.sample_groups_[r] == mode.group for r in rows], dtype=bool)
        members = local[in_group]
        if members.shape[0] == 0:
            return None
        features = torch.as_tensor(self.features_[rows[in_group]], dtype=torch.float32)
        shown = display_rgb(pixels)
        picture_rows: list[list[torch.Tensor]] = []
        cells: list[str | None] = []
        for feature in dict.fromkeys(condition[0] for condition in mode.path):
            top = members[most_activating(features, feature, k=top_k).numpy()]
            index = torch.as_tensor(top)
            row = [shown[index]]
            if feature_map is not None:
                row.append(feature_heatmaps(feature_map[index].cpu(), feature, shown[index]))
            if extractor is not None and attack_steps:
                device = feature_map.device if feature_map is not None else pixels.device
                attacked = feature_attack(
                    extractor, pixels[index].to(device), feature, steps=attack_steps, clamp=None
                )
                row.append(display_rgb(attacked.cpu()))
            picture_rows.append(row)
            cells.append(None)
        in_mode = set(mode.sample_ids)
        failed = [
            int(position)
            for position, row in zip(local, rows, strict=True)
            if int(self.sample_ids_[row]) in in_mode and self.failures_[row]
        ][:max_failures]
        if failed:
            picture_rows.append([shown[torch.as_tensor(failed)]])
            cells.append("FN")
        picture = failure_mode_panel(picture_rows, cells=cells)
        image: np.ndarray[Any, np.dtype[np.uint8]] = np.rint(
            picture.clamp(0, 1).permute(1, 2, 0).numpy() * 255
        ).astype(np.uint8)
        return image

    def _fit_group(
        self,
        key: Group,
        data: np.ndarray[Any, np.dtype[np.float64]],
        failures: np.ndarray[Any, np.dtype[np.bool_]],
        ids: np.ndarray[Any, np.dtype[np.int64]],
    ) -> tuple[FailureModeGroup, list[FailureMode]]:
        size, errors = int(failures.size), int(failures.sum())
        ber = base_error_rate(failures)
        status = FITTED
        if errors < self.min_failures:
            status = NOT_ENOUGH_FAILURES
        elif errors == size:
            status = NO_SUCCESSES
        if status != FITTED:
            logger.info("Failure modes of group %r: skipped, %s.", key, status)
            entry = FailureModeGroup(
                group=key,
                status=status,
                size=size,
                failures=errors,
                base_error_rate=ber,
                aler=float("nan"),
                min_failures=self.min_failures,
            )
            return entry, []

        logger.info(
            "Failure modes of group %r: selecting %d of %d features by mutual information (%s) over "
            "%d samples, then fitting a depth-%d tree.",
            key,
            min(self.num_features, data.shape[1]),
            data.shape[1],
            self.mutual_information,
            size,
            self.max_depth,
        )
        columns = select_features(
            data,
            failures,
            num_features=self.num_features,
            method=self.mutual_information,
            random_state=self.random_state,
            max_samples_per_group=self.max_samples_per_group,
        )
        subset = data[:, columns]
        tree = fit_failure_tree(
            subset,
            failures,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state,
        )
        leaf_of = np.asarray(tree.apply(subset), dtype=np.int64)
        table = leaf_errors(leaf_of, failures)
        sizes, node_failures = node_error_counts(tree, subset, failures)
        nodes = _tree_nodes(tree, columns, sizes, node_failures)
        node_rate = {node.node_id: node.error_rate for node in nodes}
        paths = decision_paths(tree, columns)
        # Node ids on each leaf's path, to report the true error rate along it.
        chains: dict[int, list[int]] = {0: [0]}
        for node in nodes:
            if node.left is not None and node.right is not None:
                chains[node.left] = [*chains[node.node_id], node.left]
                chains[node.right] = [*chains[node.node_id], node.right]

        modes = [
            FailureMode(
                group=key,
                leaf_id=int(leaf),
                path=paths[int(leaf)],
                size=int(table.sizes[i]),
                failures=int(table.failures[i]),
                error_rate=float(table.error_rate[i]),
                error_coverage=float(table.error_coverage[i]),
                importance=float(table.importance[i]),
                sample_ids=tuple(int(s) for s in np.sort(ids[leaf_of == leaf])),
                path_error_rates=tuple(node_rate[n] for n in chains[int(leaf)]),
            )
            for i, leaf in enumerate(table.leaves)
        ]
        aler = float(np.sum(table.error_coverage * table.error_rate))
        self.trees_[key] = tree
        self.selected_features_[key] = columns
        entry = FailureModeGroup(
            group=key,
            status=FITTED,
            size=size,
            failures=errors,
            base_error_rate=ber,
            aler=aler,
            min_failures=self.min_failures,
            selected_features=tuple(int(c) for c in columns),
            nodes=nodes,
        )
        return entry, modes
