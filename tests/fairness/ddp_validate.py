"""Run ``trainer.validate`` with FairnessMonitor on 1 or 2 CPU processes; write the report as JSON.

Used by test_ddp.py: ``python ddp_validate.py OUT.json DEVICES``. With 2 devices Lightning relaunches
this script per rank (strategy="ddp"), so everything runs under the ``__main__`` guard.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

from lightning_insight import FairnessMonitor, MemorySink
from lightning_insight.batch import BatchData
from lightning_insight.datasets import SceneClassifier, ScenesDataModule
from tests.trainers import end_processes, process_trainer


def with_rare_value(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> BatchData:
    """Adds attribute ``tag``: ``rare`` only for sample 3 of the split, which only rank 1 sees."""
    ids = batch["sample_id"]
    attributes = dict(batch["attributes"])
    attributes["tag"] = ["rare" if i % 1_000_000 == 3 else "common" for i in ids.tolist()]
    return BatchData(outputs["preds"], batch["target"], attributes, ids)


def fit_until_alert(out: str, devices: int) -> None:
    """Fit up to 5 epochs with an always-holding rule and on_alert="stop": every rank stops after epoch 0."""
    torch.manual_seed(0)
    monitor = FairnessMonitor(
        "binary",
        ["weather"],
        alerts=["accuracy_difference >= 0"],
        on_alert="stop",
        min_support=1,
        sinks=[MemorySink()],
    )
    trainer = process_trainer(
        devices, [monitor], strategy="ddp", max_epochs=5, limit_train_batches=2
    )
    trainer.fit(
        SceneClassifier(channels=(4, 8)), ScenesDataModule(num_train=64, num_val=64, batch_size=16)
    )
    if trainer.is_global_zero:
        with open(out, "w") as f:
            json.dump(
                {
                    "epochs": [r.epoch for r in monitor.history],
                    "current_epoch": trainer.current_epoch,
                },
                f,
            )


def main(out: str, devices: int) -> None:
    torch.manual_seed(0)
    model = SceneClassifier(channels=(4, 8))
    data = ScenesDataModule(num_train=32, num_val=201, num_test=32, batch_size=16)
    monitor = FairnessMonitor(
        "binary",
        ["weather", "tag", "weather&timeofday"],
        min_support=1,
        adapter=with_rare_value,
        sinks=[MemorySink()],
        bootstrap=50,
    )
    trainer = process_trainer(devices, [monitor])
    trainer.validate(model, data)
    if trainer.is_global_zero:
        with open(out, "w") as f:
            json.dump(
                {"report": monitor.history[-1].to_dict(), "world_size": trainer.world_size}, f
            )


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[3] == "stop":
        fit_until_alert(sys.argv[1], int(sys.argv[2]))
    else:
        main(sys.argv[1], int(sys.argv[2]))
    end_processes()
