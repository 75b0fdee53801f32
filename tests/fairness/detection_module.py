"""A stand-in detector over fixed random detections, for FairnessMonitor(task="detection") tests.

Importable (not a conftest) so ``strategy="ddp"`` re-launches and ``ddp_spawn`` can pickle it. The
"detector" returns the detections stored with each image (``tests/metrics/detection_data.py``), so the
numbers the callback reports can be compared with :func:`slice_metrics` on the same detections.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from tests.metrics.detection_data import random_images


class FixedDetections(Dataset[dict[str, Any]]):
    """Images of :func:`random_images` with their detections, one dict per image."""

    def __init__(self, seed: int, images: int) -> None:
        self.preds, self.target, self.attributes, self.ids = random_images(seed, images=images)

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "image": torch.zeros(3),
            "preds": self.preds[i],
            "target": self.target[i],
            "attributes": {k: v[i] for k, v in self.attributes.items()},
            "sample_id": int(self.ids[i]),
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and ids; keep per-image dicts and attributes as lists."""
    return {
        "image": torch.stack([item["image"] for item in items]),
        "preds": [item["preds"] for item in items],
        "target": [item["target"] for item in items],
        "attributes": {
            k: [item["attributes"][k] for item in items] for k in items[0]["attributes"]
        },
        "sample_id": torch.tensor([item["sample_id"] for item in items]),
    }


class FixedDetector(pl.LightningModule):
    """Returns each image's stored detections from ``validation_step``/``test_step``."""

    def __init__(self, seed: int = 0, images: int = 45, batch_size: int = 8) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seed, self.images, self.batch_size = seed, images, batch_size

    def _loader(self) -> DataLoader[dict[str, Any]]:
        return DataLoader(
            FixedDetections(self.seed, self.images), batch_size=self.batch_size, collate_fn=collate
        )

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader()

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader()

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return (self.weight * batch["image"].sum()).sum() + self.weight.square().sum()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"preds": batch["preds"], "target": batch["target"]}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"preds": batch["preds"], "target": batch["target"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)
