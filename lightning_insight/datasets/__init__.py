"""Synthetic data sets with planted disparities, and Lightning wrappers for them.

``make_scenes`` and its data classes need only numpy and torch; ``ScenesDataModule`` and
``SceneClassifier`` live in :mod:`lightning_insight.datasets.lightning` and are imported on first use,
so importing this package does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_insight.datasets.scenes import PlantedTruth, SceneData, ScenesDataset, make_scenes

if TYPE_CHECKING:
    from lightning_insight.datasets.lightning import SceneClassifier, ScenesDataModule

__all__ = [
    "PlantedTruth",
    "SceneClassifier",
    "SceneData",
    "ScenesDataModule",
    "ScenesDataset",
    "make_scenes",
]

_LIGHTNING_NAMES = frozenset({"SceneClassifier", "ScenesDataModule"})


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_NAMES:
        module = importlib.import_module("lightning_insight.datasets.lightning")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LIGHTNING_NAMES)
