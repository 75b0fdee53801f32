"""Synthetic data sets with planted disparities, BDD100k detection labels, and Lightning wrappers.

``make_scenes``, ``load_bdd100k``, ``make_synthetic_bdd`` and their data classes need only numpy, torch
and Pillow; ``ScenesDataModule``, ``SceneClassifier`` (:mod:`lightning_insight.datasets.lightning`) and
``BDDDataModule`` (:mod:`lightning_insight.datasets.bdd_lightning`) and ``FashionMNISTDataModule``,
``FashionClassifier`` (:mod:`lightning_insight.datasets.fashion_mnist`, the real Fashion-MNIST from
its IDX files, read by :func:`read_idx`) are imported on first use, so importing this package does not
import Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_insight.datasets.bdd100k import (
    BDDDetectionDataset,
    BDDFrame,
    SyntheticBDD,
    collate_detection,
    load_bdd100k,
    make_synthetic_bdd,
)
from lightning_insight.datasets.idx import read_idx, read_idx_pair
from lightning_insight.datasets.scenes import PlantedTruth, SceneData, ScenesDataset, make_scenes

if TYPE_CHECKING:
    from lightning_insight.datasets.bdd_lightning import BDDDataModule
    from lightning_insight.datasets.fashion_mnist import FashionClassifier, FashionMNISTDataModule
    from lightning_insight.datasets.lightning import SceneClassifier, ScenesDataModule

__all__ = [
    "BDDDataModule",
    "BDDDetectionDataset",
    "BDDFrame",
    "FashionClassifier",
    "FashionMNISTDataModule",
    "PlantedTruth",
    "SceneClassifier",
    "SceneData",
    "ScenesDataModule",
    "ScenesDataset",
    "SyntheticBDD",
    "collate_detection",
    "load_bdd100k",
    "make_scenes",
    "make_synthetic_bdd",
    "read_idx",
    "read_idx_pair",
]

_LIGHTNING_MODULES: dict[str, str] = {
    "BDDDataModule": "lightning_insight.datasets.bdd_lightning",
    "FashionClassifier": "lightning_insight.datasets.fashion_mnist",
    "FashionMNISTDataModule": "lightning_insight.datasets.fashion_mnist",
    "SceneClassifier": "lightning_insight.datasets.lightning",
    "ScenesDataModule": "lightning_insight.datasets.lightning",
}


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_MODULES:
        module = importlib.import_module(_LIGHTNING_MODULES[name])
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LIGHTNING_MODULES))
