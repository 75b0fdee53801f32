"""Demo models for the comparison tests: a plain scene CNN (no Lightning) trained on synthetic scenes
where either the pedestrian or the red corner cue carries the label."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from lightning_insight.datasets.scenes import make_scenes

#: Side of the red cue patch at the top-left corner of a 32x32 scene (see ``make_scenes``).
CUE_SIZE = 3


class SceneNet(nn.Module):
    """Conv-batchnorm-relu-maxpool blocks (``backbone.0`` ...), max pooling and one logit, like
    ``SceneClassifier`` without Lightning."""

    def __init__(self, channels: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels = 3
        for out_channels in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                )
            )
            in_channels = out_channels
        self.backbone = nn.Sequential(*blocks)
        self.head = nn.Linear(in_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).amax(dim=(2, 3))).squeeze(-1)


def train_scene_net(
    *, carrier: str, num_train: int = 1500, epochs: int = 3, seed: int = 0
) -> SceneNet:
    """Train on scenes where ``carrier`` (``"object"`` or ``"cue"``) carries the label.

    ``"object"``: the usual labels with the cue independent of them (spurious correlation 0.5).
    ``"cue"``: the same images, but the target is whether the red corner cue is present, so the
    object says nothing about it.
    """
    torch.manual_seed(seed)
    data = make_scenes(num_train, seed=seed, split="train", spurious_correlation=0.5)
    targets = (
        data.targets.float()
        if carrier == "object"
        else torch.as_tensor(data.truth.spurious_cue, dtype=torch.float32)
    )
    model = SceneNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(num_train, generator=generator)
        for start in range(0, num_train, 64):
            rows = order[start : start + 64]
            loss = F.binary_cross_entropy_with_logits(model(data.images[rows]), targets[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def copy_of(model: nn.Module) -> nn.Module:
    """An independent copy with the same weights."""
    return copy.deepcopy(model)
