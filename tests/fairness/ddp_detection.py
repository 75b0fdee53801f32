"""Run ``trainer.validate`` with FairnessMonitor(task="detection") on 1 or 2 CPU processes.

Used by test_detection_callback.py: ``python ddp_detection.py OUT.json DEVICES``. 45 images do not
divide over 2 ranks, so DistributedSampler pads a duplicate that the monitor must drop by sample id.
"""

from __future__ import annotations

import json
import sys

from lightning_insight import FairnessMonitor, MemorySink
from tests.fairness.detection_module import FixedDetector
from tests.trainers import end_processes, process_trainer

SLICES = ["weather", "occluded", "weather&night", "box_area:0,1024,9216,inf"]


def main(out: str, devices: int) -> None:
    monitor = FairnessMonitor(
        "detection", SLICES, min_support=1, sinks=[MemorySink()], bootstrap=10
    )
    trainer = process_trainer(devices, [monitor])
    trainer.validate(FixedDetector(seed=11, images=45, batch_size=4))
    if trainer.is_global_zero:
        with open(out, "w") as f:
            json.dump(
                {"report": monitor.history[-1].to_dict(), "world_size": trainer.world_size}, f
            )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    end_processes()
