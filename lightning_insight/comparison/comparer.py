"""Compare where two models look: :class:`AttributionComparer` (estimator) and its functional steps.

Both models' attribution maps for the same class are taken on one seeded probe set, upsampled to the
input size, rectified and normalised per image to sum 1, so each cell of a regular ``grid x grid``
partition holds the share of a model's evidence that falls in it. The cells either model relies on most
become *regions*; one shared extractor (model A's feature map, average-pooled over the cell) embeds them,
and k-means groups regions that look alike. Per cluster, ``attribution_b - attribution_a`` says which model relies on
that kind of region more, with a bootstrap interval over images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lightning_insight.comparison.results import (
    AttributionComparisonReport,
    ComparisonCluster,
    Exemplar,
)
from lightning_insight.comparison.visual import ComparisonEvidence, small_maps
from lightning_insight.discovery.attributions import (
    METHODS,
    TARGETS,
    as_logits,
    layer_attributions,
    resolve_layer,
)
from lightning_insight.discovery.clustering import cluster_features
from lightning_insight.discovery.finder import (
    ProbePart,
    batch_sample_ids,
    probe_hash,
    prune_probe,
    read_probe_batch,
)

__all__ = ["AttributionComparer", "cell_boxes", "cell_masses", "default_num_clusters"]

logger = logging.getLogger(__name__)

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]

#: How regions are embedded (besides an ``nn.Module``): see :class:`AttributionComparer`.
EMBEDDINGS: tuple[str, ...] = ("reference", "both")

#: Attributions are computed this many probe images at a time.
_CHUNK = 128


def default_num_clusters(num_regions: int) -> int:
    """``clip(round(R / 40), 4, 16)``, and never more than ``R``: clusters of about 40 regions.

    Example:
        >>> default_num_clusters(100), default_num_clusters(1000), default_num_clusters(3)
        (4, 16, 3)
    """
    return int(min(num_regions, np.clip(round(num_regions / 40), 4, 16)))


def cell_boxes(height: int, width: int, grid: int) -> list[tuple[int, int, int, int]]:
    """The ``grid x grid`` cells of an ``height x width`` input as ``(x0, y0, x1, y1)``, row-major.

    Example:
        >>> cell_boxes(4, 6, 2)
        [(0, 0, 3, 2), (3, 0, 6, 2), (0, 2, 3, 4), (3, 2, 6, 4)]
    """
    ys = np.round(np.linspace(0, height, grid + 1)).astype(int)
    xs = np.round(np.linspace(0, width, grid + 1)).astype(int)
    return [
        (int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1]))
        for i in range(grid)
        for j in range(grid)
    ]


def cell_masses(maps: torch.Tensor, size: tuple[int, int], grid: int) -> torch.Tensor:
    """Share of each image's positive attribution per grid cell, ``(N, grid * grid)`` summing to 1.

    ``maps`` ``(N, h, w)`` is upsampled (bilinear) to ``size``, rectified and normalised per image. An
    image without positive attribution gets zeros: the model shows no evidence for the class anywhere
    (spreading it uniformly would invent regions the model relies on).

    Example:
        >>> maps = torch.tensor([[[3.0, 1.0], [0.0, -1.0]], [[0.0, 0.0], [0.0, -2.0]]])
        >>> cell_masses(maps, (2, 2), 2)
        tensor([[0.7500, 0.2500, 0.0000, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000]])
    """
    height, width = size
    upsampled = F.interpolate(
        maps.detach().float()[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0].clamp_min(0)
    total = upsampled.sum(dim=(1, 2), keepdim=True)
    weights = torch.where(total > 0, upsampled / total.clamp_min(1e-30), 0.0)
    return torch.stack(
        [
            weights[:, y0:y1, x0:x1].sum(dim=(1, 2))
            for x0, y0, x1, y1 in cell_boxes(height, width, grid)
        ],
        dim=1,
    )


def _cell_features(activations: torch.Tensor, size: tuple[int, int], grid: int) -> torch.Tensor:
    """Activations ``(N, K, h, w)`` average-pooled over each cell's footprint: ``(N, grid * grid, K)``."""
    height, width = size
    h, w = activations.shape[-2:]
    pooled = []
    for x0, y0, x1, y1 in cell_boxes(height, width, grid):
        fy0 = min(h - 1, y0 * h // height)
        fx0 = min(w - 1, x0 * w // width)
        fy1 = max(fy0 + 1, -(-y1 * h // height))
        fx1 = max(fx0 + 1, -(-x1 * w // width))
        pooled.append(activations[:, :, fy0:fy1, fx0:fx1].float().mean(dim=(2, 3)))
    return torch.stack(pooled, dim=1)


def _describe(value: object) -> str:
    return f"{value!r}" if isinstance(value, str) else type(value).__name__


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ValueError(f"Expected argument `{name}` to be {bound}, but got {value!r}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class _ProbeSet:
    inputs: torch.Tensor
    labels: IntArray
    sample_ids: IntArray


class AttributionComparer:
    """Where do two models' attributions differ, and on what kind of image region?

    ``fit`` takes a seeded probe set (the ``max_samples`` sample ids with the smallest
    :func:`~lightning_insight.discovery.probe_hash`), attributes both models at their layers for the
    same class, and splits each image into a ``grid x grid`` partition whose cells hold each model's
    share of the evidence. Per image the ``top_regions`` cells of A and of B (their union) are kept,
    embedded with model A's feature map at ``layer_a`` average-pooled over the cell, and clustered
    (:func:`~lightning_insight.discovery.cluster_features`). Each cluster reports
    ``difference = attribution_b - attribution_a`` with a 95% bootstrap interval over images; clusters are ranked by
    ``|difference| x regions``.

    The models are used as they are: call ``.eval()`` first so batch-norm statistics stay fixed.

    Args:
        layer_a: Model A's layer (dotted module name) with a 4-D feature map.
        layer_b: Model B's layer; ``None`` for the same name as ``layer_a``.
        method: Attribution method, one of ``"gradcam"`` (at the layers), ``"integrated_gradients"``
            (captum's layer IG at the layers), ``"input_integrated_gradients"`` (IG on the input, pooled
            to the layer's grid) or ``"saliency"``; see
            :func:`~lightning_insight.discovery.layer_attributions`.
        num_clusters: ``k``; ``None`` for ``clip(round(regions / 40), 4, 16)``.
        max_samples: Size of the probe set.
        grid: Cells per side of the partition.
        top_regions: Cells kept per image and model, in ``[1, grid * grid]``.
        random_state: Seed of the probe set, the clustering and the bootstrap.
        bootstrap: Bootstrap resamples per cluster.
        target: ``"label"`` (attribute the labelled class) or ``"predicted"`` (model A's prediction,
            attributed by both models).
        embedding_layer: Model A's layer whose feature map embeds the regions; ``None`` for
            ``layer_a``.
        embedding: What embeds a region: ``"reference"`` (model A's feature map at
            ``embedding_layer``, averaged over the cell), ``"both"`` (that, next to model B's feature
            map at ``layer_b``: regions only one model has learned to see are told apart too; on the
            planted-shift scenes the top cluster is the cue corner on every training seed tried,
            against one seed of four with ``"reference"``), or any ``nn.Module`` returning a 4-D
            feature map of the inputs (a shared, separate extractor, as IMACS).
        n_steps: Integration steps of the two Integrated Gradients methods.

    Raises:
        ValueError: In ``fit``, for an argument out of range, ``max_samples < num_clusters``, a layer
            missing in a model, models that do not take the same inputs or do not return the same
            number of classes, or fewer than 2 probe regions.
        TypeError: In ``fit``, if a model is not an ``nn.Module``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(4, 2))
        >>> batches = [(torch.rand(8, 3, 8, 8), torch.randint(0, 2, (8,)))]
        >>> report = AttributionComparer("1", num_clusters=2, grid=2, bootstrap=20).fit(model, model, batches)
        >>> report.num_samples, len(report.clusters), report.clusters[0].difference
        (8, 2, 0.0)
    """

    def __init__(
        self,
        layer_a: str,
        layer_b: str | None = None,
        *,
        method: str = "gradcam",
        num_clusters: int | None = None,
        max_samples: int = 500,
        grid: int = 4,
        top_regions: int = 2,
        random_state: int = 0,
        bootstrap: int = 200,
        target: str = "label",
        embedding_layer: str | None = None,
        n_steps: int = 16,
        embedding: str | nn.Module = "reference",
    ) -> None:
        self.layer_a = layer_a
        self.layer_b = layer_b
        self.method = method
        self.num_clusters = num_clusters
        self.max_samples = max_samples
        self.grid = grid
        self.top_regions = top_regions
        self.random_state = random_state
        self.bootstrap = bootstrap
        self.target = target
        self.embedding_layer = embedding_layer
        self.n_steps = n_steps
        self.embedding = embedding

    def check_params(self) -> None:
        """Validate the constructor arguments (``fit`` calls this first).

        Raises:
            ValueError: For a value out of range, or ``max_samples < num_clusters``.
            TypeError: For a layer that is not a string.
        """
        for name in ("layer_a", "layer_b", "embedding_layer"):
            value = getattr(self, name)
            if not (isinstance(value, str) and value) and not (name != "layer_a" and value is None):
                raise TypeError(
                    f"Expected argument `{name}` to be a module name (a non-empty str), but got "
                    f"{_describe(value)}."
                )
        if self.method not in METHODS:
            raise ValueError(
                f"Expected argument `method` to be one of {METHODS}, but got {self.method!r}."
            )
        if self.target not in TARGETS:
            raise ValueError(
                f"Expected argument `target` to be one of {TARGETS}, but got {self.target!r}."
            )
        _check_int("max_samples", self.max_samples, 2)
        _check_int("grid", self.grid, 1)
        _check_int("top_regions", self.top_regions, 1, self.grid * self.grid)
        _check_int("random_state", self.random_state, 0)
        _check_int("bootstrap", self.bootstrap, 1)
        _check_int("n_steps", self.n_steps, 1)
        if not isinstance(self.embedding, nn.Module) and self.embedding not in EMBEDDINGS:
            raise ValueError(
                f"Expected argument `embedding` to be one of {EMBEDDINGS} or an nn.Module, but got "
                f"{self.embedding!r}."
            )
        if self.num_clusters is not None:
            _check_int("num_clusters", self.num_clusters, 2)
            if self.max_samples < self.num_clusters:
                raise ValueError(
                    f"Expected argument `max_samples` to be at least `num_clusters` "
                    f"({self.num_clusters}), but got {self.max_samples}. HINT: raise `max_samples` "
                    "or lower `num_clusters`."
                )

    def fit(
        self, model_a: nn.Module, model_b: nn.Module, dataloader: Iterable[Any]
    ) -> AttributionComparisonReport:
        """Compare ``model_a`` and ``model_b`` on the probe set drawn from ``dataloader``.

        Args:
            model_a: The reference model; its features at ``layer_a`` embed the regions.
            model_b: The model compared with it (same inputs, same classes).
            dataloader: Batches readable by :func:`~lightning_insight.discovery.finder.read_probe_batch`
                (a dict with ``"image"``/``"target"``/``"sample_id"`` or an ``(x, y[, meta])`` tuple).
                Without sample ids, a sample's position in the iteration is its id.

        Returns:
            The :class:`~lightning_insight.comparison.AttributionComparisonReport`, also kept as
            ``report_``; the probe images and both models' maps are kept as ``evidence_``
            (:class:`~lightning_insight.comparison.visual.ComparisonEvidence`) for the pictures.
        """
        self.check_params()
        for name, model in (("model_a", model_a), ("model_b", model_b)):
            if not isinstance(model, nn.Module):
                raise TypeError(
                    f"Expected argument `{name}` to be an nn.Module, but got {type(model).__name__}."
                )
        layer_b = self.layer_a if self.layer_b is None else self.layer_b
        embedding = self.layer_a if self.embedding_layer is None else self.embedding_layer
        for name, model, layer, argument in (
            ("model_a", model_a, self.layer_a, "layer_a"),
            ("model_a", model_a, embedding, "embedding_layer"),
            ("model_b", model_b, layer_b, "layer_b" if self.layer_b is not None else "layer_a"),
        ):
            try:
                resolve_layer(model, layer)
            except ValueError as error:
                raise ValueError(
                    f"Expected argument `{argument}` to name a module of `{name}`: {error}"
                ) from error
        probe = self._probe_set(model_a, model_b, dataloader)
        self.report_, self.evidence_ = self._compare(model_a, model_b, layer_b, probe)
        return self.report_

    # ------------------------------------------------------------------ probe set

    def _probe_set(
        self, model_a: nn.Module, model_b: nn.Module, dataloader: Iterable[Any]
    ) -> _ProbeSet:
        kept: list[ProbePart] = []
        seen = 0
        checked = False
        for batch in dataloader:
            inputs, labels, sample_ids = read_probe_batch(batch)
            inputs = torch.as_tensor(inputs)
            count = int(inputs.shape[0])
            if not checked:
                _check_compatible(model_a, model_b, inputs[:2])  # two samples tell
                checked = True
            ids = batch_sample_ids(sample_ids, seen=seen, count=count)
            seen += count
            label_array = np.asarray(torch.as_tensor(labels).cpu()).reshape(-1).astype(np.int64)
            if ids.shape[0] != count or label_array.shape[0] != count:
                raise ValueError(
                    f"Expected one label and one sample id per input ({count}), but got "
                    f"{label_array.shape[0]} labels and {ids.shape[0]} ids."
                )
            kept.append(
                (inputs.detach().cpu(), label_array, ids, probe_hash(ids, self.random_state))
            )
            kept = prune_probe(kept, self.max_samples)
        if not kept:
            raise ValueError("Expected `dataloader` to yield at least one batch, but got none.")
        inputs, labels, ids, hashes = (
            torch.cat([part[0] for part in kept]),
            *(np.concatenate([part[i] for part in kept]) for i in (1, 2, 3)),
        )
        _, first = np.unique(ids, return_index=True)
        order = first[np.lexsort((ids[first], hashes[first]))][: self.max_samples]
        # Sorted by sample id: the same probe set gives the same chunks whatever the batch order.
        rows = order[np.argsort(ids[order], kind="stable")]
        return _ProbeSet(
            inputs=inputs[torch.as_tensor(rows)], labels=labels[rows], sample_ids=ids[rows]
        )

    # ------------------------------------------------------------------ comparison

    def _compare(
        self, model_a: nn.Module, model_b: nn.Module, layer_b: str, probe: _ProbeSet
    ) -> tuple[AttributionComparisonReport, ComparisonEvidence]:
        size = (int(probe.inputs.shape[-2]), int(probe.inputs.shape[-1]))
        device = next((p.device for p in model_a.parameters()), torch.device("cpu"))
        device_b = next((p.device for p in model_b.parameters()), device)
        masses_a, masses_b, features, predictions_a, predictions_b = [], [], [], [], []
        maps_a, maps_b = [], []
        n = probe.inputs.shape[0]
        logger.info(
            "Comparing attributions of two models on %d probe images (%s, grid %d).",
            n,
            self.method,
            self.grid,
        )
        for start in range(0, n, _CHUNK):
            x = probe.inputs[start : start + _CHUNK]
            labels = torch.as_tensor(probe.labels[start : start + _CHUNK])
            result_a = layer_attributions(
                model_a,
                x.to(device),
                layer=self.layer_a,
                method=self.method,
                target=self.target,
                labels=labels.to(device),
                n_steps=self.n_steps,
            )
            result_b = layer_attributions(
                model_b,
                x.to(device_b),
                layer=layer_b,
                method=self.method,
                target="label",
                labels=result_a.targets.to(device_b),
                n_steps=self.n_steps,
            )
            maps_a.append(small_maps(result_a.maps))
            maps_b.append(small_maps(result_b.maps))
            masses_a.append(cell_masses(result_a.maps, size, self.grid).cpu())
            masses_b.append(cell_masses(result_b.maps, size, self.grid).cpu())
            features.append(self._embed(model_a, result_a.activations, result_b.activations, x))
            predictions_a.append(result_a.logits.argmax(dim=1).cpu())
            predictions_b.append(result_b.logits.argmax(dim=1).cpu())
        attribution_a = torch.cat(masses_a).double().numpy()
        attribution_b = torch.cat(masses_b).double().numpy()
        correct_a = torch.cat(predictions_a).numpy() == probe.labels
        correct_b = torch.cat(predictions_b).numpy() == probe.labels

        cells = self.grid * self.grid
        chosen = np.zeros((n, cells), dtype=bool)
        top = self.top_regions
        # Stable sort on the negated mass: ties keep row-major cell order, so the choice is seeded.
        for mass in (attribution_a, attribution_b):
            best = np.argsort(-mass, axis=1, kind="stable")[:, :top]
            # A cell without evidence is never a region the model relies on.
            picked = np.take_along_axis(mass, best, axis=1) > 0
            rows = np.broadcast_to(np.arange(n)[:, None], best.shape)
            chosen[rows[picked], best[picked]] = True
        images, cell = np.nonzero(chosen)
        if images.shape[0] < 2:
            raise ValueError(
                f"Expected at least 2 regions to cluster, but got {images.shape[0]}. HINT: raise "
                "`max_samples`, `grid` or `top_regions`."
            )
        embedded = torch.cat(features).double().numpy()[images, cell]
        k = (
            default_num_clusters(images.shape[0])
            if self.num_clusters is None
            else min(self.num_clusters, images.shape[0])
        )
        clustering = cluster_features(embedded, num_clusters=k, random_state=self.random_state)
        boxes = cell_boxes(size[0], size[1], self.grid)
        region_a = attribution_a[images, cell]
        region_b = attribution_b[images, cell]
        clusters = [
            self._cluster(
                np.flatnonzero(clustering.labels == index),
                index,
                images=images,
                cell=cell,
                region_a=region_a,
                region_b=region_b,
                correct_a=correct_a,
                correct_b=correct_b,
                sample_ids=probe.sample_ids,
                boxes=boxes,
            )
            for index in range(int(clustering.labels.max()) + 1)
            if np.any(clustering.labels == index)
        ]
        # Rank by |difference| x support; ties by the first exemplar, so the order is deterministic.
        clusters.sort(key=lambda c: (-abs(c.difference) * c.regions, c.exemplars[0]))
        ranked = tuple(replace(c, cluster_id=rank) for rank, c in enumerate(clusters))
        report = AttributionComparisonReport(
            layer_a=self.layer_a,
            layer_b=layer_b,
            method=self.method,
            target=self.target,
            grid=self.grid,
            top_regions=self.top_regions,
            input_size=size,
            num_samples=int(n),
            num_regions=int(images.shape[0]),
            accuracy_a=float(correct_a.mean()),
            accuracy_b=float(correct_b.mean()),
            random_state=self.random_state,
            bootstrap=self.bootstrap,
            clusters=ranked,
        )
        evidence = ComparisonEvidence(
            inputs=probe.inputs,
            sample_ids=probe.sample_ids,
            maps_a=torch.cat(maps_a),
            maps_b=torch.cat(maps_b),
            masses_a=attribution_a,
            masses_b=attribution_b,
        )
        return report, evidence

    def _embed(
        self,
        model_a: nn.Module,
        activations_a: torch.Tensor,
        activations_b: torch.Tensor,
        inputs: torch.Tensor,
    ) -> torch.Tensor:
        """Cell features ``(N, cells, D)`` of a chunk, as ``embedding`` asks."""
        size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        if isinstance(self.embedding, nn.Module):
            device = next((p.device for p in self.embedding.parameters()), inputs.device)
            with torch.no_grad():
                mapped = self.embedding(inputs.to(device))
            if not isinstance(mapped, torch.Tensor) or mapped.ndim != 4:
                got = (
                    tuple(mapped.shape)
                    if isinstance(mapped, torch.Tensor)
                    else type(mapped).__name__
                )
                raise ValueError(
                    f"Expected argument `embedding` (a module) to return a 4-D feature map "
                    f"(N, C, h, w), but got {got}."
                )
            return _cell_features(mapped, size, self.grid).cpu()
        device = activations_a.device
        reference = (
            activations_a
            if self.embedding_layer is None
            else _activations(model_a, self.embedding_layer, inputs.to(device))
        )
        cells = _cell_features(reference, size, self.grid).cpu()
        if self.embedding == "both":
            cells = torch.cat([cells, _cell_features(activations_b, size, self.grid).cpu()], dim=-1)
        return cells

    def _cluster(
        self,
        members: IntArray,
        index: int,
        *,
        images: IntArray,
        cell: IntArray,
        region_a: FloatArray,
        region_b: FloatArray,
        correct_a: np.ndarray[Any, Any],
        correct_b: np.ndarray[Any, Any],
        sample_ids: IntArray,
        boxes: list[tuple[int, int, int, int]],
    ) -> ComparisonCluster:
        differences = region_b[members] - region_a[members]
        difference = float(differences.mean())
        contributing, per_region = np.unique(images[members], return_inverse=True)
        lower, upper = self._interval(differences, per_region, contributing.shape[0], index)
        spread = float(differences.std(ddof=1)) if differences.shape[0] > 1 else float("nan")
        if spread > 0:
            effect = difference / spread
        else:
            effect = 0.0 if spread == 0 and difference == 0 else float("nan")
        sign = 1.0 if difference >= 0 else -1.0
        order = np.lexsort((cell[members], sample_ids[images[members]], -sign * differences))
        exemplars: tuple[Exemplar, ...] = tuple(
            (int(sample_ids[images[members[i]]]), boxes[int(cell[members[i]])]) for i in order
        )
        return ComparisonCluster(
            cluster_id=index,
            regions=int(members.shape[0]),
            images=int(contributing.shape[0]),
            attribution_a=float(region_a[members].mean()),
            attribution_b=float(region_b[members].mean()),
            difference=difference,
            lower=lower,
            upper=upper,
            effect_size=float(effect),
            accuracy_a=float(correct_a[contributing].mean()),
            accuracy_b=float(correct_b[contributing].mean()),
            exemplars=exemplars,
        )

    def _interval(
        self, differences: FloatArray, per_region: IntArray, num_images: int, index: int
    ) -> tuple[float, float]:
        """95% percentile interval of the mean difference, resampling the contributing images."""
        sums = np.bincount(per_region, weights=differences, minlength=num_images)
        counts = np.bincount(per_region, minlength=num_images).astype(np.float64)
        rng = np.random.default_rng([self.random_state, index])
        draws = rng.integers(0, num_images, size=(self.bootstrap, num_images))
        means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        return float(low), float(high)


def _activations(model: nn.Module, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    """The 4-D output of ``layer`` for ``inputs``, from one forward pass without gradients."""
    captured: list[Any] = []
    handle = resolve_layer(model, layer).register_forward_hook(
        lambda _module, _args, output: captured.append(output)
    )
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    if not captured or not isinstance(captured[-1], torch.Tensor) or captured[-1].ndim != 4:
        raise ValueError(
            f"Expected argument `embedding_layer` to name a layer that runs and outputs a 4-D feature "
            f"map (N, C, h, w), but {layer!r} did not."
        )
    output: torch.Tensor = captured[-1]
    return output


def _check_compatible(model_a: nn.Module, model_b: nn.Module, inputs: torch.Tensor) -> None:
    """One forward of each model on the first batch: same inputs accepted, same number of classes."""
    outcomes: list[str] = []
    classes: list[int | None] = []
    for model in (model_a, model_b):
        device = next((p.device for p in model.parameters()), inputs.device)
        try:
            with torch.no_grad():
                logits = as_logits(model(inputs.to(device)))
        except (RuntimeError, ValueError, TypeError) as error:
            outcomes.append(f"{type(error).__name__} ({str(error).splitlines()[0][:200]})")
            classes.append(None)
        else:
            outcomes.append(f"{logits.shape[1]} classes")
            classes.append(int(logits.shape[1]))
    if None in classes or classes[0] != classes[1]:
        raise ValueError(
            "Expected model_a and model_b to take the same inputs and return the same number of "
            f"classes, but got {outcomes[0]} and {outcomes[1]} on inputs of shape "
            f"{tuple(inputs.shape)}."
        )
