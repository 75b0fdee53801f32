"""Demo models for the discovery tests: a scene classifier trained on the synthetic scenes (and the planted
groups to look for), a three-class CNN and a model over flat vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lightning_insight.datasets.lightning import SceneClassifier
from lightning_insight.datasets.scenes import SceneData, make_scenes


def train_scene_classifier(
    *,
    num_train: int = 2000,
    epochs: int = 3,
    seed: int = 0,
    channels: tuple[int, ...] = (8, 16, 32),
) -> SceneClassifier:
    """Adam on the training split (cue agrees with the label 90%), a plain loop: no Trainer start-up."""
    torch.manual_seed(seed)
    data = make_scenes(num_train, seed=seed, split="train")
    model = SceneClassifier(channels=channels)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(num_train, generator=generator)
        for start in range(0, num_train, 64):
            rows = order[start : start + 64]
            logits = model(data.images[rows])
            loss = F.binary_cross_entropy_with_logits(logits, data.targets[rows].float())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def planted_groups(data: SceneData) -> dict[str, np.ndarray[Any, np.dtype[np.bool_]]]:
    """Boolean masks: ``hard`` (foggy at night) and ``conflict`` (the corner cue disagrees with the label)."""
    weather = np.asarray(data.attributes["weather"])
    night = np.asarray(data.attributes["timeofday"]) == "night"
    return {
        "hard": (weather == "foggy") & night,
        "conflict": data.truth.spurious_cue != (data.clean_targets.numpy() == 1),
    }


def precision_at(
    sample_ids: tuple[int, ...], group: np.ndarray[Any, Any], rows: dict[int, int], top: int = 10
) -> float:
    """Fraction of the ``top`` first (most central) members that belong to ``group``."""
    return float(np.mean([group[rows[i]] for i in sample_ids[:top]]))


class FlatInput(nn.Module):
    """Takes (N, 16) vectors and views them as 1x4x4 images; ``unused`` never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x.view(-1, 1, 4, 4)).mean(dim=(2, 3)))


class SmallNet(nn.Module):
    """Three classes; ``features`` ends in a 4-D map, ``head`` is a Linear layer."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))
