"""Training-time mitigation for samples in spurious slices: core-region noise and input-gradient penalty.

Once a slice is known to be solved through a shortcut (a watermark, a background, the red corner of
:func:`~lightning_insight.datasets.make_scenes`), its samples can be trained so the shortcut stops
paying off. Two flavours, each as plain functions and through :class:`SpuriousSliceMitigation`:

- Core risk minimisation (Singla et al., "Core Risk Minimization using Salient ImageNet", 2022):
  :func:`core_risk_noise` adds Gaussian noise where each flagged sample's GradCAM map points, so
  training on the noised batch removes the reward for looking there.
- Right for the right reasons (Ross et al., IJCAI 2017): :func:`input_gradient_penalty` is
  ``weight * mean_n sum_pixels (mask * d(sum_k log p_k)/d input)^2``, which pushes the model to be
  locally insensitive to the masked region. It is differentiable with respect to the parameters.

:func:`spurious_region_mask` gives the region for both: the GradCAM map at ``layer`` (from
:func:`~lightning_insight.discovery.attributions.layer_attributions`), upsampled to the input and kept
above a per-sample quantile, times each sample's spurious weight (for instance the probability that it
belongs to a spurious slice, from :func:`~lightning_insight.discovery.functional.spurious_probability`,
looked up by sample id).

Measured on the synthetic scenes (cue agreement 0.95 in training, independent in validation, 5 epochs,
seeds 0-4; see ``tests/discovery/test_mitigation.py``): core-region noise (``sigma=0.5``) on the
samples whose GradCAM evidence a first trained model puts in the cue's corner, with the regions taken
from that model frozen (``attribution_model``), narrowed the validation accuracy gap between
cue-aligned and cue-conflicting images in every seed (0.11-0.38 down to -0.00-0.10) and raised the
cue-conflicting accuracy in every seed, at some cost in cue-aligned accuracy (1.00 down to 0.89-0.97).
With regions from the model being trained, two seeds of five barely moved. The input-gradient
penalty with the same regions widened the gap in four seeds of five at ``weight=1`` and gave mixed
results at ``weight=10``. Noise in a fixed place can become a shortcut itself when the flagged samples
mostly share a label: the model learns "noise means pedestrian", which does not fire at test time but
slows learning the real object.

The functions use only torch; Lightning is imported for the callback, the last part of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.nn import functional as F
from typing_extensions import override

from lightning_insight.discovery.attributions import as_logits, layer_attributions, resolve_layer

__all__ = [
    "METHODS",
    "SpuriousSliceMitigation",
    "core_risk_noise",
    "input_gradient_penalty",
    "spurious_region_mask",
]

log = logging.getLogger(__name__)

#: Mitigation methods :class:`SpuriousSliceMitigation` knows.
METHODS: tuple[str, ...] = ("core_risk", "input_gradient")

_INPUT_KEYS: tuple[str, ...] = ("image", "images", "input", "inputs")
_SAMPLE_ID_KEYS: tuple[str, ...] = ("sample_id", "sample_ids")


# ------------------------------------------------------------------------------------------ checks
def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_quantile(quantile: object) -> None:
    if quantile is not None and not (_is_number(quantile) and 0.0 < float(quantile) < 1.0):  # type: ignore[arg-type]
        raise ValueError(
            f"Expected argument `quantile` to be None or a float in (0, 1), but got {quantile!r}."
        )


def _check_non_negative(name: str, value: object) -> None:
    if not (_is_number(value) and 0.0 <= float(value) < float("inf")):  # type: ignore[arg-type]
        raise ValueError(
            f"Expected argument `{name}` to be a finite float >= 0, but got {value!r}."
        )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _check_images(inputs: object) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError(
            f"Expected argument `inputs` to be a floating-point tensor, but got {_describe(inputs)}."
        )
    if inputs.ndim != 4:
        raise ValueError(
            f"Expected argument `inputs` to be images (N, C, H, W), but got shape {tuple(inputs.shape)}."
        )
    return inputs


def _spurious_weights(spurious: object, inputs: torch.Tensor) -> torch.Tensor:
    """``spurious`` as float weights ``(N,)`` in [0, 1] on the inputs' device."""
    n = inputs.shape[0]
    if spurious is None:
        return torch.ones(n, device=inputs.device, dtype=inputs.dtype)
    if not isinstance(spurious, torch.Tensor):
        raise TypeError(
            "Expected argument `spurious` to be None or a tensor (N,) of bools or weights in [0, 1], "
            f"but got {_describe(spurious)}."
        )
    if tuple(spurious.shape) != (n,):
        raise ValueError(
            f"Expected argument `spurious` to hold one value per input, shape ({n},), but got "
            f"shape {tuple(spurious.shape)}."
        )
    weights = spurious.to(device=inputs.device, dtype=inputs.dtype)
    if n and not bool(((weights >= 0) & (weights <= 1)).all()):
        raise ValueError(
            "Expected argument `spurious` to hold weights in [0, 1], but got values from "
            f"{float(weights.min()):g} to {float(weights.max()):g}."
        )
    return weights


class _EvaluationMode:
    """Puts every submodule in evaluation mode and gives each its own mode back on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> None:
        self.modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.modes:
            module.training = training


# ------------------------------------------------------------------------------------------ functional
def spurious_region_mask(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    layer: str | nn.Module,
    spurious: torch.Tensor | None = None,
    quantile: float | None = 0.9,
) -> torch.Tensor:
    """Where each flagged sample's prediction comes from: its GradCAM region, times its weight.

    The GradCAM map of the predicted class at ``layer`` (its positive part) is upsampled bilinearly to
    the input size. With ``quantile`` the region is the pixels at or above the map's value of that
    per-sample quantile, i.e. the top ``1 - quantile`` of the pixels (ties included), restricted to
    positive evidence (a sample whose map has no positive value gets an empty region). With
    ``quantile=None`` it is the map divided by its maximum (a soft region in ``[0, 1]``). Each sample's
    region is multiplied by its weight in ``spurious``; samples of weight 0 are not attributed at all.

    The maps are computed with every submodule in evaluation mode (each one's mode is given back
    afterwards), so the extra forward pass neither updates batch-norm statistics nor draws dropout, and
    nothing is accumulated in the parameters' ``.grad``. Works under ``torch.no_grad()`` and
    ``torch.inference_mode()``. The result is detached.

    Args:
        model: A classifier returning ``(N, C)`` logits, or ``(N,)`` for a single-logit binary model.
            It may be another model than the one being trained (e.g. a frozen copy of the model the
            spurious slice was found with).
        inputs: Images ``(N, C, H, W)``.
        layer: The layer whose GradCAM map is used (a dotted module name such as ``"backbone.2"``, or a
            module of ``model``). An earlier layer gives a finer but noisier map.
        spurious: Per-sample weights ``(N,)`` in ``[0, 1]`` (bools allowed); ``None`` flags every sample.
        quantile: Keep the pixels at or above this per-sample quantile of the map, in ``(0, 1)``;
            ``None`` for the soft region.

    Returns:
        A float mask ``(N, 1, H, W)`` with values in ``[0, 1]``, with the inputs' device and dtype.

    Raises:
        ValueError: If ``quantile`` is outside ``(0, 1)``, ``spurious`` has the wrong shape or values,
            the inputs are not 4-D, or the layer does not exist or has no 4-D output.
        TypeError: If ``inputs`` or ``spurious`` is not a tensor of the right kind.

    Example:
        >>> from lightning_insight.datasets import SceneClassifier
        >>> model = SceneClassifier(channels=(4, 8))
        >>> mask = spurious_region_mask(model, torch.rand(2, 3, 32, 32), layer="backbone.0",
        ...                             spurious=torch.tensor([True, False]))
        >>> tuple(mask.shape), float(mask[1].sum())
        ((2, 1, 32, 32), 0.0)
    """
    _check_quantile(quantile)
    inputs = _check_images(inputs)
    weights = _spurious_weights(spurious, inputs)
    resolve_layer(model, layer)
    height, width = inputs.shape[-2:]
    mask = torch.zeros(
        (inputs.shape[0], 1, height, width), device=inputs.device, dtype=inputs.dtype
    )
    flagged = torch.nonzero(weights > 0).flatten()
    if flagged.numel() == 0:
        return mask
    with _EvaluationMode(model):
        maps = layer_attributions(model, inputs.detach()[flagged], layer=layer).maps
    evidence = F.interpolate(
        maps.float().clamp_min(0)[:, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    ).flatten(1)
    if quantile is None:
        peak = evidence.amax(dim=1, keepdim=True)
        region = torch.where(
            peak > 0, evidence / peak.clamp_min(torch.finfo(evidence.dtype).tiny), 0.0
        )
    else:
        # kthvalue rather than torch.quantile, which refuses inputs of more than 2**24 elements.
        rank = min(max(int(float(quantile) * evidence.shape[1]), 1), evidence.shape[1])
        threshold = evidence.kthvalue(rank, dim=1, keepdim=True).values
        region = ((evidence >= threshold) & (evidence > 0)).float()
    region = region.to(inputs.dtype) * weights[flagged, None]
    mask[flagged] = region.reshape(-1, 1, height, width)
    return mask


def core_risk_noise(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    layer: str | nn.Module,
    spurious: torch.Tensor | None = None,
    sigma: float = 0.5,
    quantile: float | None = 0.9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The inputs with Gaussian noise added where flagged samples' predictions come from (CoRM).

    ``inputs + sigma * mask * noise`` with ``mask`` from :func:`spurious_region_mask` and standard normal
    ``noise``: pixels outside the mask, and samples of weight 0, come back unchanged; a weight ``w``
    scales the noise's standard deviation to ``w * sigma``. Train on the result (in place of the batch,
    or mix its loss with the clean loss) so that the high-attribution region of flagged samples stops
    predicting the label. The values are not clipped (inputs may be normalised). The result is
    detached: it is data, not part of the graph.

    Args:
        model: The model whose GradCAM maps give the region (see :func:`spurious_region_mask`).
        inputs: Images ``(N, C, H, W)``.
        layer: The layer whose GradCAM map gives the region.
        spurious: Per-sample weights ``(N,)`` in ``[0, 1]`` (bools allowed); ``None`` flags every sample.
        sigma: Standard deviation of the noise, ``>= 0``, in the inputs' units.
        quantile: Per-sample quantile of the map above which pixels are noised, in ``(0, 1)``; ``None``
            scales the noise by the normalised map instead.
        generator: Random generator on the inputs' device, for reproducible noise.

    Returns:
        The noised inputs: same shape, dtype and device.

    Raises:
        ValueError: If ``sigma < 0``, ``quantile`` is outside ``(0, 1)``, or the inputs or ``spurious``
            do not fit (see :func:`spurious_region_mask`).
        TypeError: If ``inputs`` or ``spurious`` is not a tensor of the right kind.

    Example:
        >>> from lightning_insight.datasets import SceneClassifier
        >>> model = SceneClassifier(channels=(4, 8))
        >>> images = torch.rand(2, 3, 32, 32)
        >>> noised = core_risk_noise(model, images, layer="backbone.0", sigma=0.5,
        ...                          spurious=torch.tensor([0.0, 1.0]))
        >>> bool(torch.equal(noised[0], images[0])), tuple(noised.shape)
        (True, (2, 3, 32, 32))
    """
    _check_non_negative("sigma", sigma)
    mask = spurious_region_mask(model, inputs, layer=layer, spurious=spurious, quantile=quantile)
    noise = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
    return inputs.detach() + float(sigma) * mask * noise


def _check_mask(mask: object, inputs: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or not (
        mask.is_floating_point() or mask.dtype == torch.bool
    ):
        raise TypeError(
            f"Expected argument `mask` to be a floating-point or boolean tensor, but got {_describe(mask)}."
        )
    trailing = inputs.shape[inputs.ndim - mask.ndim :] if mask.ndim <= inputs.ndim else None
    if trailing is None or any(m not in (1, i) for m, i in zip(mask.shape, trailing, strict=True)):
        raise ValueError(
            f"Expected argument `mask` to broadcast to the inputs' shape {tuple(inputs.shape)}, but got "
            f"shape {tuple(mask.shape)}. HINT: use (N, 1, H, W) for images."
        )
    checked = mask.detach().to(device=inputs.device, dtype=inputs.dtype)
    if checked.numel() and bool((checked < 0).any()):
        raise ValueError(
            "Expected argument `mask` to hold non-negative weights, but its minimum is "
            f"{float(checked.min()):g}."
        )
    return checked


def input_gradient_penalty(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    mask: torch.Tensor,
    targets: torch.Tensor | None = None,
    weight: float = 1.0,
) -> torch.Tensor:
    """Right-for-the-right-reasons penalty: how much the masked region moves the log-probabilities.

    ``weight * mean_n sum_{c,h,w} (mask * d s_n / d inputs)^2`` with ``s_n = sum_k log p_k(x_n)`` (Ross et
    al.) or, given ``targets``, ``s_n = log p_{y_n}(x_n)``. The input gradient is taken with
    ``create_graph=True``, so the penalty is differentiable with respect to the parameters: add it to
    the training loss. It costs one more forward pass and a double backward (a training step of the
    scene classifier with the penalty took 4.4x one without). The model is used as it is (in training mode inside
    ``training_step``; batch-norm statistics are then updated by this forward pass too). Gradients
    are enabled inside, so it also works under ``torch.no_grad()`` and ``torch.inference_mode()``.

    Args:
        model: A classifier returning ``(N, C)`` logits, or ``(N,)`` for a single-logit binary model
            (its two classes then have ``log p = (log(1 - sigmoid(z)), log sigmoid(z))``).
        inputs: Inputs ``(N, ...)``, e.g. images ``(N, C, H, W)``.
        mask: Non-negative weights of the regions to ignore, broadcastable to ``inputs``: ``(N, 1, H, W)``
            from :func:`spurious_region_mask`, or a mask drawn by hand.
        targets: Class indices ``(N,)`` to penalise only each sample's labelled class; ``None`` sums over
            all classes as in Ross et al.
        weight: The penalty's factor ``lambda >= 0``.

    Returns:
        A scalar tensor (0 for an all-zero mask or an empty batch) with a graph to the parameters.

    Raises:
        ValueError: If ``weight < 0``, the mask does not broadcast to the inputs or has negative values,
            or ``targets`` does not hold one index per input.
        TypeError: If ``inputs`` is not a floating-point tensor or ``mask`` not a floating-point or
            boolean one.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> images = torch.rand(2, 3, 2, 2)
        >>> penalty = input_gradient_penalty(model, images, mask=torch.zeros(2, 1, 2, 2))
        >>> float(penalty.detach()), penalty.requires_grad
        (0.0, True)
    """
    _check_non_negative("weight", weight)
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError(
            f"Expected argument `inputs` to be a floating-point tensor, but got {_describe(inputs)}."
        )
    mask = _check_mask(mask, inputs)
    n = inputs.shape[0]
    if targets is not None and (
        not isinstance(targets, torch.Tensor) or tuple(targets.shape) != (n,)
    ):
        raise ValueError(
            f"Expected argument `targets` to be a tensor of one class index per input, shape ({n},), but "
            f"got {_describe(targets)}."
        )
    with torch.inference_mode(False), torch.enable_grad():
        x = inputs.detach().clone().requires_grad_(True)
        log_probabilities = F.log_softmax(as_logits(model(x)), dim=1)
        if targets is None:
            score = log_probabilities.sum()
        else:
            chosen = targets.to(log_probabilities.device).long()[:, None]
            score = log_probabilities.gather(1, chosen).sum()
        (gradients,) = torch.autograd.grad(score, x, create_graph=True)
        return float(weight) * (mask * gradients).pow(2).sum() / max(n, 1)


# ------------------------------------------------------------------------------------------ callback
def _batch_inputs(batch: Any, key: str | int | None) -> tuple[torch.Tensor, str | int]:
    """The input images of a batch and where they sit (a dict key or a sequence index)."""
    found: str | int | None
    if isinstance(batch, Mapping):
        keys: Sequence[str | int] = _INPUT_KEYS if key is None else (key,)
        found = next((k for k in keys if k in batch), None)
        if found is None:
            raise RuntimeError(
                f"Expected the training batch to hold the inputs under one of {list(keys)}, but found "
                f"keys {sorted(str(k) for k in batch)}. HINT: pass `input_key`."
            )
        value = batch[found]
    elif isinstance(batch, list | tuple) and batch:
        found = 0 if key is None else key
        if not isinstance(found, int) or not -len(batch) <= found < len(batch):
            raise RuntimeError(
                f"Expected `input_key` to be an index into the training batch of length {len(batch)}, "
                f"but got {key!r}."
            )
        value = batch[found]
    else:
        raise RuntimeError(
            f"Expected the training batch to be a dict or a list holding the inputs, but got "
            f"{_describe(batch)}."
        )
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.ndim != 4:
        raise RuntimeError(
            f"Expected the batch's inputs at {found!r} to be floating-point images (N, C, H, W), but got "
            f"{_describe(value)}. HINT: pass `input_key`."
        )
    return value, found


def _batch_sample_ids(batch: Any) -> Any:
    places: list[Any] = []
    if isinstance(batch, Mapping):
        places = [batch, batch.get("attributes")]
    elif isinstance(batch, list | tuple) and len(batch) >= 3:
        places = [batch[2]]
    for place in places:
        if isinstance(place, Mapping):
            for key in _SAMPLE_ID_KEYS:
                if key in place:
                    return place[key]
    return None


def _check_spurious_ids(spurious_ids: object) -> dict[int, float]:
    if not isinstance(spurious_ids, Mapping):
        raise TypeError(
            "Expected argument `spurious_ids` to be None or a mapping of sample id -> weight in [0, 1], "
            f"but got {_describe(spurious_ids)}."
        )
    checked: dict[int, float] = {}
    for key, value in spurious_ids.items():
        if not (_is_number(value) and 0.0 <= float(value) <= 1.0):
            raise ValueError(
                "Expected argument `spurious_ids` to map sample ids to weights in [0, 1], but sample "
                f"{key!r} has {value!r}."
            )
        checked[int(key)] = float(value)
    return checked


class SpuriousSliceMitigation(Callback):
    r"""Trains flagged samples so that their spurious region stops paying off; the module stays as is.

    Which samples are flagged comes from ``spurious_ids``, looked up by the batch's ``sample_id``
    (missing ids have weight 0). The region of each flagged sample is its GradCAM map at ``layer`` (see
    :func:`spurious_region_mask`) under ``attribution_model``, or under the model being trained when
    that is ``None``. A frozen copy of the model the spurious slice was found with gives fixed regions,
    like the precomputed masks of CoRM and the annotations of Ross et al.; it was the more reliable
    choice on the synthetic scenes (see the module docstring).

    - ``"core_risk"``: in ``on_train_batch_start`` the inputs are replaced by :func:`core_risk_noise`
      of them: a new tensor is put back under the same key of a dict batch, or at the same index of a
      list batch (the loader's tensor is not modified; tuple batches are refused). ``training_step``
      then trains on noised copies of the flagged samples; unflagged samples pass unchanged and a
      weight below 1 scales the noise down.
    - ``"input_gradient"``: in ``on_train_batch_start`` the batch's region mask is computed; in
      ``on_before_backward`` the :func:`input_gradient_penalty` (with ``penalty_weight``, divided by
      ``accumulate_grad_batches`` and scaled by the AMP grad scaler when there is one, as Lightning
      treats the loss) is added **in place** to the loss tensor Lightning is about to backpropagate. A
      callback cannot hand back a new loss, but this tensor is Lightning's own (the output of
      ``training_step`` divided by the accumulation factor, a new tensor nobody else holds), so its one
      backward pass gives the gradients of ``loss + penalty``: nothing changes for gradient
      accumulation or DDP (one backward pass, one gradient reduction). The logged ``train_loss`` and
      the progress bar keep the plain loss, which Lightning copied before. This relies on how
      Lightning 2.x hands the loss to the hook; the tests check the resulting gradients against those of
      ``loss + penalty`` with gradient accumulation, a grad scaler and 2-process DDP. Automatic
      optimisation only; with manual optimisation add :func:`input_gradient_penalty` to the loss in
      ``training_step``.

    Args:
        method: ``"core_risk"`` or ``"input_gradient"``.
        layer: The layer whose GradCAM map gives the region (e.g. ``"backbone.2"``).
        spurious_ids: Sample id -> weight in ``[0, 1]`` (e.g. the probability of being in a spurious
            slice); ``None`` flags every training sample with weight 1.
        sigma: Standard deviation of the noise (``"core_risk"``), ``>= 0``.
        quantile: Per-sample quantile of the map where the region starts, in ``(0, 1)``; ``None`` for
            the soft region (the normalised map).
        penalty_weight: ``lambda`` of the input-gradient penalty (``"input_gradient"``), ``>= 0``.
        every_n_steps: Act on the batches of every n-th optimizer step (``trainer.global_step``).
        input_key: Where the images sit in the batch: a dict key or a list index. ``None`` tries
            ``"image"``, ``"images"``, ``"input"`` and ``"inputs"`` for a dict, index 0 for a list.
        seed: Seed of the noise (``"core_risk"``); ``None`` draws from torch's global generator.
        attribution_model: The model whose maps give the regions (moved to the trained module's device
            when fitting starts; not saved in checkpoints); ``None`` uses the model being trained.

    Raises:
        ValueError: For an unknown method, a negative ``sigma`` or ``penalty_weight``, a ``quantile``
            outside ``(0, 1)``, a non-positive ``every_n_steps``, a negative ``seed`` or a weight outside
            ``[0, 1]``; at ``setup``, for a ``layer`` the model does not have.
        TypeError: If ``layer``, ``spurious_ids``, ``input_key`` or ``attribution_model`` has the wrong
            type.
        RuntimeError: At fit time: ``"input_gradient"`` under manual optimisation, a batch without
            images, a tuple batch for ``"core_risk"``, or no sample ids while ``spurious_ids`` is given.

    Logged keys (``pl_module.log``, on step):
        - ``mitigation/spurious_fraction``: the mean weight of the batch's samples.
        - ``mitigation/input_gradient_penalty`` (``"input_gradient"``): the penalty, before the
          accumulation and AMP scaling.

    Example:
        >>> mitigation = SpuriousSliceMitigation("core_risk", layer="backbone.2",
        ...                                      spurious_ids={3: 1.0, 7: 0.5}, sigma=0.5)
        >>> mitigation.state_key
        "SpuriousSliceMitigation{'method': 'core_risk', 'layer': 'backbone.2'}"
    """

    def __init__(
        self,
        method: str,
        *,
        layer: str,
        spurious_ids: Mapping[int, float] | None = None,
        sigma: float = 0.5,
        quantile: float | None = 0.9,
        penalty_weight: float = 1.0,
        every_n_steps: int = 1,
        input_key: str | int | None = None,
        seed: int | None = None,
        attribution_model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(
                f"Expected argument `method` to be one of {METHODS}, but got {method!r}."
            )
        if not isinstance(layer, str) or not layer:
            raise TypeError(
                f"Expected argument `layer` to be a module name such as 'backbone.2', but got {layer!r}."
            )
        _check_non_negative("sigma", sigma)
        _check_quantile(quantile)
        _check_non_negative("penalty_weight", penalty_weight)
        if (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):
            raise ValueError(
                f"Expected argument `every_n_steps` to be a positive int, but got {every_n_steps!r}."
            )
        if input_key is not None and (
            isinstance(input_key, bool) or not isinstance(input_key, str | int)
        ):
            raise TypeError(
                f"Expected argument `input_key` to be None, a str or an int, but got {input_key!r}."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(
                f"Expected argument `seed` to be None or a non-negative int, but got {seed!r}."
            )
        if attribution_model is not None and not isinstance(attribution_model, nn.Module):
            raise TypeError(
                "Expected argument `attribution_model` to be None or an nn.Module, but got "
                f"{_describe(attribution_model)}."
            )
        self.method = method
        self.layer = layer
        self.spurious_ids = None if spurious_ids is None else _check_spurious_ids(spurious_ids)
        self.sigma = float(sigma)
        self.quantile = None if quantile is None else float(quantile)
        self.penalty_weight = float(penalty_weight)
        self.every_n_steps = every_n_steps
        self.input_key = input_key
        self.seed = seed
        self.attribution_model = attribution_model
        self._generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(method=self.method, layer=self.layer)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        resolve_layer(
            pl_module if self.attribution_model is None else self.attribution_model, self.layer
        )
        if self.method == "input_gradient" and not pl_module.automatic_optimization:
            raise RuntimeError(
                "Expected automatic optimisation for SpuriousSliceMitigation(method='input_gradient'), but "
                "the module sets `automatic_optimization = False`. HINT: add `input_gradient_penalty(...)` "
                "to the loss in `training_step` instead."
            )
        log.debug(
            "SpuriousSliceMitigation(%r): %s flagged samples, regions from %s at %r.",
            self.method,
            "all" if self.spurious_ids is None else sum(w > 0 for w in self.spurious_ids.values()),
            "the trained model" if self.attribution_model is None else "attribution_model",
            self.layer,
        )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not in `setup`: the strategy moves the module to its device only after `setup`.
        if self.attribution_model is not None:
            self.attribution_model.to(pl_module.device)

    def _weights(self, batch: Any, inputs: torch.Tensor) -> torch.Tensor:
        n = inputs.shape[0]
        if self.spurious_ids is None:
            return torch.ones(n, device=inputs.device, dtype=inputs.dtype)
        ids = _batch_sample_ids(batch)
        if ids is None:
            raise RuntimeError(
                "Expected the training batch to carry 'sample_id' (top level, in batch['attributes'] or in "
                "the meta dict of (x, y, meta)) to look up `spurious_ids`, but found none. HINT: add the "
                "ids to the batch, or pass spurious_ids=None to flag every sample."
            )
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if len(values) != n:
            raise RuntimeError(
                f"Expected one sample id per input ({n}), but the batch carries {len(values)}."
            )
        lookup = self.spurious_ids
        weights = [lookup.get(int(value), 0.0) for value in values]
        return torch.tensor(weights, device=inputs.device, dtype=inputs.dtype)

    def _noise_generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
            if self._generator_state is not None:
                self._generator.set_state(self._generator_state)
                self._generator_state = None
        return self._generator

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._pending = None
        if trainer.global_step % self.every_n_steps != 0:
            return
        inputs, where = _batch_inputs(batch, self.input_key)
        if self.method == "core_risk" and isinstance(batch, tuple):
            raise RuntimeError(
                "Expected a dict or list training batch whose inputs can be replaced, but got a tuple. "
                "HINT: return a list or a dict from the collate function."
            )
        weights = self._weights(batch, inputs)
        size = int(weights.shape[0])
        pl_module.log(
            "mitigation/spurious_fraction",
            weights.sum() / max(size, 1),
            on_step=True,
            on_epoch=False,
            batch_size=size,
        )
        # The penalty's forward pass runs in training mode, so under several processes every rank runs
        # it (synchronised batch norm); the maps run in evaluation mode and synchronise nothing.
        collective = self.method == "input_gradient" and trainer.world_size > 1
        if not collective and not bool((weights > 0).any()):
            return
        attributor = pl_module if self.attribution_model is None else self.attribution_model
        if self.method == "core_risk":
            batch[where] = core_risk_noise(
                attributor,
                inputs,
                layer=self.layer,
                spurious=weights,
                sigma=self.sigma,
                quantile=self.quantile,
                generator=self._noise_generator(inputs.device),
            )
        else:
            mask = spurious_region_mask(
                attributor, inputs, layer=self.layer, spurious=weights, quantile=self.quantile
            )
            self._pending = (inputs, mask)

    @override
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if self._pending is None:
            return
        inputs, mask = self._pending
        penalty = input_gradient_penalty(pl_module, inputs, mask=mask, weight=self.penalty_weight)
        pl_module.log(
            "mitigation/input_gradient_penalty",
            penalty.detach(),
            on_step=True,
            on_epoch=False,
            batch_size=int(inputs.shape[0]),
        )
        scaled = penalty / trainer.accumulate_grad_batches
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            scaled = scaler.scale(scaled)
        # In place on purpose: Lightning backpropagates this very tensor (see the class docstring).
        loss.add_(scaled.to(loss.dtype))

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # Kept until here rather than dropped after one use: optimizers such as LBFGS call the closure,
        # and so the backward hook, several times per batch.
        self._pending = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._generator is not None:
            return {"generator_state": self._generator.get_state()}
        if self._generator_state is not None:
            return {"generator_state": self._generator_state}
        return {}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        generator_state = state_dict.get("generator_state")
        self._generator = None
        self._generator_state = (
            generator_state if isinstance(generator_state, torch.Tensor) else None
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # A generator's state travels as a tensor; the pending batch does not travel at all.
        generator = state.pop("_generator")
        if generator is not None:
            state["_generator_state"] = generator.get_state()
        state["_generator"] = None
        state["_pending"] = None
        return state
