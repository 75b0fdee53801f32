"""Fit 2 epochs with AttributionComparisonMonitor(reference="epoch:0") on 1 or 2 CPU processes.

Used by test_callback.py: ``python ddp_comparison.py OUT_PREFIX DEVICES``; every rank writes
``OUT_PREFIX{rank}.json`` with its last report. 301 validation images do not divide over 2 ranks:
DistributedSampler pads a duplicate, which the probe set drops by sample id.
"""

from __future__ import annotations

import json
import sys

import torch

from lightning_insight import MemorySink
from lightning_insight.comparison.callback import AttributionComparisonMonitor
from lightning_insight.datasets import SceneClassifier, ScenesDataModule
from tests.trainers import end_processes, process_trainer


def main(prefix: str, devices: int) -> None:
    torch.manual_seed(0)
    model = SceneClassifier(channels=(4, 8))
    sink = MemorySink()
    monitor = AttributionComparisonMonitor(
        "epoch:0",
        "backbone.1",
        every_n_epochs=1,
        max_samples=120,
        num_clusters=4,
        sinks=[sink],
        comparer_options={"bootstrap": 20},
    )
    trainer = process_trainer(devices, [monitor], max_epochs=2, limit_train_batches=2)
    trainer.fit(model, ScenesDataModule(num_train=128, num_val=301, num_test=32, batch_size=32))
    with open(f"{prefix}{trainer.global_rank}.json", "w") as f:
        json.dump(
            {
                "reports": [r.to_dict() for r in monitor.history],
                "world_size": trainer.world_size,
                "images": len(sink.images),
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    end_processes()
