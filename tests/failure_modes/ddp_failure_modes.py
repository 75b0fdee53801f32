"""Run ``trainer.validate`` with FailureModeMonitor on 1 or 2 CPU processes; write the report as JSON.

Used by test_callback.py: ``python ddp_failure_modes.py OUT.json DEVICES``. 301 validation images do
not divide over 2 ranks: DistributedSampler pads a duplicate that the monitor drops by sample id.
"""

from __future__ import annotations

import json
import sys

import torch

from lightning_insight import MemorySink
from lightning_insight.datasets import SceneClassifier, ScenesDataModule
from lightning_insight.failure_modes.callback import FailureModeMonitor
from lightning_insight.failure_modes.robust import RobustExtractor
from tests.trainers import end_processes, process_trainer


def main(out: str, devices: int) -> None:
    torch.manual_seed(0)
    model = SceneClassifier(channels=(4, 8))
    extractor = RobustExtractor(num_classes=2, widths=(4, 8, 16))
    monitor = FailureModeMonitor(
        extractor,
        task="binary",
        max_depth=2,
        num_features=8,
        min_samples_leaf=5,
        min_failures=5,
        sinks=[MemorySink()],
    )
    trainer = process_trainer(devices, [monitor])
    trainer.validate(model, ScenesDataModule(num_train=32, num_val=301, num_test=32, batch_size=32))
    if trainer.is_global_zero:
        with open(out, "w") as f:
            json.dump(
                {
                    "report": monitor.history[-1].to_dict(),
                    "world_size": trainer.world_size,
                    "cached": monitor.cached_features,
                },
                f,
            )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    end_processes()
