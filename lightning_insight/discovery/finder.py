"""SliceFinder: metadata-free slice discovery from attribution-weighted features (AttributionScanner).

The estimator behind :class:`~lightning_insight.discovery.SliceDiscoveryMonitor`, usable without a
Trainer: ``SliceFinder(layer="backbone.2").fit(model, dataloader)`` returns a
:class:`~lightning_insight.discovery.SliceDiscoveryReport`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_insight.discovery.attributions import (
    METHODS,
    TARGETS,
    attribution_weighted_features,
    layer_attributions,
    resolve_layer,
    top_patch,
)
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
from lightning_insight.discovery.mosaic import attribution_mosaic
from lightning_insight.discovery.results import (
    ANNOTATION_KINDS,
    DiscoveredSlice,
    SliceDiscoveryReport,
)

__all__ = [
    "BatchReader",
    "ProbePart",
    "SliceFinder",
    "batch_sample_ids",
    "probe_hash",
    "prune_probe",
    "read_probe_batch",
    "select_probe",
]

logger = logging.getLogger(__name__)

#: ``batch -> (inputs, labels, sample_ids or None)``.
BatchReader = Callable[[Any], "tuple[torch.Tensor, Any, Any]"]
#: ``all_gather_object``-like: every rank's object, in rank order.
Gather = Callable[[Any], "list[Any]"]

_INPUT_KEYS = ("image", "input", "inputs", "x")
_LABEL_KEYS = ("target", "label", "labels", "y")
_SAMPLE_ID_KEYS = ("sample_id", "sample_ids")
_UINT64 = np.uint64
_TWO_64 = float(2**64)
# The threshold from `dataset_size` keeps this many standard deviations of headroom, so the probe set
# is short of `max_samples` only with negligible probability.
_HEADROOM_SIGMAS = 4.0


def probe_hash(
    sample_ids: Iterable[int] | np.ndarray[Any, Any], random_state: int
) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """A seeded 64-bit hash of each sample id (splitmix64 of the id mixed with the seed).

    The probe set is the ``max_samples`` ids with the smallest hashes: fixed for a seed, the same in
    every epoch and on every rank, and independent of the order batches arrive in.

    Example:
        >>> h = probe_hash([0, 1, 2], 0)
        >>> h.dtype, bool((h == probe_hash([0, 1, 2], 0)).all()), bool((h == probe_hash([0, 1, 2], 1)).any())
        (dtype('uint64'), True, False)
    """
    ids = np.asarray(list(sample_ids) if not isinstance(sample_ids, np.ndarray) else sample_ids)
    seed = np.random.SeedSequence(random_state).generate_state(1, dtype=np.uint64)[0]
    with np.errstate(over="ignore"):
        z = ids.astype(np.int64).astype(_UINT64) ^ seed
        z = z + _UINT64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _UINT64(30))) * _UINT64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _UINT64(27))) * _UINT64(0x94D049BB133111EB)
        return np.asarray(z ^ (z >> _UINT64(31)), dtype=np.uint64)


#: One kept piece of a probe set: ``(inputs, labels, sample ids, probe hashes)``, inputs on the CPU.
ProbePart = tuple[torch.Tensor, np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]


def select_probe(parts: list[ProbePart], max_samples: int) -> list[ProbePart]:
    """The ``max_samples`` samples of ``parts`` with the smallest hashes (ties by id), as one part.

    Example:
        >>> ids = np.arange(6)
        >>> part = (torch.arange(6.0)[:, None], ids % 2, ids, probe_hash(ids, 0))
        >>> kept = select_probe([part], 3)[0]
        >>> kept[2].tolist() == sorted(np.argsort(probe_hash(ids, 0))[:3].tolist())
        True
    """
    inputs = torch.cat([part[0] for part in parts])
    labels, ids, hashes = (np.concatenate([part[i] for part in parts]) for i in (1, 2, 3))
    rows = np.sort(np.lexsort((ids, hashes))[:max_samples])
    return [(inputs[torch.as_tensor(rows)], labels[rows], ids[rows], hashes[rows])]


def prune_probe(parts: list[ProbePart], max_samples: int) -> list[ProbePart]:
    """:func:`select_probe` once more than twice ``max_samples`` are held (memory stays bounded)."""
    if sum(part[1].shape[0] for part in parts) <= 2 * max_samples:
        return parts
    return select_probe(parts, max_samples)


def _find(batch: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((batch[key] for key in keys if key in batch), None)


def read_probe_batch(batch: Any) -> tuple[torch.Tensor, Any, Any]:
    """The default batch reader: ``(inputs, labels, sample_ids or None)``.

    A dict with ``"image"`` (or ``"input"``) and ``"target"`` (or ``"label"``), and optionally
    ``"sample_id"``; or a tuple ``(x, y)`` / ``(x, y, meta)`` whose ``meta`` dict may hold
    ``"sample_id"``.

    Raises:
        RuntimeError: Naming what was found, when the batch has another layout.
    """
    if isinstance(batch, Mapping):
        inputs, labels = _find(batch, _INPUT_KEYS), _find(batch, _LABEL_KEYS)
        if inputs is None or labels is None:
            raise RuntimeError(
                f"Expected a batch dict with an input key {list(_INPUT_KEYS)} and a label key "
                f"{list(_LABEL_KEYS)}, but found keys {sorted(map(str, batch))}. HINT: pass `batch_reader`."
            )
        return inputs, labels, _find(batch, _SAMPLE_ID_KEYS)
    if isinstance(batch, tuple | list) and len(batch) in (2, 3):
        meta = batch[2] if len(batch) == 3 else None
        ids = _find(meta, _SAMPLE_ID_KEYS) if isinstance(meta, Mapping) else None
        return batch[0], batch[1], ids
    raise RuntimeError(
        f"Expected a batch dict or an (x, y[, meta]) tuple, but got {type(batch).__name__}. HINT: pass "
        "`batch_reader`, a callable batch -> (inputs, labels, sample_ids or None)."
    )


def _ids_array(sample_ids: Any, count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    if isinstance(sample_ids, torch.Tensor):
        sample_ids = sample_ids.detach().cpu().numpy()
    ids = np.asarray(sample_ids).reshape(-1)
    if ids.shape[0] != count or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(
            f"Expected one integer sample id per input ({count}), but got {ids.shape[0]} of dtype {ids.dtype}."
        )
    return ids.astype(np.int64)


def batch_sample_ids(
    sample_ids: Any, *, seen: int, count: int
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """A batch's sample ids as int64, or, without ids, the samples' positions ``seen .. seen+count-1``.

    Raises:
        ValueError: Unless there is one integer id per input.

    Example:
        >>> batch_sample_ids(None, seen=4, count=2).tolist(), batch_sample_ids(torch.tensor([7, 9]), seen=0, count=2).tolist()
        ([4, 5], [7, 9])
    """
    if sample_ids is None:
        return np.arange(seen, seen + count, dtype=np.int64)
    return _ids_array(sample_ids, count)


def _labels_array(labels: Any, count: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    values = np.asarray(labels).reshape(-1)
    integral = (
        values.size == 0
        or np.issubdtype(values.dtype, np.integer)
        or (np.issubdtype(values.dtype, np.floating) and bool(np.all(values == np.round(values))))
    )
    if values.shape[0] != count or not integral or (values.size and values.min() < 0):
        raise ValueError(
            f"Expected one non-negative integer class label per input ({count}), but got "
            f"{values.shape[0]} values of dtype {values.dtype}."
        )
    return values.astype(np.int64)


def _concatenate(pools: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("ids", "hashes", "features", "targets", "probabilities", "patches")
    merged = {
        key: [pool[key] for pool in pools if pool["ids"].shape[0] and pool[key] is not None]
        for key in keys
    }
    out: dict[str, Any] = {}
    for key, parts in merged.items():
        out[key] = np.concatenate(parts) if parts else None
    if out["patches"] is not None and out["patches"].shape[0] != out["ids"].shape[0]:
        out["patches"] = None
    return out


class SliceFinder:
    """Find the slices a model fails on without metadata: cluster what the model looked at.

    For a fixed, seeded probe set of up to ``max_samples`` samples, each sample's attribution map at
    ``layer`` (GradCAM by default) weights the layer's activations into one vector (what the model
    used, :func:`~lightning_insight.discovery.attribution_weighted_features`). The vectors are
    standardised, reduced with PCA and clustered with k-means; each cluster is a slice, ranked worst
    first by the 95% Wilson lower bound of its error rate. Slice ids are matched across computes by
    shared members, so a slice keeps its id while it persists. Each slice also lists its mislabel
    candidates (model and neighbourhood disagree with the given label), and a reviewer can annotate
    slices (``core``/``spurious``/``mislabel``) and propagate "spurious" to every sample.

    Parameters are stored unchanged and checked when used (``fit``, ``update``, ``compute``) or by
    :meth:`check_params`.

    Args:
        layer: The layer (dotted module name or module) whose output is a 4-D feature map.
        method: Attribution method: ``"gradcam"`` (about 1.5x a forward pass), ``"integrated_gradients"``
            (tens of forward passes) or ``"saliency"``.
        num_slices: Number of clusters; ``None`` for ``clip(round(N / 50), 8, 64)``.
        max_samples: Size of the probe set.
        target: Class attributed: ``"predicted"`` or ``"label"``.
        random_state: Seed of the probe set, PCA and k-means.
        pca_components: PCA dimensions before clustering.
        context: Append the activations pooled away from the evidence (see
            :func:`~lightning_insight.discovery.attribution_weighted_features`). On by default: on the
            synthetic scenes the evidence block alone did not beat plain average pooling, while with
            the context block the worst slice isolated the errors the spurious cue causes.
        mislabel_fraction: Fraction of the probe set flagged as mislabel candidates.
        patch: Side of the stored top patch per sample (for mosaics); ``None`` for a third of the
            image side.
        batch_reader: ``batch -> (inputs, labels, sample_ids or None)`` for :meth:`fit`; ``None`` reads
            dict batches (``"image"``/``"target"``/``"sample_id"``) and ``(x, y[, meta])`` tuples.

    Attributes:
        report_: The last :class:`SliceDiscoveryReport`.
        sample_ids_: Probe sample ids ``(N,)``, ascending; the rows of the other per-sample arrays.
        features_: Reduced (standardised + PCA) features ``(N, d)``.
        labels_: Slice id of each probe sample ``(N,)``.
        slice_ids_: Slice ids ``(k,)`` in the order of ``centroids_``' rows.
        centroids_: Cluster centres ``(k, d)`` in the reduced space.
        targets_: Given labels ``(N,)``.
        probabilities_: Class probabilities ``(N, C)``.
        mislabel_scores_: Mislabel score per sample ``(N,)`` (see
            :func:`~lightning_insight.discovery.functional.mislabel_scores`).

    Raises:
        ValueError: From ``fit``/``update`` for a bad argument (e.g. ``max_samples < num_slices``, an
            unknown layer, method or target, a layer whose output is not 4-D).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(4, 2))
        >>> data = [(torch.rand(8, 3, 8, 8), torch.randint(0, 2, (8,))) for _ in range(4)]
        >>> report = SliceFinder("1", num_slices=3, max_samples=32).fit(model, data)
        >>> report.num_samples, len(report.slices), sum(s.size for s in report.slices)
        (32, 3, 32)
    """

    def __init__(
        self,
        layer: str | nn.Module,
        *,
        method: str = "gradcam",
        num_slices: int | None = None,
        max_samples: int = 2000,
        target: str = "predicted",
        random_state: int = 0,
        pca_components: int = 50,
        context: bool = True,
        mislabel_fraction: float = 0.05,
        patch: int | None = None,
        batch_reader: BatchReader | None = None,
    ) -> None:
        self.layer = layer
        self.method = method
        self.num_slices = num_slices
        self.max_samples = max_samples
        self.target = target
        self.random_state = random_state
        self.pca_components = pca_components
        self.context = context
        self.mislabel_fraction = mislabel_fraction
        self.patch = patch
        self.batch_reader = batch_reader
        self._pool: list[dict[str, Any]] = []
        self._position = 0
        self._cutoff: int | None = None
        self._previous: dict[int, list[int]] = {}
        self._first_seen: dict[int, int | None] = {}
        self._next_id = 0
        self._annotations: dict[int, str] = {}

    # ------------------------------------------------------------------ checks

    def check_params(self) -> None:
        """Check the parameters (``fit``/``update``/``compute`` call it; a callback may call it early).

        Raises:
            ValueError: For a value out of range, naming the argument.
            TypeError: For an argument of the wrong type.
        """
        if not isinstance(self.layer, str | nn.Module):
            raise TypeError(
                f"Expected argument `layer` to be a module name or an nn.Module, but got {type(self.layer).__name__}."
            )
        if self.method not in METHODS:
            raise ValueError(
                f"Expected argument `method` to be one of {METHODS}, but got {self.method!r}."
            )
        if self.target not in TARGETS:
            raise ValueError(
                f"Expected argument `target` to be one of {TARGETS}, but got {self.target!r}."
            )
        for name, value, low in (
            ("max_samples", self.max_samples, 2),
            ("pca_components", self.pca_components, 1),
            ("random_state", self.random_state, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"Expected argument `{name}` to be an int >= {low}, but got {value!r}."
                )
        for name, optional in (("num_slices", self.num_slices), ("patch", self.patch)):
            if optional is not None and (
                isinstance(optional, bool) or not isinstance(optional, int) or optional < 1
            ):
                raise ValueError(
                    f"Expected argument `{name}` to be None or a positive int, but got {optional!r}."
                )
        if self.num_slices is not None and self.max_samples < self.num_slices:
            raise ValueError(
                f"Expected argument `max_samples` ({self.max_samples}) to be at least `num_slices` "
                f"({self.num_slices}): every slice needs samples. HINT: raise `max_samples` or lower `num_slices`."
            )
        fraction = self.mislabel_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0.0 <= fraction <= 1.0
        ):
            raise ValueError(
                f"Expected argument `mislabel_fraction` to be a float in [0, 1], but got {fraction!r}."
            )
        if not isinstance(self.context, bool):
            raise TypeError(
                f"Expected argument `context` to be a bool, but got {type(self.context).__name__}."
            )
        if self.batch_reader is not None and not callable(self.batch_reader):
            raise TypeError(
                f"Expected argument `batch_reader` to be callable, but got {type(self.batch_reader).__name__}."
            )

    @property
    def _layer_name(self) -> str:
        return self.layer if isinstance(self.layer, str) else type(self.layer).__name__

    # ------------------------------------------------------------------ streaming

    def reset(self) -> None:
        """Forget the stored probe samples (slice ids, first-seen epochs and annotations stay)."""
        self._pool = []
        self._position = 0
        self._cutoff = None

    def _threshold(self, dataset_size: int | None) -> int:
        limit = 2**64 - 1
        if dataset_size is not None and dataset_size > 0:
            wanted = self.max_samples + _HEADROOM_SIGMAS * math.sqrt(self.max_samples) + 8
            if wanted < dataset_size:
                limit = int(wanted / dataset_size * _TWO_64)
        return limit if self._cutoff is None else min(limit, self._cutoff)

    def update(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: Any,
        sample_ids: Any = None,
        *,
        dataset_size: int | None = None,
    ) -> None:
        """Attribute and store the probe-set members of one batch.

        Only samples whose seeded hash (:func:`probe_hash`) can still be among the ``max_samples``
        smallest are attributed: below ``max_samples / dataset_size`` (with headroom) when the data
        set size is known, and below the current ``max_samples``-th smallest stored hash once that
        many are stored. The model is used as it is (put it in ``eval()`` first).

        Args:
            model: The classifier.
            inputs: The batch's inputs, on the model's device.
            labels: Given labels ``(N,)``.
            sample_ids: Integer id per sample; ``None`` numbers samples in the order they arrive on
                this process (under DDP pass real ids, or the ranks' numbers collide).
            dataset_size: Number of samples in the pass (all ranks), if known.
        """
        self.check_params()
        count = int(inputs.shape[0])
        if sample_ids is None:
            ids = np.arange(self._position, self._position + count, dtype=np.int64)
        else:
            ids = _ids_array(sample_ids, count)
        self._position += count
        label_array = _labels_array(labels, count)
        hashes = probe_hash(ids, self.random_state)
        keep = hashes <= _UINT64(self._threshold(dataset_size))
        if not keep.any():
            return
        chosen = torch.from_numpy(np.flatnonzero(keep)).to(inputs.device)
        x = inputs.index_select(0, chosen)
        y = torch.from_numpy(label_array[keep]).to(inputs.device)
        result = layer_attributions(
            model, x, layer=self.layer, method=self.method, target=self.target, labels=y
        )
        features = attribution_weighted_features(
            result.activations.float(), result.maps.float(), context=self.context
        )
        patches = None
        if x.ndim == 4 and x.is_floating_point():
            side = self.patch or max(1, min(x.shape[-2:]) // 3)
            crops = top_patch(x.detach(), result.maps, patch=min(side, *x.shape[-2:]))
            patches = crops.to(torch.float16).cpu().numpy()
        self._pool.append(
            {
                "ids": ids[keep],
                "hashes": hashes[keep],
                "features": features.cpu().numpy().astype(np.float32),
                "targets": label_array[keep],
                "probabilities": torch.softmax(result.logits.float(), dim=1).cpu().numpy(),
                "patches": patches,
            }
        )
        self._prune()

    def _prune(self) -> None:
        hashes = np.concatenate([part["hashes"] for part in self._pool])
        if hashes.shape[0] < self.max_samples:
            return
        ids = np.concatenate([part["ids"] for part in self._pool])
        order = np.lexsort((ids, hashes))
        self._cutoff = int(hashes[order[self.max_samples - 1]])
        if hashes.shape[0] > 2 * self.max_samples:
            kept = order[: self.max_samples]
            pooled = _concatenate(self._pool)
            self._pool = [
                {key: None if value is None else value[kept] for key, value in pooled.items()}
            ]

    def _probe_set(self, gather: Gather | None) -> dict[str, Any]:
        local = _concatenate(self._pool) if self._pool else None
        if local is None or local["ids"] is None:
            local = {
                "ids": np.zeros(0, dtype=np.int64),
                "hashes": np.zeros(0, dtype=np.uint64),
                "features": None,
                "targets": None,
                "probabilities": None,
                "patches": None,
            }
        pooled = _concatenate(list(gather(local))) if gather is not None else local
        if pooled["ids"] is None or pooled["ids"].shape[0] < 2:
            count = 0 if pooled["ids"] is None else pooled["ids"].shape[0]
            raise RuntimeError(
                f"Expected at least 2 probe samples to cluster, but got {count}. HINT: call `update()` "
                "with batches first (or `fit()`), and check `max_samples`."
            )
        # First occurrence wins for a repeated id (e.g. DistributedSampler's padding); then the
        # max_samples smallest hashes; rows end up sorted by sample id on every rank.
        _, first = np.unique(pooled["ids"], return_index=True)
        if first.shape[0] > self.max_samples:
            by_hash = np.lexsort((pooled["ids"][first], pooled["hashes"][first]))
            first = first[np.sort(by_hash[: self.max_samples])]
        return {key: None if value is None else value[first] for key, value in pooled.items()}

    # ------------------------------------------------------------------ compute

    def compute(
        self,
        *,
        epoch: int | None = None,
        step: int | None = None,
        source: str = "data",
        gather: Gather | None = None,
    ) -> SliceDiscoveryReport:
        """Cluster the stored probe samples into ranked slices.

        Args:
            epoch: Epoch recorded in the report and as ``first_seen_epoch`` of new slices.
            step: Global step recorded in the report.
            source: What was evaluated.
            gather: An ``all_gather_object``-like callable (object -> list of every rank's object):
                pools every rank's probe samples first, so every rank computes the same report. A
                collective: under DDP every rank must call ``compute``.

        Raises:
            RuntimeError: If fewer than 2 probe samples were stored.
        """
        self.check_params()
        probe = self._probe_set(gather)
        ids: np.ndarray[Any, np.dtype[np.int64]] = probe["ids"]
        targets: np.ndarray[Any, np.dtype[np.int64]] = probe["targets"]
        probabilities: np.ndarray[Any, Any] = probe["probabilities"]
        n, num_classes = probabilities.shape
        predictions = probabilities.argmax(axis=1)
        confidence = probabilities.max(axis=1)
        wrong = predictions != targets
        k = default_num_slices(n) if self.num_slices is None else min(self.num_slices, n)
        clustering = cluster_features(
            probe["features"],
            num_clusters=k,
            n_components=self.pca_components,
            random_state=self.random_state,
        )
        members = [clustering.members(cluster) for cluster in range(clustering.centroids.shape[0])]
        matched = match_clusters(self._previous, [ids[rows].tolist() for rows in members])
        slice_ids: list[int] = []
        for cluster in range(len(members)):
            if cluster in matched:
                slice_ids.append(matched[cluster])
            else:
                slice_ids.append(self._next_id)
                self._first_seen[self._next_id] = epoch
                self._next_id += 1

        scores = mislabel_scores(clustering.reduced, targets, probabilities)
        flagged_count = math.ceil(self.mislabel_fraction * n) if self.mislabel_fraction else 0
        suspicious = np.argsort(-scores, kind="stable")[:flagged_count]
        flagged = np.zeros(n, dtype=bool)
        flagged[suspicious] = True
        overall = float(wrong.mean())

        slices: list[DiscoveredSlice] = []
        for cluster, rows in enumerate(members):
            size = int(rows.shape[0])
            errors = int(wrong[rows].sum())
            error_rate = errors / size if size else float("nan")
            candidates = rows[flagged[rows]]
            candidates = candidates[np.argsort(-scores[candidates], kind="stable")]
            slice_id = slice_ids[cluster]
            slices.append(
                DiscoveredSlice(
                    slice_id=slice_id,
                    sample_ids=tuple(int(i) for i in ids[rows]),
                    size=size,
                    accuracy=1.0 - error_rate,
                    error_rate=error_rate,
                    lift=error_rate / overall if overall > 0 else float("nan"),
                    mean_confidence=float(confidence[rows].mean()) if size else float("nan"),
                    confusion=confusion_counts(targets[rows], predictions[rows], num_classes),
                    score=wilson_lower_bound(errors, size),
                    first_seen_epoch=self._first_seen.get(slice_id),
                    mislabel_candidates=tuple(int(i) for i in ids[candidates]),
                    annotation=self._annotations.get(slice_id),
                )
            )
        slices.sort(key=lambda s: (-s.score if not math.isnan(s.score) else math.inf, s.slice_id))

        order = np.argsort(slice_ids)
        self.sample_ids_ = ids
        self.features_ = clustering.reduced
        self.slice_ids_ = np.asarray(slice_ids, dtype=np.int64)[order]
        self.centroids_ = clustering.centroids[order]
        self.labels_ = np.asarray(slice_ids, dtype=np.int64)[clustering.labels]
        self.targets_ = targets
        self.probabilities_ = probabilities
        self.mislabel_scores_ = scores
        self._patches = probe["patches"]
        self._row_of = {int(i): row for row, i in enumerate(ids)}
        self._previous = {slice_ids[c]: ids[rows].tolist() for c, rows in enumerate(members)}
        # An id never comes back once its slice is gone (matching only looks one compute back).
        self._first_seen = {i: self._first_seen.get(i) for i in slice_ids}
        self.report_ = SliceDiscoveryReport(
            slices=tuple(slices),
            num_samples=n,
            overall_error_rate=overall,
            method=self.method,
            layer=self._layer_name,
            epoch=epoch,
            step=step,
            source=source,
        )
        logger.info(
            "Slice discovery (%s at %s): %d slices over %d probe samples; worst %s.",
            self.method,
            self._layer_name,
            len(slices),
            n,
            f"{slices[0].name} error rate {slices[0].error_rate:.3g} (lift {slices[0].lift:.3g})"
            if slices
            else "none",
        )
        return self.report_

    def fit(
        self,
        model: nn.Module,
        dataloader: Iterable[Any],
        *,
        epoch: int | None = None,
        progress: bool = False,
    ) -> SliceDiscoveryReport:
        """One pass over ``dataloader``: :meth:`reset`, :meth:`update` per batch, :meth:`compute`.

        The model is put in ``eval()`` for the pass and restored after. Returns the report (also
        kept as ``report_``), as the issue's API asks, rather than ``self``.

        Args:
            model: The classifier.
            dataloader: Batches the ``batch_reader`` understands; without sample ids, samples are
                numbered in loader order.
            epoch: Recorded in the report.
            progress: Show a ``tqdm`` progress bar over the batches.
        """
        self.check_params()
        resolve_layer(model, self.layer)
        self.reset()
        reader = self.batch_reader or read_probe_batch
        dataset_size: int | None = None
        if isinstance(dataloader, torch.utils.data.DataLoader):
            try:
                dataset_size = len(dataloader.sampler)  # type: ignore[arg-type]
            except TypeError:
                dataset_size = None
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        was_training = model.training
        model.eval()
        description = f"{self.method} attributions at {self._layer_name}"
        logger.info("Computing %s.", description)
        if progress:
            from tqdm.auto import tqdm

            dataloader = tqdm(dataloader, desc=description, unit="batch")
        try:
            for batch in dataloader:
                inputs, labels, ids = reader(batch)
                self.update(model, inputs.to(device), labels, ids, dataset_size=dataset_size)
        finally:
            model.train(was_training)
        return self.compute(epoch=epoch)

    # ------------------------------------------------------------------ review

    def _fitted(self) -> SliceDiscoveryReport:
        report: SliceDiscoveryReport | None = getattr(self, "report_", None)
        if report is None:
            raise RuntimeError(
                "Expected a fitted SliceFinder, but `compute()` has not run. HINT: call `fit()` or "
                "`update()` then `compute()` first."
            )
        return report

    def annotate(self, slice_id: int, kind: str) -> None:
        """Record what a reviewer says about a slice (kept across computes while the id persists).

        Args:
            slice_id: A slice id of the last report.
            kind: ``"core"`` (the model uses the right evidence), ``"spurious"`` (a shortcut) or
                ``"mislabel"`` (the labels are wrong).

        Raises:
            ValueError: For an unknown kind or a slice id not in the last report.
            RuntimeError: Before the first compute.
        """
        if kind not in ANNOTATION_KINDS:
            raise ValueError(
                f"Expected argument `kind` to be one of {ANNOTATION_KINDS}, but got {kind!r}."
            )
        report = self._fitted()
        known = sorted(s.slice_id for s in report.slices)
        if slice_id not in known:
            raise ValueError(
                f"Expected argument `slice_id` to be one of the report's slice ids {known}, but got {slice_id!r}."
            )
        self._annotations[int(slice_id)] = kind
        self.report_ = dataclasses.replace(
            report,
            slices=tuple(
                dataclasses.replace(s, annotation=kind) if s.slice_id == slice_id else s
                for s in report.slices
            ),
        )

    def load_annotations(self, path: str | PathLike[str]) -> None:
        """Read annotations from a YAML mapping ``{slice_id: kind}`` (``3`` or ``slice_3`` as key).

        Raises:
            ValueError: If the file is not such a mapping (and as :meth:`annotate`).
        """
        import yaml

        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, Mapping):
            raise ValueError(
                f"Expected {str(path)!r} to hold a mapping of slice id -> kind, but got {type(data).__name__}."
            )
        for key, kind in data.items():
            text = str(key).removeprefix("slice_")
            if not text.lstrip("-").isdigit():
                raise ValueError(
                    f"Expected slice ids like 3 or 'slice_3' as keys in {str(path)!r}, but got {key!r}."
                )
            self.annotate(int(text), kind)

    def propagate(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Probability that each probe sample (rows of ``sample_ids_``) relies on a spurious feature.

        The members of slices annotated ``"spurious"`` (1) and ``"core"`` (0) are the labelled points
        of a ``LabelSpreading`` over the reduced features.

        Raises:
            RuntimeError: Before the first compute.
            ValueError: Without at least one spurious and one core slice.
        """
        self._fitted()
        known = np.full(self.labels_.shape[0], -1, dtype=np.int64)
        for slice_id, kind in self._annotations.items():
            if kind in ("spurious", "core"):
                known[self.labels_ == slice_id] = 1 if kind == "spurious" else 0
        return spurious_probability(self.features_, known)

    def mosaic(
        self, slice_id: int, columns: int = 8, *, count: int = 32
    ) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The top patches of a slice's ``count`` most central members as one RGB image.

        Frames are coloured by confusion cell (binary tasks; grey otherwise). Patches are shown as
        stored when their values lie in ``[0, 1]``, otherwise min-max scaled together.

        Raises:
            RuntimeError: Before the first compute, or when the inputs were not images.
            KeyError: For a slice id not in the last report.
        """
        report = self._fitted()
        found = report.slice(slice_id)
        if self._patches is None:
            raise RuntimeError(
                "Expected stored image patches, but the inputs were not (N, C, H, W) float images."
            )
        rows = np.array([self._row_of[i] for i in found.sample_ids[:count]], dtype=np.int64)
        patches = self._patches[rows].astype(np.float32)
        if patches.shape[1] == 1:
            patches = np.repeat(patches, 3, axis=1)
        low, high = float(patches.min()), float(patches.max())
        if low < 0.0 or high > 1.0:
            patches = (patches - low) / max(high - low, 1e-12)
        cells: list[str | None] | None = None
        if self.probabilities_.shape[1] == 2:
            predicted = self.probabilities_[rows].argmax(axis=1)
            given = self.targets_[rows]
            names = {(1, 1): "TP", (0, 0): "TN", (0, 1): "FP", (1, 0): "FN"}
            cells = [names.get((int(t), int(p))) for t, p in zip(given, predicted, strict=True)]
        return attribution_mosaic(patches, cells, columns=columns)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (slice members, first-seen epochs, next id, annotations)."""
        return {
            "previous": [[int(i), [int(s) for s in ids]] for i, ids in self._previous.items()],
            "first_seen": [[int(i), epoch] for i, epoch in self._first_seen.items()],
            "next_id": int(self._next_id),
            "annotations": [[int(i), kind] for i, kind in self._annotations.items()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (missing keys keep their defaults)."""
        self._previous = {int(i): [int(s) for s in ids] for i, ids in state.get("previous", [])}
        self._first_seen = {
            int(i): None if epoch is None else int(epoch)
            for i, epoch in state.get("first_seen", [])
        }
        self._next_id = int(state.get("next_id", 0))
        self._annotations = {int(i): str(kind) for i, kind in state.get("annotations", [])}
