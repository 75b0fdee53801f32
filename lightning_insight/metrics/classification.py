"""Sliced classification counts and the metrics computed from them.

The math lives here once, in private functional steps that both :func:`slice_counts` (one call, no
state) and the streaming :class:`SlicedConfusion` metric reuse:
``_validate -> _cells -> SliceIndex.bins -> bincount`` per batch, then ``classification_metrics`` on the
per-slice confusion counts.

Cells: for ``task="binary"`` each sample falls in one of 4 cells ``2 * target + prediction``
(tn, fp, fn, tp); for ``task="multiclass"`` in one of ``C * C`` cells ``target * C + prediction``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from lightning_insight.metrics.bootstrap import poisson_weights
from lightning_insight.slicing.index import (
    _CHUNK_ROWS,
    _INT_DTYPES,
    OVERALL,
    Gather,
    Layout,
    SliceIndex,
    _JointCounts,
    _within,
)
from lightning_insight.slicing.spec import SliceSpec

TASKS = ("binary", "multiclass")
BINARY_METRICS = (
    "accuracy",
    "tpr",
    "fpr",
    "tnr",
    "fnr",
    "ppv",
    "npv",
    "f1",
    "selection_rate",
    "count",
)
MULTICLASS_METRICS = ("accuracy", "macro_f1", "macro_recall", "count")
# Reasons a row is not counted, in the order of the `invalid` state.
_INVALID_REASONS = (
    "preds containing NaN",
    "binary probabilities outside [0, 1]",
    "target values outside the task's range",
)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"Expected argument `task` to be one of {list(TASKS)}, but got {task!r}.")


def num_cells(task: str, num_classes: int | None) -> int:
    """Number of confusion cells per slice for ``task``."""
    if task == "binary":
        return 4
    assert num_classes is not None
    return num_classes * num_classes


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach() if value.requires_grad else value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError):
        raise TypeError(
            f"Expected argument `{name}` to be a tensor or array, but got {type(value).__name__}."
        ) from None


def _to(
    tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``tensor.to(device, dtype)``, skipping the call (a dispatch) when it would do nothing."""
    if tensor.device == device and (dtype is None or tensor.dtype == dtype):
        return tensor
    return tensor.to(device=device, dtype=dtype)


def _format(
    preds: Any, target: Any, *, task: str, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Tensors with checked shapes and dtypes; half precision is upcast; ``num_classes`` inferred."""
    preds = _as_tensor(preds, "preds")
    target = _as_tensor(target, "target")
    if preds.dtype in (torch.float16, torch.bfloat16):
        preds = preds.float()
    if target.is_floating_point():
        target = target.long() if bool((target == target.round()).all()) else target
    if target.ndim != 1:
        target = target.reshape(-1) if target.ndim == 2 and target.shape[1] == 1 else target
    if task == "binary":
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds = preds.reshape(-1)
        if preds.ndim != 1 or target.ndim != 1 or preds.shape[0] != target.shape[0]:
            raise ValueError(
                f"Expected `preds` and `target` of shape (N,) for task='binary', but got preds "
                f"{tuple(preds.shape)} and target {tuple(target.shape)}."
            )
        return preds, target, None
    if preds.ndim == 2:
        if num_classes is not None and preds.shape[1] != num_classes:
            raise ValueError(
                f"Expected `preds` of shape (N, num_classes={num_classes}), but got {tuple(preds.shape)}."
            )
        num_classes = int(preds.shape[1])
    elif preds.ndim == 1:
        if num_classes is None:
            raise ValueError(
                "Expected argument `num_classes` to be set when task='multiclass' preds are labels of "
                "shape (N,), but got None. HINT: pass num_classes, or pass scores of shape (N, C)."
            )
    else:
        raise ValueError(
            f"Expected `preds` of shape (N,) or (N, C) for task='multiclass', but got {tuple(preds.shape)}."
        )
    if target.ndim != 1 or target.shape[0] != preds.shape[0]:
        raise ValueError(
            f"Expected `target` of shape ({preds.shape[0]},) matching `preds`, but got {tuple(target.shape)}."
        )
    if num_classes is not None and num_classes < 2:
        raise ValueError(
            f"Expected argument `num_classes` to be an int >= 2, but got {num_classes}."
        )
    return preds, target, num_classes


# Bit patterns of +0.0 and 1.0: a float in [0, 1] (not -0.0, not NaN) has its pattern, read as a signed
# integer, between the two, so one integer min/max over the raw bits checks range and NaN together.
_UNIT_BITS = {
    torch.float32: (torch.int32, 0x3F800000),
    torch.float64: (torch.int64, 0x3FF0000000000000),
}


def _bounds(values: torch.Tensor) -> tuple[int, int]:
    low, high = torch.aminmax(values)
    return int(low), int(high)


def _in_unit_interval(preds: torch.Tensor) -> bool:
    """Every value in [0, 1] and none NaN (``False`` may be wrong only for -0.0, which is valid)."""
    bits = _UNIT_BITS.get(preds.dtype)
    if bits is None:
        return False
    low, high = _bounds(preds.view(bits[0]))
    return low >= 0 and high <= bits[1]


def _surely_valid(
    preds: torch.Tensor, target: torch.Tensor, *, task: str, num_classes: int | None
) -> bool:
    """One min/max per tensor instead of the checks of :func:`_validate`; ``False`` means "look closer"."""
    if not preds.numel() or target.dtype not in _INT_DTYPES:
        return False
    low, high = _bounds(target)
    if task == "binary":
        if preds.is_floating_point():
            return low >= 0 and high <= 1 and _in_unit_interval(preds)
        if preds.dtype not in _INT_DTYPES:
            return False
        p_low, p_high = _bounds(preds)
        return low >= 0 and high <= 1 and p_low >= 0 and p_high <= 1
    assert num_classes is not None
    if not 0 <= low <= high < num_classes:
        return False
    if preds.is_floating_point():
        return bool(torch.isfinite(preds.sum()))  # NaN or inf anywhere makes the sum non-finite
    if preds.dtype not in _INT_DTYPES:
        return False
    p_low, p_high = _bounds(preds)
    return p_low >= 0 and p_high < num_classes


def _validate(
    preds: torch.Tensor, target: torch.Tensor, *, task: str, num_classes: int | None
) -> None:
    """Eager checks with clear messages (each reads values back to the host: a sync on accelerators)."""
    if _surely_valid(preds, target, task=task, num_classes=num_classes):
        return
    if target.is_floating_point():
        raise ValueError(
            f"Expected `target` to hold integer class labels, but got non-integer values such as {target[:3].tolist()}."
        )
    if preds.is_floating_point() and bool(torch.isnan(preds).any()):
        raise ValueError(
            f"Expected `preds` without NaN, but got {int(torch.isnan(preds).sum())} NaN values."
        )
    if task == "binary":
        if preds.is_floating_point() and bool(((preds < 0) | (preds > 1)).any()):
            bad = preds[(preds < 0) | (preds > 1)]
            raise ValueError(
                f"Expected `preds` for task='binary' to be probabilities in [0, 1] or hard labels, but got "
                f"values such as {bad[:3].tolist()}. HINT: apply torch.sigmoid to logits first."
            )
        if not preds.is_floating_point() and bool(((preds != 0) & (preds != 1)).any()):
            raise ValueError(
                f"Expected hard `preds` for task='binary' in {{0, 1}}, but got {sorted(set(torch.unique(preds).tolist()))}."
            )
        if bool(((target != 0) & (target != 1)).any()):
            raise ValueError(
                f"Expected `target` for task='binary' in {{0, 1}}, but got values {sorted(set(torch.unique(target).tolist()))}."
            )
        return
    assert num_classes is not None
    if bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(
            f"Expected `target` for task='multiclass' in [0, {num_classes}), but got values such as "
            f"{target[(target < 0) | (target >= num_classes)][:3].tolist()}."
        )
    if not preds.is_floating_point() and bool(((preds < 0) | (preds >= num_classes)).any()):
        raise ValueError(
            f"Expected label `preds` in [0, {num_classes}), but got out-of-range values."
        )


def _cells(
    preds: torch.Tensor,
    target: torch.Tensor,
    *,
    task: str,
    num_classes: int | None,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Confusion cell of each sample (0 where invalid), the invalid rows, per-reason invalid counts.

    All on the device: nothing here reads a value back to the host, so it adds no synchronisation.
    """
    # Few ops: this runs on every batch of a streaming update, where each op's fixed cost dominates.
    if target.dtype != torch.int64:
        target = target.to(torch.int64)
    floating = preds.is_floating_point()
    if task == "binary":
        per_target = 2
        bad_target = target.bitwise_and(-2) != 0  # any bit but the lowest: not in {0, 1}
        if floating:
            nan = torch.isnan(preds)
            out_of_range = (preds < 0) | (preds > 1)  # False for NaN
            hard = preds >= threshold
        else:
            nan = None
            hard = preds.to(torch.int64)
            out_of_range = hard.bitwise_and(-2) != 0
    else:
        assert num_classes is not None
        per_target = num_classes
        bad_target = (target < 0) | (target >= num_classes)
        if preds.ndim == 2:
            hard = preds.argmax(dim=1)
            nan = torch.isnan(preds).any(dim=1) if floating else None
            out_of_range = None
        else:
            hard = preds.to(torch.int64)
            nan = torch.isnan(preds) if floating else None
            out_of_range = (hard < 0) | (hard >= num_classes)
            if nan is not None:
                out_of_range &= ~nan  # a NaN label is counted as NaN only
    cells = torch.add(hard, target, alpha=per_target)
    if nan is None or out_of_range is None:
        none = torch.zeros_like(bad_target)
        nan = none if nan is None else nan
        out_of_range = none if out_of_range is None else out_of_range
    flags = torch.stack([nan, out_of_range, bad_target])
    excluded = flags.any(dim=0)
    return cells.masked_fill_(excluded, 0), excluded, flags.sum(dim=1)


def _slab_cells(
    preds: torch.Tensor,
    target: torch.Tensor,
    cells: torch.Tensor,
    scratch: torch.Tensor,
    *,
    task: str,
    num_classes: int | None,
    threshold: float,
) -> bool:
    """Write the int32 confusion cells of a slab of rows into ``cells``, checking the rows on the way.

    Returns ``False`` unless every row is surely valid (then :func:`_validate` must look closer).
    """
    if task == "binary":
        if preds.is_floating_point():
            if not _in_unit_interval(preds):
                return False
            torch.ge(preds, threshold, out=cells)
        else:
            if not _within(preds, 0, 2):
                return False
            cells.copy_(preds)
        per_target = 2
    else:
        assert num_classes is not None
        if preds.ndim == 2:
            if not bool(torch.isfinite(preds.sum())):
                return False
            cells.copy_(preds.argmax(dim=1))
        else:
            if not _within(preds, 0, num_classes):
                return False
            cells.copy_(preds)
        per_target = num_classes
    if not _within(target, 0, per_target):
        return False
    scratch.copy_(target)
    torch.add(cells, scratch, alpha=per_target, out=cells)
    return True


def _joint_slice_counts(
    preds: torch.Tensor,
    target: torch.Tensor,
    attributes: Mapping[str, Any],
    *,
    task: str,
    specs: Sequence[SliceSpec],
    threshold: float,
    num_classes: int | None,
    max_slices: int,
) -> SliceCounts | None:
    """:func:`slice_counts` with the checks fused into one pass over the rows, slab by slab.

    Each slab's rows get one code over (attribute values, cell) and one histogram; dimensions and the
    overall counts are sums of that joint count. Returns ``None`` wherever the exact path must decide (rows that may be
    invalid, attribute errors, a joint count too large to be cheap), never a different answer.
    """
    rows = int(preds.shape[0])
    supported = preds.dtype in _INT_DTYPES or preds.dtype in _UNIT_BITS
    if not rows or not supported or target.dtype not in _INT_DTYPES:
        return None
    if task == "multiclass" and preds.ndim == 1 and preds.is_floating_point():
        return None
    index = SliceIndex(specs, max_slices=max_slices)
    axes = index._joint_axes(attributes, rows, preds.device)
    if axes is None:
        return None
    target = target.to(preds.device)
    # Past this size the sums that turn the joint count into dimensions cost more than the rows.
    joint = _JointCounts(
        axes, num_cells(task, num_classes), max_size=max(1 << 12, min(1 << 22, rows // 4))
    )
    step = _CHUNK_ROWS if preds.device.type == "cpu" else rows
    buffers = [
        torch.empty(min(step, rows), dtype=torch.int32, device=preds.device) for _ in range(3)
    ]
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        if stop - start < buffers[0].shape[0]:  # the last, shorter slab
            buffers = [b[: stop - start] for b in buffers]
        cells, code, scratch = buffers
        if not _slab_cells(
            preds[start:stop],
            target[start:stop],
            cells,
            code,
            task=task,
            num_classes=num_classes,
            threshold=threshold,
        ):
            return None
        if not joint.add(start, stop, cells, code, scratch):
            return None
    laid_out = index._joint_flat(joint, rows)
    if laid_out is None:
        return None
    flat, layout = laid_out
    return _read_counts(index, flat.cpu().numpy(), layout, task, num_classes)


def _count(flat: torch.Tensor, size: int) -> torch.Tensor:
    if flat.device.type == "cpu":
        return torch.bincount(flat, minlength=size)
    # bincount sizes its output from the max index (a device->host sync); index_add does not.
    return torch.zeros(size, dtype=torch.int64, device=flat.device).index_add_(
        0, flat, torch.ones_like(flat)
    )


@dataclass(slots=True)
class SliceCounts:
    """Per-slice confusion counts of one evaluation (not frozen: torchmetrics copies compute results).

    Attributes:
        task: ``"binary"`` or ``"multiclass"``.
        num_classes: number of classes (``None`` for binary).
        overall: counts over every valid sample, shape ``(num_cells,)``.
        dimensions: dimension name -> (slice names, counts of shape ``(num_slices, num_cells)``).
        overall_replicates: with a bootstrap, the Poisson-weighted counts ``(B, num_cells)``.
        replicates: with a bootstrap, dimension name -> weighted counts ``(B, num_slices, num_cells)``.
    """

    task: str
    num_classes: int | None
    overall: np.ndarray
    dimensions: dict[str, tuple[list[str], np.ndarray]]
    overall_replicates: np.ndarray | None = None
    replicates: dict[str, np.ndarray] | None = None


def _read_counts(
    index: SliceIndex,
    flat: np.ndarray,
    layout: Layout,
    task: str,
    num_classes: int | None,
    replicates: np.ndarray | None = None,
) -> SliceCounts:
    """Per-slice counts out of the flat counters, and the bootstrap's the same way.

    ``replicates`` ``(num_slots + 1, B)`` become ``overall_replicates`` ``(B, num_cells)`` and
    ``replicates[dimension]`` ``(B, S, num_cells)``.
    """
    k = layout.num_cells
    overall = flat[0:k].copy()
    dimensions: dict[str, tuple[list[str], np.ndarray]] = {}
    by_dimension: dict[str, np.ndarray] = {}
    for spec in index.specs:
        start = layout.offsets[spec.name] * k
        end = start + layout.sizes[spec.name] * k
        shape = [layout.capacities[a.key] for a in spec.attributes]
        block = flat[start:end].reshape(*shape, k)
        names, positions = index.slice_positions(spec, block)
        dimensions[spec.name] = (
            names,
            block[positions] if positions is not None else np.zeros((0, k), np.int64),
        )
        if replicates is not None:
            count = replicates.shape[1]
            rep_block = replicates[start:end].reshape(*shape, k, count)
            picked = (
                rep_block[positions] if positions is not None else np.zeros((0, k, count), np.int64)
            )
            by_dimension[spec.name] = np.moveaxis(picked, -1, 0)
    return SliceCounts(
        task=task,
        num_classes=num_classes,
        overall=overall,
        dimensions=dimensions,
        overall_replicates=None if replicates is None else replicates[0:k].T.copy(),
        replicates=None if replicates is None else by_dimension,
    )


def slice_counts(
    preds: Any,
    target: Any,
    attributes: Mapping[str, Any],
    *,
    task: str,
    specs: Sequence[SliceSpec],
    threshold: float = 0.5,
    num_classes: int | None = None,
    max_slices: int = 1000,
) -> SliceCounts:
    """Per-slice confusion counts in one pass (no state).

    Raises:
        ValueError: on a bad task, shapes, NaN predictions, out-of-range probabilities or targets.
    """
    _check_task(task)
    preds_t, target_t, num_classes = _format(preds, target, task=task, num_classes=num_classes)
    fast = _joint_slice_counts(
        preds_t,
        target_t,
        attributes,
        task=task,
        specs=specs,
        threshold=threshold,
        num_classes=num_classes,
        max_slices=max_slices,
    )
    if fast is not None:
        return fast
    _validate(preds_t, target_t, task=task, num_classes=num_classes)
    index = SliceIndex(specs, max_slices=max_slices)
    ids = index.attribute_ids(attributes, int(preds_t.shape[0]), preds_t.device)
    remaps = index.align(None)
    ids = {k: remaps[k][v] if k in remaps else v for k, v in ids.items()}
    layout = index.layout(num_cells(task, num_classes))
    cells, excluded, _ = _cells(
        preds_t, target_t, task=task, num_classes=num_classes, threshold=threshold
    )
    codes = index._flat_codes(ids, cells, excluded, layout, categorical_ids_checked=True)
    flat = _count(codes, layout.num_slots + 1)
    return _read_counts(index, flat.cpu().numpy(), layout, task, num_classes)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan
        )


def classification_metrics(
    counts: np.ndarray, *, task: str, num_classes: int | None = None
) -> dict[str, np.ndarray]:
    """Metrics of every slice from its confusion counts; 0/0 is NaN, never 0.

    Args:
        counts: shape ``(S, num_cells)`` (or ``(num_cells,)`` for one slice).
        task: ``"binary"`` or ``"multiclass"``.
        num_classes: number of classes for multiclass.

    Returns:
        Metric name -> float array of shape ``(S,)``. Multiclass adds ``recall[c]`` per class.
        ``macro_recall`` averages recall over the classes present in the slice's targets (sklearn's
        balanced accuracy); ``macro_f1`` averages F1 over the classes present in targets or
        predictions (sklearn's ``f1_score(average="macro")``).

    Example:
        >>> out = classification_metrics(np.array([[5, 1, 2, 2]]), task="binary")
        >>> float(out["accuracy"][0]), float(out["tpr"][0])
        (0.7, 0.5)
    """
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[None, :] if counts.ndim == 1 else counts
    if task == "binary":
        tn, fp, fn, tp = (counts[:, i] for i in range(4))
        n = tn + fp + fn + tp
        return {
            "accuracy": _divide(tp + tn, n),
            "tpr": _divide(tp, tp + fn),
            "fpr": _divide(fp, fp + tn),
            "tnr": _divide(tn, tn + fp),
            "fnr": _divide(fn, fn + tp),
            "ppv": _divide(tp, tp + fp),
            "npv": _divide(tn, tn + fn),
            "f1": _divide(2 * tp, 2 * tp + fp + fn),
            "selection_rate": _divide(tp + fp, n),
            "count": n,
        }
    assert num_classes is not None
    cm = counts.reshape(-1, num_classes, num_classes)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    n = cm.sum(axis=(1, 2))
    recall = _divide(tp, support)
    f1 = _divide(2 * tp, support + predicted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {
            "accuracy": _divide(tp.sum(axis=1), n),
            "macro_f1": np.nanmean(f1, axis=1),
            "macro_recall": np.nanmean(recall, axis=1),
            "count": n,
        }
    for c in range(num_classes):
        out[f"recall[{c}]"] = recall[:, c]
    return out


def metric_names(task: str, num_classes: int | None = None) -> tuple[str, ...]:
    """Names of the metrics :func:`classification_metrics` returns for ``task``."""
    if task == "binary":
        return BINARY_METRICS
    return MULTICLASS_METRICS + tuple(f"recall[{c}]" for c in range(num_classes or 0))


class SlicedConfusion(Metric):
    """Streaming per-slice confusion counts (one bincount per batch, DDP-exact).

    State: one flat ``counts`` vector (``dist_reduce_fx="sum"``) laid out by a :class:`SliceIndex`,
    a few invalid-row counters, and, when sample ids are given, a ledger of (sample id, cell, attribute
    ids) that ``compute`` uses to drop repeated samples (the copies ``DistributedSampler`` pads in) so
    every count equals the single-process count. Nothing in ``update`` reads a value back to the host
    except the first batch after a reset, whose values are checked eagerly for a clear error.

    Args:
        task: ``"binary"`` or ``"multiclass"``.
        specs: the dimensions.
        threshold: probability at or above which a binary prediction is positive.
        num_classes: number of classes (multiclass; inferred from ``(N, C)`` scores when ``None``).
        max_slices: the most distinct values one categorical attribute may take.
        bootstrap: ``B`` Poisson bootstrap replicates counted alongside (0: none). Each sample's
            weights come from its id (:func:`~lightning_insight.metrics.bootstrap.poisson_weights`),
            so ``update`` needs ``sample_ids``; the replicate counts are one more ``index_add_`` of
            an ``(N, B)`` weight matrix per batch, summed across ranks like the counts.
        seed: seed of the bootstrap weights.

    Example:
        >>> from lightning_insight.slicing import parse_slice_specs
        >>> metric = SlicedConfusion(task="binary", specs=parse_slice_specs(["weather"]))
        >>> metric.update(torch.tensor([0.9, 0.2, 0.7]), torch.tensor([1, 0, 0]), {"weather": ["sun", "sun", "rain"]})
        >>> result = metric.compute()
        >>> result.dimensions["weather"][0], result.dimensions["weather"][1].tolist()
        (['weather=rain', 'weather=sun'], [[0, 1, 0, 0], [1, 0, 0, 1]])
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    counts: torch.Tensor
    replicates: torch.Tensor
    invalid: torch.Tensor
    ledger_ids: list[torch.Tensor]
    ledger_rows: list[torch.Tensor]

    def __init__(
        self,
        *,
        task: str,
        specs: Sequence[SliceSpec],
        threshold: float = 0.5,
        num_classes: int | None = None,
        max_slices: int = 1000,
        bootstrap: int = 0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_task(task)
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
            raise ValueError(
                f"Expected argument `bootstrap` to be an int >= 0, but got {bootstrap!r}."
            )
        self.bootstrap = bootstrap
        self.seed = seed
        self.task = task
        self.threshold = threshold
        self.num_classes = num_classes
        self.index = SliceIndex(specs, max_slices=max_slices)
        self._attribute_keys = list(self.index.attributes)
        self._layout: Layout | None = None
        self._checked = False
        self.add_state("counts", torch.zeros(1, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state(
            "replicates", torch.zeros(1, max(bootstrap, 1), dtype=torch.int32), dist_reduce_fx="sum"
        )
        self.add_state("invalid", torch.zeros(3, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("ledger_ids", [], dist_reduce_fx="cat")
        self.add_state("ledger_rows", [], dist_reduce_fx="cat")

    def _ensure_layout(self) -> Layout:
        if self.num_classes is None and self.task == "multiclass":
            raise RuntimeError("SlicedConfusion needs `num_classes` before counting.")
        layout = self.index.layout(num_cells(self.task, self.num_classes))
        if self._layout is None:
            self._zero(layout)
        elif layout is self._layout:
            return layout
        elif layout != self._layout:
            self.counts = self.index.relayout(self.counts, self._layout, layout)
            if self.bootstrap:
                self.replicates = self.index.relayout(self.replicates, self._layout, layout)
        self._layout = layout
        return layout

    def _zero(self, layout: Layout) -> None:
        device = self.counts.device
        self.counts = torch.zeros(layout.num_slots + 1, dtype=torch.int64, device=device)
        if self.bootstrap:
            # int32: a replicate count is at most 8 x the samples, exact up to 2.6e8 samples
            self.replicates = torch.zeros(
                layout.num_slots + 1, self.bootstrap, dtype=torch.int32, device=device
            )

    def update(  # type: ignore[override]
        self,
        preds: Any,
        target: Any,
        attributes: Mapping[str, Any],
        sample_ids: Any | None = None,
    ) -> None:
        """Count one batch.

        Args:
            preds: binary probabilities/labels ``(N,)``; multiclass scores ``(N, C)`` or labels ``(N,)``.
            target: labels ``(N,)``.
            attributes: attribute name -> ``N`` values.
            sample_ids: integer id per sample; repeated ids are counted once at ``compute``.
        """
        preds_t, target_t, num_classes = _format(
            preds, target, task=self.task, num_classes=self.num_classes
        )
        if num_classes is not None and self.num_classes is None:
            self.num_classes = num_classes
        if not self._checked:
            _validate(preds_t, target_t, task=self.task, num_classes=self.num_classes)
            self._checked = True
        device = self.counts.device
        n = int(preds_t.shape[0])
        ids = self.index.attribute_ids(attributes, n, device)
        layout = self._ensure_layout()
        # Every op here runs once per batch, so even no-op `to` calls are skipped.
        cells, excluded, invalid = _cells(
            _to(preds_t, device),
            _to(target_t, device),
            task=self.task,
            num_classes=self.num_classes,
            threshold=self.threshold,
        )
        # In place, as `+=` would be, without nn.Module.__setattr__.
        self.invalid.add_(invalid)
        codes = self.index._flat_codes(ids, cells, excluded, layout, categorical_ids_checked=True)
        self.counts.add_(_count(codes, layout.num_slots + 1))
        if self.bootstrap and sample_ids is None:
            raise RuntimeError(
                "SlicedConfusion(bootstrap=...) draws each sample's replicate weights from its id, "
                "but `update` got no `sample_ids`. HINT: put a 'sample_id' in the batch."
            )
        if sample_ids is not None:
            sid = _to(_as_tensor(sample_ids, "sample_ids").reshape(-1), device, torch.int64)
            if sid.shape[0] != n:
                raise ValueError(
                    f"Expected one sample id per prediction ({n}), but got {sid.shape[0]}."
                )
            if self.bootstrap:
                self._add_replicates(self.replicates, codes, sid, sign=1)
            columns = [cells.masked_fill(excluded, -1)] + [ids[k] for k in self._attribute_keys]
            self.ledger_ids.append(sid)
            self.ledger_rows.append(torch.stack(columns, dim=1))

    def _add_replicates(
        self, replicates: torch.Tensor, codes: torch.Tensor, sample_ids: torch.Tensor, *, sign: int
    ) -> None:
        """Add (or with ``sign=-1`` take back) the samples' Poisson weights at their counters."""
        # the DDP sum of int32 states comes back as int64 (torch.sum promotes)
        weights = poisson_weights(sample_ids, self.bootstrap, seed=self.seed).to(replicates.dtype)
        repeats = codes.shape[0] // max(sample_ids.shape[0], 1)  # overall + one per dimension
        replicates.index_add_(0, codes, weights.repeat(repeats, 1), alpha=sign)

    def _align(self, gather: Gather | None) -> None:
        old = self._ensure_layout()
        remaps = self.index.align(gather)
        new = self.index.layout(old.num_cells)
        if remaps or new != old:
            self.counts = self.index.relayout(self.counts, old, new, remaps)
            if self.bootstrap:
                self.replicates = self.index.relayout(self.replicates, old, new, remaps)
            self._layout = new
        if remaps:
            for i, rows in enumerate(self.ledger_rows):
                rows = rows.clone()
                for j, key in enumerate(self._attribute_keys, start=1):
                    if key in remaps:
                        remap = remaps[key].to(rows.device)
                        column = rows[:, j]
                        rows[:, j] = torch.where(column >= 0, remap[column.clamp_min(0)], column)
                self.ledger_rows[i] = rows

    def sync(
        self,
        dist_sync_fn: Callable[..., Any] | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable[..., bool] | None = None,
    ) -> None:
        """Agree on slice ids across ranks (a collective), then sync the states as torchmetrics does."""
        available = distributed_available or self.distributed_available_fn
        if should_sync and not self._is_synced and callable(available) and available():
            group = process_group or self.process_group

            def gather(obj: Any) -> list[Any]:
                out: list[Any] = [None] * torch.distributed.get_world_size(group)
                torch.distributed.all_gather_object(out, obj, group=group)
                return out

            self._align(gather)
        super().sync(dist_sync_fn, process_group, should_sync, distributed_available)

    def compute(self) -> SliceCounts:  # type: ignore[override]
        """Per-slice counts with repeated sample ids counted once.

        Raises:
            ValueError: if any row of the epoch had NaN predictions, out-of-range probabilities or
                targets (rows checked on device without a sync; the message gives the counts).
        """
        self._align(None)
        layout = self._ensure_layout()
        invalid = self.invalid.tolist()
        if any(invalid):
            details = ", ".join(
                f"{n} with {r}" for n, r in zip(invalid, _INVALID_REASONS, strict=True) if n
            )
            raise ValueError(f"Expected valid predictions and targets, but got rows {details}.")
        counts = self.counts
        replicates = self.replicates.clone() if self.bootstrap else None
        # Lists while counting; torchmetrics turns them into tensors when it syncs ("cat").
        ledger_ids: list[torch.Tensor] | torch.Tensor = self.ledger_ids
        ledger_rows: list[torch.Tensor] | torch.Tensor = self.ledger_rows
        ids: torch.Tensor | None
        rows: torch.Tensor | None
        if isinstance(ledger_ids, list):
            ids = torch.cat(ledger_ids) if ledger_ids else None
            rows = torch.cat(ledger_rows) if isinstance(ledger_rows, list) and ledger_rows else None
        else:
            ids = ledger_ids
            rows = ledger_rows if isinstance(ledger_rows, torch.Tensor) else None
        if ids is not None and rows is not None and ids.numel():
            order = torch.argsort(ids, stable=True)
            ordered = ids[order]
            repeated = order[1:][ordered[1:] == ordered[:-1]]
            if repeated.numel():
                dup = rows[repeated]
                cells = dup[:, 0]
                dup_ids = {k: dup[:, j] for j, k in enumerate(self._attribute_keys, start=1)}
                flat = self.index.bins(dup_ids, cells.clamp_min(0), cells >= 0, layout)
                counts = counts - _count(flat, layout.num_slots + 1)
                if replicates is not None:
                    self._add_replicates(replicates, flat, ids[repeated], sign=-1)
        return _read_counts(
            self.index,
            counts.cpu().numpy(),
            layout,
            self.task,
            self.num_classes,
            None if replicates is None else replicates.cpu().numpy(),
        )

    def reset(self) -> None:
        """Zero the counts, keep the index (ids stay stable across epochs)."""
        super().reset()
        self._checked = False
        if self._layout is not None:
            self._zero(self._layout)


__all__ = [
    "OVERALL",
    "SliceCounts",
    "SlicedConfusion",
    "classification_metrics",
    "metric_names",
    "num_cells",
    "slice_counts",
]
