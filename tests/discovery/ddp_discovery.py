"""Run ``trainer.validate`` with SliceDiscoveryMonitor on 1 or 2 CPU processes; write the report as JSON.

Used by test_callback.py: ``python ddp_discovery.py OUT.json DEVICES``. 301 validation images do not
divide over 2 ranks: DistributedSampler pads a duplicate that the finder drops by sample id.
"""

from __future__ import annotations

import json
import sys

import torch

from lightning_insight import MemorySink
from lightning_insight.datasets import SceneClassifier, ScenesDataModule
from lightning_insight.discovery.callback import SliceDiscoveryMonitor
from tests.trainers import end_processes, process_trainer


def main(out: str, devices: int) -> None:
    torch.manual_seed(0)
    model = SceneClassifier(channels=(4, 8))
    monitor = SliceDiscoveryMonitor(
        "backbone.1", max_samples=200, num_slices=8, sinks=[MemorySink()]
    )
    trainer = process_trainer(devices, [monitor])
    trainer.validate(model, ScenesDataModule(num_train=32, num_val=301, num_test=32, batch_size=32))
    if trainer.is_global_zero:
        with open(out, "w") as f:
            json.dump(
                {"report": monitor.history[-1].to_dict(), "world_size": trainer.world_size}, f
            )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    end_processes()
