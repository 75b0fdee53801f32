"""Fashion-MNIST from its IDX files: a DataModule with image-derived attributes, and a small CNN.

The real Fashion-MNIST (Zalando, MIT licence; 60,000 training and 10,000 test images of 10 clothing
classes, 28x28 grey levels) installs offline from Debian's ``dataset-fashion-mnist`` package into
:data:`DEFAULT_ROOT`. The images carry no metadata, so every sample gets attributes computed from its
own pixels, which the monitors can slice on (see :func:`image_attributes`): how bright the image is,
how much of it is ink (foreground), and the aspect of the foreground's bounding box.

Both classes are importable at module level and picklable, so LightningCLI configs
(``class_path: lightning_insight.datasets.FashionMNISTDataModule``) and ``ddp_spawn`` can use them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_insight.datasets.idx import read_idx_pair
from lightning_insight.datasets.lightning import ImageClassifier, SplitDataModule

__all__ = [
    "ATTRIBUTE_BINS",
    "CLASSES",
    "DEFAULT_ROOT",
    "FashionClassifier",
    "FashionMNISTDataModule",
    "FashionMNISTDataset",
    "image_attributes",
    "load_fashion_mnist",
]

logger = logging.getLogger(__name__)

#: Where Debian's ``dataset-fashion-mnist`` package installs the four IDX files.
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"

#: The class names, by label.
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: File prefix of each of the data set's two splits, and the code that starts its samples' ids.
SPLIT_CODES = {"train": 0, "t10k": 1}

#: ``sample_id = split code * ID_STRIDE + index of the image in its file``.
ID_STRIDE = 1_000_000

#: A pixel above this grey level (0-255) is ink (foreground).
FOREGROUND_LEVEL = 25

#: Cut points and names of each attribute's bins. The cut points are fixed (about the terciles of
#: the training split), so a sample's attributes do not depend on which other samples are loaded.
ATTRIBUTE_BINS: dict[str, tuple[tuple[float, ...], tuple[str, ...]]] = {
    # mean grey level of the whole image, in [0, 1]
    "brightness": ((0.2, 0.35), ("dark", "medium", "bright")),
    # fraction of the 28x28 pixels that are ink
    "ink": ((0.35, 0.55), ("low", "medium", "high")),
    # width / height of the ink's bounding box
    "aspect": ((0.75, 1.33), ("tall", "square", "wide")),
}

PACKAGE = "dataset-fashion-mnist"


def _extent(mask: np.ndarray) -> np.ndarray:
    """Per row of ``mask`` (N, L): last true position - first true position + 1 (0 when none)."""
    positions = np.arange(mask.shape[1])
    first = np.where(mask, positions, mask.shape[1]).min(axis=1)
    last = np.where(mask, positions, -1).max(axis=1)
    extent: np.ndarray = np.maximum(last - first + 1, 0)
    return extent


def image_attributes(images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image attributes from the pixels: ``brightness``, ``ink`` and ``aspect`` bins (strings).

    See :data:`ATTRIBUTE_BINS` for the measures, cut points and bin names. An image without ink has
    aspect ``"square"``.

    Args:
        images: ``(N, H, W)`` grey levels in 0-255 (``uint8`` as read from the IDX file).

    Returns:
        ``{"brightness": array of N str, "ink": ..., "aspect": ...}``.

    Raises:
        ValueError: If ``images`` is not 3-D.

    Example:
        >>> images = np.zeros((2, 28, 28), dtype=np.uint8)
        >>> images[0, 2:26, 10:18] = 255   # a tall bright bar
        >>> images[1, 12:16, 1:27] = 90    # a wide faint bar
        >>> {name: values.tolist() for name, values in image_attributes(images).items()}
        {'brightness': ['medium', 'dark'], 'ink': ['low', 'low'], 'aspect': ['tall', 'wide']}
    """
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 3:
        raise ValueError(
            f"Expected argument `images` to have shape (N, H, W), but got shape {array.shape}."
        )
    flat = array.reshape(array.shape[0], -1).astype(np.float64)
    foreground: np.ndarray = np.asarray(array > FOREGROUND_LEVEL)
    height = _extent(np.asarray(foreground.any(axis=2)))
    width = _extent(np.asarray(foreground.any(axis=1)))
    measures = {
        "brightness": flat.mean(axis=1) / 255.0,
        "ink": foreground.reshape(array.shape[0], -1).mean(axis=1),
        "aspect": np.where(height > 0, width / np.maximum(height, 1), 1.0),
    }
    attributes: dict[str, np.ndarray] = {}
    for name, values in measures.items():
        edges, labels = ATTRIBUTE_BINS[name]
        attributes[name] = np.asarray(labels)[np.digitize(values, edges)]
    return attributes


def _split_files(root: Path, split: str) -> tuple[Path, Path] | None:
    """The images and labels files of ``split`` in ``root`` (``.gz`` or plain), or None when absent."""
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for name in (f"{split}-{kind}.gz", f"{split}-{kind}"):
            if (root / name).is_file():
                found.append(root / name)
                break
        else:
            return None
    return found[0], found[1]


def load_fashion_mnist(
    root: str | os.PathLike[str] = DEFAULT_ROOT, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of Fashion-MNIST from its IDX files.

    Args:
        root: Folder with ``{split}-images-idx3-ubyte[.gz]`` and ``{split}-labels-idx1-ubyte[.gz]``.
        split: ``"train"`` (60,000 images) or ``"t10k"`` (10,000).

    Returns:
        ``(images, labels)``: ``uint8`` ``(N, 28, 28)`` and ``int64`` ``(N,)`` in ``[0, 10)``.

    Raises:
        ValueError: For an unknown split, labels outside ``[0, 10)``, or a file the IDX reader rejects
            (:func:`~lightning_insight.datasets.idx.read_idx_pair`).
        FileNotFoundError: If the files are not in ``root``; the message names the folder and the
            Debian package that installs them.
    """
    if split not in SPLIT_CODES:
        raise ValueError(
            f"Expected argument `split` to be one of {sorted(SPLIT_CODES)}, but got {split!r}."
        )
    folder = Path(root)
    files = _split_files(folder, split)
    if files is None:
        raise FileNotFoundError(
            f"Expected Fashion-MNIST's IDX files '{split}-images-idx3-ubyte[.gz]' and "
            f"'{split}-labels-idx1-ubyte[.gz]' in '{folder}', but they are not there. HINT: install "
            f"Debian's package `{PACKAGE}` (apt-get install {PACKAGE}; it puts them in "
            f"{DEFAULT_ROOT}), or pass `root=` the folder that holds them."
        )
    images, labels = read_idx_pair(*files)
    if images.ndim != 3:
        raise ValueError(
            f"Expected the images in '{files[0]}' to have shape (N, H, W), but got {images.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise ValueError(
            f"Expected the labels in '{files[1]}' to lie in [0, {len(CLASSES)}), but got values in "
            f"[{labels.min()}, {labels.max()}]."
        )
    return images, labels.astype(np.int64)


class FashionMNISTDataset(Dataset[dict[str, Any]]):
    """A map-style dataset over some Fashion-MNIST images.

    Each item is ``{"image": Tensor[1, 28, 28] in [0, 1], "target": int64 scalar, "sample_id": int64
    scalar, "attributes": {"brightness": str, "ink": str, "aspect": str}}``; PyTorch's default collate
    turns a batch's ``attributes`` into lists of strings.

    Args:
        images: ``uint8`` ``(N, H, W)``.
        labels: ``(N,)`` class labels.
        sample_ids: ``(N,)`` ids.

    Raises:
        ValueError: If the lengths disagree or the images are not 3-D.

    Example:
        >>> dataset = FashionMNISTDataset(np.zeros((2, 28, 28), np.uint8), np.array([3, 4]), np.array([7, 8]))
        >>> item = dataset[1]
        >>> tuple(item["image"].shape), int(item["target"]), int(item["sample_id"]), item["attributes"]["aspect"]
        ((1, 28, 28), 4, 8, 'square')
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, sample_ids: np.ndarray) -> None:
        if images.ndim != 3 or not len(images) == len(labels) == len(sample_ids):
            raise ValueError(
                "Expected `images` (N, H, W), `labels` (N,) and `sample_ids` (N,) of one length N, "
                f"but got shapes {images.shape}, {labels.shape} and {sample_ids.shape}."
            )
        self.images = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
        self.targets = torch.as_tensor(labels, dtype=torch.int64)
        self.sample_ids = torch.as_tensor(sample_ids, dtype=torch.int64)
        self.attributes = {
            name: values.tolist() for name, values in image_attributes(images).items()
        }

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.images[index].float().div_(255.0),
            "target": self.targets[index],
            "sample_id": self.sample_ids[index],
            "attributes": {name: values[index] for name, values in self.attributes.items()},
        }


def _check_count(name: str, value: object, *, available: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= available:
        raise ValueError(
            f"Expected argument `{name}` to be None or an int in [1, {available}], but got {value!r}."
        )


class FashionMNISTDataModule(SplitDataModule):
    """Fashion-MNIST's training split for training; its test split, halved, for validation and test.

    ``fit`` trains on ``num_train`` images drawn (seeded) from the 60,000 of ``train`` (all when None);
    the 10,000 ``t10k`` images are shuffled once (seeded) and the first ``num_val`` validate, the next
    ``num_test`` test. A sample's id is ``split code * 1_000_000 + its index in its file`` (train 0,
    t10k 1), the same whatever subset is loaded. Batches are dictionaries (see
    :class:`FashionMNISTDataset`) with the attributes ``brightness``, ``ink`` and ``aspect``.

    Args:
        root: Folder with the IDX files (default: where Debian's ``dataset-fashion-mnist`` puts them).
        num_train: Training images (``None``: all 60,000).
        num_val: Validation images, from ``t10k``.
        num_test: Test images, from ``t10k`` (``num_val + num_test`` at most the split's size).
        batch_size: Batch size of every loader.
        seed: Seed of the subsets and of the training shuffle.
        num_workers: ``DataLoader`` worker processes.

    Raises:
        ValueError: If an argument is out of range (counts are checked against the files at ``setup``).
        FileNotFoundError: At ``setup``, if the IDX files are not in ``root``; the message names the
            folder and the Debian package.

    Example:
        >>> datamodule = FashionMNISTDataModule(num_train=1000, num_val=500, batch_size=32)
        >>> datamodule.root, datamodule.num_classes
        ('/usr/share/datasets/fashion-mnist', 10)
    """

    num_classes = len(CLASSES)

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        num_train: int | None = None,
        num_val: int = 5000,
        num_test: int = 5000,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"Expected argument `root` to be a path, but got {root!r}.")
        _check_count("num_train", num_train, available=60_000)
        for name, value in (("num_val", num_val), ("num_test", num_test)):
            if value is None:
                raise ValueError(f"Expected argument `{name}` to be an int >= 1, but got None.")
            _check_count(name, value, available=10_000)
        _check_count("batch_size", batch_size, available=2**31)
        for name, number in (("seed", seed), ("num_workers", num_workers)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ValueError(
                    f"Expected argument `{name}` to be a non-negative int, but got {number!r}."
                )
        self.save_hyperparameters()
        self.root = os.fspath(root)
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_test
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.train_data: FashionMNISTDataset | None = None
        self.val_data: FashionMNISTDataset | None = None
        self.test_data: FashionMNISTDataset | None = None

    def _subset(self, split: str, start: int, count: int | None) -> FashionMNISTDataset:
        images, labels = load_fashion_mnist(self.root, split)
        total = len(labels)
        stop = total if count is None else start + count
        if stop > total:
            raise ValueError(
                f"Expected at most {total} images from '{split}' in '{self.root}', but the arguments ask "
                f"for {stop} (num_val + num_test for t10k). HINT: lower `num_val` or `num_test`."
            )
        order = np.random.default_rng([self.seed, SPLIT_CODES[split]]).permutation(total)
        chosen = np.sort(order[start:stop])
        logger.info("Fashion-MNIST: %d images of '%s' from %s", len(chosen), split, self.root)
        return FashionMNISTDataset(
            images[chosen], labels[chosen], SPLIT_CODES[split] * ID_STRIDE + chosen
        )

    @override
    def setup(self, stage: str) -> None:
        """Load the splits the stage needs (each once; the subsets are deterministic)."""
        if stage == "fit" and self.train_data is None:
            self.train_data = self._subset("train", 0, self.num_train)
        if stage in ("fit", "validate") and self.val_data is None:
            self.val_data = self._subset("t10k", 0, self.num_val)
        if stage in ("test", "predict") and self.test_data is None:
            self.test_data = self._subset("t10k", self.num_val, self.num_test)


class FashionClassifier(ImageClassifier):
    """A small CNN for the 10 Fashion-MNIST classes.

    ``backbone`` is an ``nn.Sequential`` of conv-batchnorm-relu blocks (``backbone.0`` ...
    ``backbone.{len(channels) - 1}``), each but the last followed by 2x2 max pooling, so with three
    blocks the last one (the usual layer for attribution maps) is 7x7 on 28x28 inputs. Global average
    pooling and ``head``, a linear layer to 10 logits, follow. ``forward`` returns logits ``(N, 10)``.

    ``validation_step`` and ``test_step`` return ``{"preds": probabilities (N, 10), "target": (N,)}``,
    which the monitors read (``task="multiclass"``).

    Args:
        channels: Output channels of each backbone block.
        learning_rate: Adam's learning rate.
        num_classes: Number of classes.

    Raises:
        ValueError: If an argument is out of range.

    Logged keys:
        ``train_loss`` (each step), ``val_loss``, ``val_accuracy``, ``test_loss``, ``test_accuracy``
        (each epoch).

    Example:
        >>> model = FashionClassifier(channels=(4, 8))
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64),
        learning_rate: float = 3e-3,
        num_classes: int = len(CLASSES),
    ) -> None:
        super().__init__()
        widths = self._check_arguments(channels, learning_rate)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"Expected argument `num_classes` to be an int >= 2, but got {num_classes!r}."
            )
        self.save_hyperparameters()
        # A list, not a tuple, so hparams.yaml stays plain YAML that LightningCLI and safe loaders read.
        self.hparams["channels"] = list(widths)
        self.learning_rate = float(learning_rate)
        blocks: list[nn.Module] = []
        in_channels = 1
        for position, out_channels in enumerate(widths):
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            if position < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.backbone = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_channels, num_classes)
        self.example_input_array = torch.zeros(1, 1, 28, 28)

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the class logits, shape ``(N, num_classes)``."""
        logits: torch.Tensor = self.head(self.pool(self.backbone(images)))
        return logits

    @override
    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    @override
    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)

    @override
    def _predicted(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities.argmax(dim=1)
