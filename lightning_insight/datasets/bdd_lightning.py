"""A Lightning DataModule over BDD100k detection labels, real or synthetic.

Importable at module level and picklable, so ``strategy="ddp_spawn"`` and LightningCLI configs
(``class_path: lightning_insight.datasets.BDDDataModule``) can use it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_insight.datasets.bdd100k import (
    CATEGORIES,
    SPLITS,
    BDDDetectionDataset,
    _image_size,
    collate_detection,
    load_bdd100k,
    make_synthetic_bdd,
    read_synthetic_config,
    synthetic_config,
)

__all__ = ["BDDDataModule"]

logger = logging.getLogger(__name__)

#: Keys of the ``synthetic`` dict and their defaults (``image_size`` and ``seed`` default to the
#: datamodule's own).
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "num_train": 1000,
    "num_val": 250,
    "num_test": 250,
    "max_objects": 5,
}
_SYNTHETIC_KEYS = frozenset({*SYNTHETIC_DEFAULTS, "image_size", "seed"})
_DEFAULT_SYNTHETIC_SIZE = (128, 72)


@dataclass(frozen=True, slots=True)
class _SplitFiles:
    labels: Path
    images: Path
    pedestrian_attributes: Path | None


def _optional_path(name: str, value: object) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise TypeError(
            f"Expected argument `{name}` to be None, a str or os.PathLike, "
            f"but got {type(value).__name__}."
        )
    return Path(value)


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((path for path in candidates if path.exists()), None)


class BDDDataModule(pl.LightningDataModule):
    """Train, validation and test splits of BDD100k detection labels, or of a synthetic BDD data set.

    Files come from ``root`` in the BDD100k layout, from explicit paths, or both (explicit paths win).
    Under ``root`` the split ``s`` reads the first that exists of ``labels/det_<s>.json``,
    ``labels/det_20/det_<s>.json`` and ``labels/bdd100k_labels_images_<s>.json``; images from
    ``images/<s>`` or ``images/100k/<s>``; pedestrian attributes from
    ``labels/pedestrian_attributes_<s>.csv`` (or ``.json``) when present.

    With ``synthetic`` set, :func:`~lightning_insight.datasets.make_synthetic_bdd` writes the splits into
    ``root`` when they are missing or were written with another config (in ``prepare_data``, and in
    ``setup`` if that did not run), so a config can train from nothing.

    Batches (see :func:`~lightning_insight.datasets.collate_detection`) are
    ``{"image": float32 (B, 3, H, W) in [0, 1], "target": [per-image dict with "boxes" (n, 4) xyxy
    pixels, "labels" (n,), "iscrowd" (n,), "occluded", "truncated", pedestrian attributes ...],
    "attributes": {"weather": [...], "timeofday": [...], "scene": [...]}, "sample_id": int64 (B,)}``,
    where ``sample_id`` is the image's position in its split, sorted by name.

    Args:
        root: Data set folder (required with ``synthetic``).
        train_labels: Training label file; overrides the one under ``root``.
        val_labels: Validation label file.
        test_labels: Test label file.
        train_images: Folder of the training images.
        val_images: Folder of the validation images.
        test_images: Folder of the test images.
        pedestrian_attributes: Per-pedestrian attribute file (CSV or JSON) used for every split, in
            place of the per-split files under ``root``.
        image_size: ``(width, height)`` or the side of a square to resize every image to (boxes are
            scaled with it); ``None`` keeps the files' size, which must then be the same for all
            images. With ``synthetic`` it is also the generated size (default ``(128, 72)``).
        batch_size: Batch size of every loader.
        num_workers: ``DataLoader`` worker processes.
        seed: Seed of the training shuffle, and of the synthetic data unless ``synthetic`` sets one.
        synthetic: ``False`` for files on disk; ``True`` or a dict with any of ``num_train`` (1000),
            ``num_val`` (250), ``num_test`` (250), ``max_objects`` (5), ``image_size`` and ``seed`` to
            generate a synthetic data set into ``root``.

    Raises:
        ValueError: If an argument is out of range, no source of labels is given, or ``synthetic`` has
            an unknown key.
        TypeError: If a path argument is not a str or os.PathLike.
        FileNotFoundError: In ``setup``, if a split's labels or images cannot be found.
        FileExistsError: With ``synthetic``, if ``root`` already holds labels that it did not generate.

    Example:
        >>> import tempfile
        >>> datamodule = BDDDataModule(tempfile.mkdtemp(), batch_size=2, image_size=64,
        ...                            synthetic={"num_train": 4, "num_val": 2, "num_test": 2})
        >>> datamodule.setup("validate")
        >>> batch = next(iter(datamodule.val_dataloader()))
        >>> tuple(batch["image"].shape), sorted(batch["attributes"]), batch["sample_id"].tolist()
        ((2, 3, 64, 64), ['scene', 'timeofday', 'weather'], [0, 1])
    """

    def __init__(
        self,
        root: str | None = None,
        train_labels: str | None = None,
        val_labels: str | None = None,
        test_labels: str | None = None,
        train_images: str | None = None,
        val_images: str | None = None,
        test_images: str | None = None,
        pedestrian_attributes: str | None = None,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        synthetic: bool | dict[str, Any] = False,
    ) -> None:
        super().__init__()
        self.root = _optional_path("root", root)
        self._explicit: dict[str, dict[str, Path | None]] = {
            "train": {
                "labels": _optional_path("train_labels", train_labels),
                "images": _optional_path("train_images", train_images),
            },
            "val": {
                "labels": _optional_path("val_labels", val_labels),
                "images": _optional_path("val_images", val_images),
            },
            "test": {
                "labels": _optional_path("test_labels", test_labels),
                "images": _optional_path("test_images", test_images),
            },
        }
        self.pedestrian_attributes = _optional_path("pedestrian_attributes", pedestrian_attributes)
        self.image_size = None if image_size is None else _image_size("image_size", image_size, 1)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(
                f"Expected argument `batch_size` to be a positive int, but got {batch_size!r}."
            )
        for name, value in (("num_workers", num_workers), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"Expected argument `{name}` to be a non-negative int, but got {value!r}."
                )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.synthetic = self._synthetic_settings(synthetic)
        has_labels = any(paths["labels"] is not None for paths in self._explicit.values())
        if self.root is None and (self.synthetic is not None or not has_labels):
            what = "with `synthetic`" if self.synthetic is not None else "without label files"
            raise ValueError(
                f"Expected argument `root` to be a folder {what}, but got None. "
                "HINT: pass `root`, or `train_labels`/`val_labels`/`test_labels` with their images."
            )
        self.save_hyperparameters()
        self.datasets: dict[str, BDDDetectionDataset] = {}

    def _synthetic_settings(self, synthetic: object) -> dict[str, Any] | None:
        if synthetic is False:
            return None
        if synthetic is True:
            synthetic = {}
        if not isinstance(synthetic, dict):
            raise ValueError(
                f"Expected argument `synthetic` to be a bool or a dict, but got {synthetic!r}."
            )
        unknown = sorted(str(key) for key in synthetic if key not in _SYNTHETIC_KEYS)
        if unknown:
            raise ValueError(
                f"Expected the keys of argument `synthetic` to be among {sorted(_SYNTHETIC_KEYS)}, "
                f"but got {unknown}."
            )
        settings = {
            **SYNTHETIC_DEFAULTS,
            "image_size": self.image_size or _DEFAULT_SYNTHETIC_SIZE,
            "seed": self.seed,
            **synthetic,
        }
        for split in SPLITS:
            # Checks every value now, so a bad config fails when it is parsed, not after training.
            synthetic_config(**self._generator_arguments(settings, split))
        return settings

    @staticmethod
    def _generator_arguments(settings: dict[str, Any], split: str) -> dict[str, Any]:
        return {
            "num_images": settings[f"num_{split}"],
            "image_size": settings["image_size"],
            "seed": settings["seed"],
            "split": split,
            "max_objects": settings["max_objects"],
        }

    @property
    def categories(self) -> tuple[str, ...]:
        """Class names; a target label is a position in this tuple."""
        return CATEGORIES

    @property
    def num_classes(self) -> int:
        """Number of classes (10)."""
        return len(CATEGORIES)

    def _generate(self, split: str) -> None:
        if self.synthetic is None or self.root is None:
            return
        arguments = self._generator_arguments(self.synthetic, split)
        if read_synthetic_config(self.root, split) == synthetic_config(**arguments):
            return
        logger.info("Generating the synthetic %s split in %s.", split, self.root)
        make_synthetic_bdd(self.root, **arguments)

    @override
    def prepare_data(self) -> None:
        """Write the synthetic splits that are missing or stale (nothing for files on disk)."""
        for split in SPLITS:
            self._generate(split)

    def _files(self, split: str) -> _SplitFiles:
        explicit = self._explicit[split]
        root = self.root
        labels = explicit["labels"]
        if labels is None and root is not None:
            labels = _first_existing(
                [
                    root / "labels" / f"det_{split}.json",
                    root / "labels" / "det_20" / f"det_{split}.json",
                    root / "labels" / f"bdd100k_labels_images_{split}.json",
                ]
            )
        if labels is None:
            raise FileNotFoundError(
                f"Expected the {split} labels at `{split}_labels` or under `root` "
                f"(labels/det_{split}.json, labels/det_20/det_{split}.json), but found none in "
                f"{root}. HINT: pass `{split}_labels`, or `synthetic=True` to generate a data set."
            )
        images = explicit["images"]
        if images is None and root is not None:
            images = _first_existing([root / "images" / split, root / "images" / "100k" / split])
        if images is None:
            raise FileNotFoundError(
                f"Expected the {split} images at `{split}_images` or under `root` (images/{split}, "
                f"images/100k/{split}), but found none in {root}. HINT: pass `{split}_images`."
            )
        attributes = self.pedestrian_attributes
        if attributes is None and root is not None:
            attributes = _first_existing(
                [
                    root / "labels" / f"pedestrian_attributes_{split}.csv",
                    root / "labels" / f"pedestrian_attributes_{split}.json",
                ]
            )
        return _SplitFiles(labels=labels, images=images, pedestrian_attributes=attributes)

    def _load(self, split: str) -> None:
        if split in self.datasets:
            return
        self._generate(split)
        files = self._files(split)
        frames = load_bdd100k(files.labels, pedestrian_attributes=files.pedestrian_attributes)
        self.datasets[split] = BDDDetectionDataset(files.images, frames, image_size=self.image_size)
        logger.info("Loaded %d %s images from %s.", len(frames), split, files.labels)

    @override
    def setup(self, stage: str) -> None:
        """Load the splits the stage needs, each once.

        ``fit`` loads train and val, ``validate`` val, ``test`` and ``predict`` test; synthetic splits
        are generated first if missing.
        """
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }
        for split in needed.get(stage, ()):
            self._load(split)

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader[dict[str, Any]]:
        dataset = self.datasets.get(split)
        if dataset is None:
            raise RuntimeError(
                f"The {split} split has not been loaded. HINT: call `setup()` with the matching stage "
                "first, or pass the datamodule to a Trainer."
            )
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            collate_fn=collate_detection,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The training loader, shuffled with a generator seeded by ``seed``."""
        return self._loader("train", shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The validation loader, in sample order."""
        return self._loader("val", shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The test loader, in sample order."""
        return self._loader("test", shuffle=False)

    @override
    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The test split, in sample order."""
        return self._loader("test", shuffle=False)
