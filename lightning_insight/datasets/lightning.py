"""Lightning wrappers for the synthetic scenes: a DataModule and a small CNN classifier.

Both are importable at module level and picklable, so ``strategy="ddp_spawn"`` and LightningCLI configs
(``class_path: lightning_insight.datasets.ScenesDataModule``) can use them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from lightning_insight.datasets.scenes import SceneData, ScenesDataset, make_scenes

__all__ = ["SceneClassifier", "ScenesDataModule"]

logger = logging.getLogger(__name__)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected argument `{name}` to be a positive int, but got {value!r}.")


def _check_fraction(name: str, value: object, *, upper: float, closed: bool) -> None:
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if valid:
        number = float(value)  # type: ignore[arg-type]
        valid = 0.0 <= number <= upper if closed else 0.0 <= number < upper
    if not valid:
        bracket = "]" if closed else ")"
        raise ValueError(
            f"Expected argument `{name}` to be a float in [0, {upper:g}{bracket}, but got {value!r}."
        )


class SplitDataModule(pl.LightningDataModule):
    """The loaders every DataModule of this package shares.

    ``train_data``/``val_data``/``test_data`` (set by ``setup``) are served in batches of
    ``batch_size``; training shuffled by a generator seeded with ``seed``, the others in sample order;
    ``num_workers`` worker processes. Subclasses set those attributes and may turn a split into a
    dataset with :meth:`_dataset`.
    """

    train_data: Any
    val_data: Any
    test_data: Any
    batch_size: int
    seed: int
    num_workers: int

    def _dataset(self, data: Any) -> Dataset[dict[str, Any]]:
        """The dataset a split is served from (the split itself by default)."""
        dataset: Dataset[dict[str, Any]] = data
        return dataset

    def _loader(self, data: Any, split: str, *, shuffle: bool) -> DataLoader[dict[str, Any]]:
        if data is None:
            raise RuntimeError(
                f"The {split} split has not been set up. HINT: call `setup()` with the matching stage "
                "first, or pass the datamodule to a Trainer."
            )
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self._dataset(data),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The training loader, shuffled with a generator seeded by ``seed``."""
        return self._loader(self.train_data, "train", shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The validation loader, in sample order."""
        return self._loader(self.val_data, "val", shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The test loader, in sample order."""
        return self._loader(self.test_data, "test", shuffle=False)

    @override
    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The test split, in sample order."""
        return self._loader(self.test_data, "test", shuffle=False)


class ScenesDataModule(SplitDataModule):
    """Train, validation and test splits of :func:`~lightning_insight.datasets.make_scenes`.

    The training split carries the spurious corner cue with the given agreement; the validation and test
    splits carry it independently of the label, so a model that relies on the cue loses accuracy there.
    Batches are dictionaries (see :class:`~lightning_insight.datasets.ScenesDataset`) with ``"image"``,
    ``"target"``, ``"sample_id"`` and ``"attributes"`` (``weather``, ``timeofday``, ``scene``).

    Args:
        num_train: Number of training images.
        num_val: Number of validation images.
        num_test: Number of test images.
        image_size: Height and width of the images (>= 16).
        batch_size: Batch size of every loader.
        seed: Seed of the data and of the training shuffle.
        num_workers: ``DataLoader`` worker processes.
        spurious_correlation: Probability that the cue agrees with the label in the training split.
        label_noise: Fraction of flipped labels in every split, in ``[0, 0.5)``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> datamodule = ScenesDataModule(num_train=8, num_val=4, num_test=4, batch_size=4)
        >>> datamodule.setup("fit")
        >>> batch = next(iter(datamodule.val_dataloader()))
        >>> tuple(batch["image"].shape), len(batch["attributes"]["weather"])
        ((4, 3, 32, 32), 4)
    """

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 1000,
        num_test: int = 1000,
        image_size: int = 32,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        spurious_correlation: float = 0.9,
        label_noise: float = 0.03,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
            ("batch_size", batch_size),
        ):
            _check_positive_int(name, value)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
            raise ValueError(
                f"Expected argument `image_size` to be an int >= 16, but got {image_size!r}."
            )
        for name, value in (("seed", seed), ("num_workers", num_workers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"Expected argument `{name}` to be a non-negative int, but got {value!r}."
                )
        _check_fraction("spurious_correlation", spurious_correlation, upper=1.0, closed=True)
        _check_fraction("label_noise", label_noise, upper=0.5, closed=False)
        self.save_hyperparameters()
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_test
        self.image_size = image_size
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.spurious_correlation = spurious_correlation
        self.label_noise = label_noise
        self.train_data: SceneData | None = None
        self.val_data: SceneData | None = None
        self.test_data: SceneData | None = None

    def _make(self, num_samples: int, split: str) -> SceneData:
        return make_scenes(
            num_samples,
            image_size=self.image_size,
            seed=self.seed,
            split=split,
            spurious_correlation=self.spurious_correlation if split == "train" else None,
            label_noise=self.label_noise,
        )

    @override
    def setup(self, stage: str) -> None:
        """Generate the splits the stage needs (each once; generation is deterministic)."""
        if stage == "fit" and self.train_data is None:
            self.train_data = self._make(self.num_train, "train")
        if stage in ("fit", "validate") and self.val_data is None:
            self.val_data = self._make(self.num_val, "val")
        if stage in ("test", "predict") and self.test_data is None:
            self.test_data = self._make(self.num_test, "test")

    @override
    def _dataset(self, data: Any) -> Dataset[dict[str, Any]]:
        return ScenesDataset(data)


class ImageClassifier(pl.LightningModule):
    """The steps every classifier of this package shares.

    Subclasses build ``forward``, set ``learning_rate``, and say how logits become a loss,
    probabilities and predictions. ``validation_step``/``test_step`` log ``{val,test}_loss`` and ``{val,test}_accuracy`` and return
    ``{"preds": probabilities, "target": labels}``, what the monitors read.
    """

    learning_rate: float

    @staticmethod
    def _check_arguments(channels: Sequence[int], learning_rate: float) -> tuple[int, ...]:
        """The block widths, once ``channels`` and ``learning_rate`` are checked.

        Raises:
            ValueError: naming the argument and the value got.
        """
        widths = tuple(channels)
        if not widths or any(
            isinstance(value, bool) or not isinstance(value, int) or value <= 0 for value in widths
        ):
            raise ValueError(
                f"Expected argument `channels` to be a non-empty sequence of positive ints, but got {channels!r}."
            )
        if (
            isinstance(learning_rate, bool)
            or not isinstance(learning_rate, int | float)
            or not learning_rate > 0
        ):
            raise ValueError(
                f"Expected argument `learning_rate` to be a positive float, but got {learning_rate!r}."
            )
        return widths

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _predicted(self, probabilities: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The loss on ``batch["target"]``."""
        logits = self(batch["image"])
        loss = self._loss(logits, batch["target"])
        self.log("train_loss", loss, batch_size=logits.shape[0])
        return loss

    def _evaluate(self, batch: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
        target = batch["target"]
        logits = self(batch["image"])
        loss = self._loss(logits, target)
        probabilities = self._probabilities(logits)
        accuracy = (self._predicted(probabilities) == target).float().mean()
        size = int(target.shape[0])
        self.log(f"{prefix}_loss", loss, batch_size=size, sync_dist=True)
        self.log(f"{prefix}_accuracy", accuracy, batch_size=size, prog_bar=True, sync_dist=True)
        return {"preds": probabilities, "target": target}

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Log ``val_loss`` and ``val_accuracy``; return the probabilities and targets."""
        return self._evaluate(batch, "val")

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Log ``test_loss`` and ``test_accuracy``; return the probabilities and targets."""
        return self._evaluate(batch, "test")

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Return the probabilities."""
        return self._probabilities(self(batch["image"]))

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with ``learning_rate``."""
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


class SceneClassifier(ImageClassifier):
    """A small CNN that says whether a pedestrian is in a scene.

    ``backbone`` is an ``nn.Sequential`` of conv-batchnorm-relu-maxpool blocks (``backbone.0`` ...
    ``backbone.{len(channels) - 1}``; the last block is the usual layer for attribution maps), followed
    by global average pooling and ``head``, a linear layer to one logit. ``forward`` returns the logits
    with shape ``(N,)``.

    ``validation_step`` and ``test_step`` return ``{"preds": probabilities (N,), "target": (N,)}``, which
    the monitors read.

    Args:
        channels: Output channels of each backbone block.
        learning_rate: Adam's learning rate.
        image_size: Side of the square input images; used for ``example_input_array``.

    Raises:
        ValueError: If an argument is out of range.

    Logged keys:
        ``train_loss`` (each step), ``val_loss``, ``val_accuracy``, ``test_loss``, ``test_accuracy``
        (each epoch).

    Example:
        >>> model = SceneClassifier(channels=(4, 8))
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64),
        learning_rate: float = 3e-3,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        widths = self._check_arguments(channels, learning_rate)
        _check_positive_int("image_size", image_size)
        self.save_hyperparameters()
        # A list, not a tuple, so hparams.yaml stays plain YAML that LightningCLI and safe loaders read.
        self.hparams["channels"] = list(widths)
        self.learning_rate = float(learning_rate)
        blocks: list[nn.Module] = []
        in_channels = 3
        for out_channels in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            in_channels = out_channels
        self.backbone = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_channels, 1)
        self.example_input_array = torch.zeros(1, 3, image_size, image_size)

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the pedestrian logits, shape ``(N,)``."""
        logits: torch.Tensor = self.head(self.pool(self.backbone(images)))
        return logits.squeeze(-1)

    @override
    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target.float())

    @override
    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    @override
    def _predicted(self, probabilities: torch.Tensor) -> torch.Tensor:
        return (probabilities >= 0.5).long()
