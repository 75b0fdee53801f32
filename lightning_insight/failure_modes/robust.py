"""A robust feature extractor where none is at hand: PGD (L2) attacks and adversarial fine-tuning.

Barlow explains failures with the features of an adversarially robust model, because those features
line up with what a person sees (a heatmap of one feature covers an object part, not texture noise).
When no robust backbone is available, :func:`make_robust_extractor` trains a small one: a few
convolutional blocks fine-tuned on PGD examples inside an L2 ball (Madry et al., 2018).

Everything here is plain torch: no Lightning, no state beyond the model. Gradient work runs inside
``torch.inference_mode(False)`` and ``torch.enable_grad()`` (:func:`gradients_enabled`) on clones of
the inputs, as in :mod:`lightning_insight.discovery.attributions`, so the attack also works under
Lightning's ``trainer.validate()``. Input gradients are taken with :func:`torch.autograd.grad`, so an
attack never touches the parameters' ``.grad``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lightning_insight.discovery.attributions import as_logits
from lightning_insight.discovery.finder import read_probe_batch
from lightning_insight.fairness.functional import check_positive_int

__all__ = [
    "RobustExtractor",
    "adversarial_finetune",
    "make_robust_extractor",
    "pgd_l2_attack",
]

logger = logging.getLogger(__name__)

#: A loss of the model's raw output and the targets; it must return a scalar.
LossFunction = Callable[[Any, torch.Tensor], torch.Tensor]


@contextmanager
def gradients_enabled() -> Iterator[None]:
    """Turn gradients on, even inside ``torch.no_grad()`` or ``torch.inference_mode()``.

    The one helper for ``with torch.inference_mode(False), torch.enable_grad():``, the pattern
    :mod:`lightning_insight.discovery.attributions` writes inline: gradient work in this subpackage
    (the PGD attack, adversarial fine-tuning, feature attacks) goes through it.

    Tensors made before entering may be inference tensors: clone them inside the block before
    anything that autograd has to save.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise a ``ValueError``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Expected argument `{name}` to be a finite float > 0, but got {value!r}.")
    return float(value)


def check_images(images: object, *, name: str = "images") -> torch.Tensor:
    """Return ``images`` if it is a floating-point tensor ``(N, ...)`` with at least 2 dims."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"Expected argument `{name}` to be a torch.Tensor, but got {type(images).__name__}."
        )
    if not images.is_floating_point() or images.ndim < 2:
        raise ValueError(
            f"Expected argument `{name}` to be a floating-point tensor (N, C, H, W), but got a "
            f"{images.dtype} tensor of shape {tuple(images.shape)}."
        )
    return images


def check_clamp(clamp: object) -> tuple[float, float] | None:
    """Return ``clamp`` as a ``(low, high)`` float pair (or ``None``), else raise a ``ValueError``."""
    if clamp is None:
        return None
    if (
        not isinstance(clamp, tuple | list)
        or len(clamp) != 2
        or not all(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            for value in clamp
        )
        or not clamp[0] < clamp[1]
    ):
        raise ValueError(
            f"Expected argument `clamp` to be None or a pair (low, high) of finite floats with "
            f"low < high, but got {clamp!r}. HINT: use (0.0, 1.0) for images in [0, 1]."
        )
    return float(clamp[0]), float(clamp[1])


def _per_sample_norm(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped to broadcast against ``tensor``."""
    norm: torch.Tensor = torch.linalg.vector_norm(tensor.flatten(1), dim=1)
    return norm.reshape((-1,) + (1,) * (tensor.ndim - 1))


def project_perturbation(
    clean: torch.Tensor,
    delta: torch.Tensor,
    *,
    epsilon: float,
    norm: str,
    clamp: tuple[float, float] | None,
) -> torch.Tensor:
    """Clamp ``clean + delta`` to the valid range, then project ``delta`` into the norm ball.

    Clamping first and projecting second keeps both constraints when ``clean`` lies in the range:
    shrinking ``delta`` toward 0 moves ``clean + delta`` along a segment between two valid points.
    """
    if clamp is not None:
        delta = (clean + delta).clamp(*clamp) - clean
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    length = _per_sample_norm(delta)
    scale = (epsilon / length.clamp_min(torch.finfo(delta.dtype).tiny)).clamp(max=1.0)
    return delta * scale


def unit_direction(gradient: torch.Tensor, *, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit ``norm``: sign for L-inf, the normalised gradient for L2."""
    if norm == "linf":
        return gradient.sign()
    return gradient / _per_sample_norm(gradient).clamp_min(torch.finfo(gradient.dtype).tiny)


def _cross_entropy(output: Any, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(as_logits(output), target.long(), reduction="sum")


def _random_start(
    clean: torch.Tensor, epsilon: float, generator: torch.Generator | None
) -> torch.Tensor:
    """A point drawn uniformly from the L2 ball of radius ``epsilon`` around each sample."""
    direction = torch.randn(
        clean.shape, generator=generator, device=clean.device, dtype=clean.dtype
    )
    direction = unit_direction(direction, norm="l2")
    dims = clean[0].numel()
    radius = torch.rand(
        (clean.shape[0],), generator=generator, device=clean.device, dtype=clean.dtype
    )
    radius = epsilon * radius ** (1.0 / dims)
    return direction * radius.reshape((-1,) + (1,) * (clean.ndim - 1))


def pgd_l2_attack(
    model: nn.Module | Callable[[torch.Tensor], Any],
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    loss_fn: LossFunction | None = None,
    random_start: bool = False,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on the loss inside an L2 ball around each image.

    Each step moves every sample by ``step_size`` along its normalised loss gradient, clamps the
    image to ``clamp`` and projects the perturbation back onto the ball ``||delta||_2 <= epsilon``
    (the norm is taken over all of a sample's values). The model is used as it is: call
    ``model.eval()`` first so that batch-norm statistics stay fixed.

    Args:
        model: Maps images to an output that ``loss_fn`` reads; by default ``(N, C)`` logits, or
            ``(N,)`` / ``(N, 1)`` for a single-logit binary model.
        images: Floating-point inputs ``(N, ...)``, e.g. ``(N, C, H, W)``.
        target: One target per sample, e.g. class indices ``(N,)``.
        epsilon: Radius of the L2 ball.
        step_size: L2 length of each step; ``2.5 * epsilon / steps`` is the usual choice.
        steps: Number of gradient steps.
        loss_fn: ``loss_fn(model(x), target) -> scalar`` to maximise. Default: the summed cross
            entropy of the logits (a single logit ``z`` is read as binary logits ``(-z/2, z/2)``).
        random_start: Start from a point drawn uniformly in the ball instead of the clean images.
        clamp: The valid value range ``(low, high)`` of the inputs, or ``None`` for no clamping.
        generator: Random generator for the random start (on the images' device).

    Returns:
        The adversarial images, detached, with the dtype and device of ``images``.

    Raises:
        ValueError: If ``epsilon`` or ``step_size`` is not > 0, ``steps < 1``, ``clamp`` is not an
            increasing pair, ``images`` is not a floating-point batch, ``target`` has another
            length, or the loss is not a scalar.
        TypeError: If ``images`` or ``target`` is not a tensor.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> images, target = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> attacked = pgd_l2_attack(model, images, target, epsilon=0.5, step_size=0.2, steps=5)
        >>> bool(((attacked - images).flatten(1).norm(dim=1) <= 0.5 + 1e-6).all())
        True
    """
    epsilon = check_positive_float("epsilon", epsilon)
    step_size = check_positive_float("step_size", step_size)
    check_positive_int("steps", steps)
    bounds = check_clamp(clamp)
    check_images(images)
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"Expected argument `target` to be a torch.Tensor, but got {type(target).__name__}."
        )
    if target.ndim == 0 or target.shape[0] != images.shape[0]:
        raise ValueError(
            f"Expected argument `target` to hold one target per image ({images.shape[0]}), but got "
            f"shape {tuple(target.shape)}."
        )
    loss = loss_fn if loss_fn is not None else _cross_entropy
    with gradients_enabled():
        # Clones made here are normal tensors even when the inputs are inference tensors.
        clean = images.detach().clone()
        labels = target.detach().clone()
        if random_start:
            start = _random_start(clean, epsilon, generator)
            delta = project_perturbation(clean, start, epsilon=epsilon, norm="l2", clamp=bounds)
        else:
            delta = torch.zeros_like(clean)
        for _ in range(steps):
            delta.requires_grad_(True)
            value = loss(model(clean + delta), labels)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                got = (
                    f"shape {tuple(value.shape)}"
                    if isinstance(value, torch.Tensor)
                    else type(value).__name__
                )
                raise ValueError(
                    f"Expected `loss_fn` to return a scalar tensor, but got {got}. HINT: reduce the "
                    "loss with reduction='sum' or 'mean'."
                )
            (gradient,) = torch.autograd.grad(value.reshape(()), delta)
            with torch.no_grad():
                delta = delta.detach() + step_size * unit_direction(gradient, norm="l2")
                delta = project_perturbation(clean, delta, epsilon=epsilon, norm="l2", clamp=bounds)
        # Made here, the result is a normal tensor even under inference mode: usable with autograd.
        return (clean + delta.detach()).to(images.dtype)


def _read_batch(batch: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, target)`` of a batch, read by :func:`~lightning_insight.discovery.finder.read_probe_batch`.

    Raises:
        RuntimeError: For a batch of another layout (from ``read_probe_batch``).
        TypeError: If the images or the targets are not tensors.
    """
    images, target, _ = read_probe_batch(batch)
    for what, value in (("images", images), ("targets", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"Expected the batch's {what} to be a torch.Tensor, but got {type(value).__name__}. "
                "HINT: pass (images, target) pairs of tensors or dicts of tensors."
            )
    return images, target


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def adversarial_finetune(
    model: nn.Module,
    data: Iterable[Any],
    *,
    epochs: int = 1,
    epsilon: float = 0.5,
    steps: int = 3,
    step_size: float | None = None,
    learning_rate: float = 1e-3,
    max_batches: int | None = None,
    random_start: bool = True,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    loss_fn: LossFunction | None = None,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Train ``model`` on PGD examples in an L2 ball (adversarial training, Madry et al.).

    For each batch the attack runs with the model in ``eval()`` mode (fixed batch-norm statistics,
    as the ``robustness`` library does), then one Adam step is taken on the loss of the attacked
    batch in ``train()`` mode. Everything random (the random starts, dropout, a shuffling
    ``DataLoader``) draws from a generator seeded with ``seed`` inside a forked RNG, so the same call
    gives the same model and the global RNG is left as it was.

    Args:
        model: A classifier returning ``(N, C)`` logits (or a single logit for binary), trained in
            place.
        data: Batches: a ``DataLoader`` or any re-iterable of batches that
            :func:`~lightning_insight.discovery.finder.read_probe_batch` reads: ``(images, target)``
            or ``(images, target, meta)`` tuples, or dicts with ``"image"`` (or ``"input"``) and
            ``"target"`` (or ``"label"``) keys. Images are moved to the model's device.
        epochs: Passes over ``data``.
        epsilon: L2 radius of the attack (over all of a sample's values).
        steps: PGD steps per batch.
        step_size: L2 length of each PGD step; default ``2.5 * epsilon / steps``.
        learning_rate: Adam's learning rate.
        max_batches: Stop each epoch after this many batches (``None``: all).
        random_start: Start each attack at a random point of the ball.
        clamp: The valid value range of the inputs, or ``None``.
        loss_fn: The training and attack loss ``loss_fn(model(x), target)``; default cross entropy.
        seed: Seeds the random starts and the forked global RNG.
        progress: Show a ``tqdm`` progress bar over the batches.

    Returns:
        The same ``model``, in ``eval()`` mode.

    Raises:
        ValueError: For an argument out of range, a one-shot iterator with ``epochs > 1``, data that
            yields no batch, or a model without trainable parameters.
        TypeError: If ``model`` is not an ``nn.Module`` or a batch holds images or targets that
            are not tensors.
        RuntimeError: For a batch of another layout (neither such a tuple nor such a dict).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        >>> data = [(torch.rand(8, 3, 2, 2), torch.randint(0, 2, (8,)))]
        >>> adversarial_finetune(model, data, epochs=2, epsilon=0.25, steps=2).training
        False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"Expected argument `model` to be an nn.Module, but got {type(model).__name__}."
        )
    check_positive_int("epochs", epochs)
    epsilon = check_positive_float("epsilon", epsilon)
    check_positive_int("steps", steps)
    step = (
        2.5 * epsilon / steps if step_size is None else check_positive_float("step_size", step_size)
    )
    learning_rate = check_positive_float("learning_rate", learning_rate)
    if max_batches is not None:
        check_positive_int("max_batches", max_batches)
    bounds = check_clamp(clamp)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected argument `seed` to be a non-negative int, but got {seed!r}.")
    if isinstance(data, Iterator) and epochs > 1:
        raise ValueError(
            f"Expected argument `data` to be re-iterable for epochs={epochs}, but got a one-shot "
            f"{type(data).__name__}. HINT: pass a DataLoader or a list of batches."
        )
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not parameters:
        raise ValueError(
            "Expected a model with trainable parameters, but none requires grad. HINT: unfreeze "
            "the layers to fine-tune."
        )
    loss = loss_fn if loss_fn is not None else _cross_entropy
    device = _model_device(model)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), gradients_enabled():
        torch.manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed)
        optimizer = torch.optim.Adam(parameters, lr=learning_rate)
        logger.info(
            "Adversarial fine-tuning: %d epochs, L2 epsilon %g, %d PGD steps.",
            epochs,
            epsilon,
            steps,
        )
        for epoch in range(epochs):
            batches: Iterable[Any] = data
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(data, desc=f"adversarial fine-tuning, epoch {epoch + 1}/{epochs}")
            seen, correct, total_loss = 0, 0, 0.0
            # islice, not a break: a loader must not fetch a batch that is never used.
            for batch in itertools.islice(batches, max_batches):
                images, target = _read_batch(batch)
                images = check_images(images).to(device).detach().clone()
                target = target.to(device).detach().clone()
                model.eval()
                attacked = pgd_l2_attack(
                    model,
                    images,
                    target,
                    epsilon=epsilon,
                    step_size=step,
                    steps=steps,
                    loss_fn=loss,
                    random_start=random_start,
                    clamp=bounds,
                    generator=generator,
                )
                model.train()
                optimizer.zero_grad(set_to_none=True)
                output = model(attacked)
                value = loss(output, target)
                torch.autograd.backward(value)
                optimizer.step()
                seen += int(images.shape[0])
                total_loss += float(value.detach())
                if loss_fn is None:
                    correct += int((as_logits(output).argmax(1) == target).sum())
            if seen == 0:
                raise ValueError(
                    "Expected argument `data` to yield at least one batch, but it yielded none."
                )
            logger.info(
                "Adversarial fine-tuning epoch %d/%d: %d samples, loss %.4f%s.",
                epoch + 1,
                epochs,
                seen,
                total_loss / seen if loss_fn is None else total_loss,
                f", accuracy on attacked inputs {correct / seen:.3f}" if loss_fn is None else "",
            )
    return model.eval()


class RobustExtractor(nn.Module):
    """A small CNN whose penultimate features serve failure-mode mining.

    ``backbone`` is an ``nn.Sequential`` of conv-batchnorm-ReLU blocks with 2x2 max pooling after
    every block but the last, so 32x32 images give an 8x8 feature map with ``D = widths[-1]``
    channels. :meth:`feature_map` is the backbone's output ``(N, D, h, w)``; ``forward`` is its global
    average pool ``(N, D)``, so a heatmap of feature ``d`` is channel ``d`` of the map (the mean of
    that channel is exactly the feature). ``classifier`` maps the features to class logits. Build a
    trained one with :func:`make_robust_extractor`; a miner can also hook layer ``"backbone"`` for
    the spatial map.

    Args:
        num_classes: Outputs of ``classifier`` (>= 2).
        channels: Input channels.
        widths: Output channels of each block; the last one is the feature dimension ``D``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> extractor = RobustExtractor(num_classes=2).eval()
        >>> images = torch.rand(2, 3, 32, 32)
        >>> tuple(extractor(images).shape), tuple(extractor.feature_map(images).shape)
        ((2, 64), (2, 64, 8, 8))
        >>> tuple(extractor.logits(images).shape)
        (2, 2)
    """

    def __init__(
        self, *, num_classes: int, channels: int = 3, widths: Sequence[int] = (16, 32, 64)
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"Expected argument `num_classes` to be an int >= 2, but got {num_classes!r}. HINT: "
                "a binary task has num_classes=2."
            )
        sizes = tuple(widths) if isinstance(widths, Sequence) else ()
        if not sizes or any(
            isinstance(width, bool) or not isinstance(width, int) or width < 1 for width in sizes
        ):
            raise ValueError(
                f"Expected argument `widths` to be a non-empty sequence of positive ints, but got "
                f"{widths!r}."
            )
        blocks: list[nn.Module] = []
        in_channels = channels
        for position, width in enumerate(sizes):
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if position < len(sizes) - 1:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            in_channels = width
        self.num_classes = num_classes
        self.channels = channels
        self.num_features = sizes[-1]
        self.backbone = nn.Sequential(*blocks)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Return the spatial features ``(N, D, h, w)``."""
        features: torch.Tensor = self.backbone(images)
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the features ``(N, D)``: the global average pool of :meth:`feature_map`."""
        return self.feature_map(images).mean(dim=(2, 3))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Return the class logits ``(N, num_classes)``."""
        logits: torch.Tensor = self.classifier(self(images))
        return logits


class _LogitsView(nn.Module):
    """The extractor as a classifier (``forward`` returns logits), sharing its parameters."""

    def __init__(self, extractor: RobustExtractor) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor.logits(images)


class _TensorBatches:
    """Shuffled mini-batches of an ``(images, target)`` pair, reshuffled on every pass."""

    def __init__(
        self, images: torch.Tensor, target: torch.Tensor, *, batch_size: int, seed: int
    ) -> None:
        self.images = images
        self.target = target
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(self.images.shape[0], generator=self.generator)
        for start in range(0, order.shape[0], self.batch_size):
            chosen = order[start : start + self.batch_size].to(self.images.device)
            yield self.images[chosen], self.target[chosen]


def _tensor_pair(data: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(value, torch.Tensor) for value in data)
    ):
        images, target = data
        if images.ndim == 4 and target.ndim == 1:
            if images.shape[0] != target.shape[0]:
                raise ValueError(
                    f"Expected images and target of the same length, but got {images.shape[0]} "
                    f"images and {target.shape[0]} targets."
                )
            return images, target
    return None


class _CheckedBatches:
    """Checks that each batch holds ``(N, channels, H, W)`` images before passing it on."""

    def __init__(self, data: Iterable[Any], channels: int) -> None:
        self.data = data
        self.channels = channels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.data:
            images, target = _read_batch(batch)
            check_images(images)
            if images.ndim != 4 or images.shape[1] != self.channels:
                raise ValueError(
                    f"Expected images of shape (N, {self.channels}, H, W), but got "
                    f"{tuple(images.shape)}. HINT: set `channels` to the images' channel count."
                )
            yield images, target


def make_robust_extractor(
    data: tuple[torch.Tensor, torch.Tensor] | Iterable[Any],
    *,
    num_classes: int,
    channels: int = 3,
    widths: Sequence[int] = (16, 32, 64),
    epochs: int = 6,
    epsilon: float = 0.5,
    steps: int = 2,
    step_size: float | None = None,
    learning_rate: float = 3e-3,
    batch_size: int = 32,
    max_batches: int | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    seed: int = 0,
    num_threads: int | None = 1,
    progress: bool = False,
) -> RobustExtractor:
    """Build a :class:`RobustExtractor` and train it adversarially (:func:`adversarial_finetune`).

    The defaults suit small images in ``[0, 1]`` (the synthetic 32x32 scenes): 1000 of them train in
    about 5-9 s on one thread of a shared 2-core machine (6 epochs of 2-step PGD). The network is fully convolutional, so any image size works; the
    feature map is ``1 / 2 ** (len(widths) - 1)`` of the image side.

    Args:
        data: An ``(images, target)`` pair of tensors (``(N, C, H, W)`` and ``(N,)``), batched here
            with ``batch_size`` and reshuffled each epoch; or batches as :func:`adversarial_finetune`
            takes them (a ``DataLoader``, tuples, or dicts with ``"image"`` and ``"target"``).
        num_classes: Number of classes of ``target`` (>= 2).
        channels: Image channels.
        widths: Output channels of each convolutional block; ``widths[-1]`` features.
        epochs: Passes over the data.
        epsilon: L2 radius of the attacks.
        steps: PGD steps per batch.
        step_size: L2 length of a PGD step; default ``2.5 * epsilon / steps``.
        learning_rate: Adam's learning rate.
        batch_size: Batch size when ``data`` is a pair of tensors.
        max_batches: Stop each epoch after this many batches (``None``: all).
        clamp: The valid value range of the images, or ``None``.
        seed: Seeds the initial weights, the shuffling and the attacks: same seed, same model.
        num_threads: torch's intra-op threads while training, restored afterwards; ``None`` keeps
            the current setting. One thread suits this small network: on a shared 2-core machine
            two threads ran 2-20x slower than one.
        progress: Show a ``tqdm`` progress bar over the batches.

    Returns:
        The trained extractor, in ``eval()`` mode, on the images' device (the device of the
        first batch for batched data).

    Raises:
        ValueError: For an argument out of range, images of another shape or channel count, or
            images and targets of different lengths.
        TypeError: For batches whose images or targets are not tensors.
        RuntimeError: For batches of another layout.

    Example:
        >>> images = torch.rand(16, 3, 16, 16)
        >>> target = (images[:, 0].mean(dim=(1, 2)) > 0.5).long()
        >>> extractor = make_robust_extractor((images, target), num_classes=2, epochs=1,
        ...                                   widths=(4, 8), batch_size=8)
        >>> tuple(extractor(images).shape), extractor.training
        ((16, 8), False)
    """
    check_positive_int("batch_size", batch_size)
    if num_threads is not None:
        check_positive_int("num_threads", num_threads)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected argument `seed` to be a non-negative int, but got {seed!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        extractor = RobustExtractor(num_classes=num_classes, channels=channels, widths=widths)
    pair = _tensor_pair(data)
    batches: Iterable[Any]
    if pair is not None:
        images, target = pair
        check_images(images)
        device = images.device
        batches = _CheckedBatches(
            _TensorBatches(images, target, batch_size=batch_size, seed=seed), channels
        )
    else:
        if isinstance(data, Iterator):
            raise ValueError(
                f"Expected argument `data` to be re-iterable, but got a one-shot {type(data).__name__}. "
                "HINT: pass a DataLoader, a list of batches or an (images, target) pair."
            )
        first = next(iter(_CheckedBatches(data, channels)), None)
        if first is None:
            raise ValueError(
                "Expected argument `data` to yield at least one batch, but it yielded none."
            )
        device = first[0].device
        batches = _CheckedBatches(data, channels)
    extractor.to(device)
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        adversarial_finetune(
            _LogitsView(extractor),
            batches,
            epochs=epochs,
            epsilon=epsilon,
            steps=steps,
            step_size=step_size,
            learning_rate=learning_rate,
            max_batches=max_batches,
            clamp=clamp,
            seed=seed,
            progress=progress,
        )
    finally:
        torch.set_num_threads(threads)
    return extractor.eval()
