"""FairnessMonitor(task="detection") inside real Trainer runs (CPU, fixed random detections)."""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning import Trainer

from lightning_insight import FairnessAlertWarning, FairnessMonitor, MemorySink, slice_metrics
from tests.fairness.detection_module import FixedDetections, FixedDetector

SLICES = ["weather", "night", "weather&night", "occluded", "box_area:0,1024,9216,inf"]
SCRIPT = Path(__file__).with_name("ddp_detection.py")


def _trainer(tmp_path: Path, callbacks: list[Any], **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "limit_train_batches": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 1,
    }
    return Trainer(callbacks=callbacks, **{**options, **kwargs})


def test_fit_reports_detection_metrics_gaps_and_alerts_each_epoch(tmp_path: Path) -> None:
    sink = MemorySink()
    monitor = FairnessMonitor(
        "detection",
        SLICES,
        alerts=["night: map_ratio < 0.99", "map_50 < 0.01"],
        min_support=5,
        sinks=[sink],
    )
    with pytest.warns(FairnessAlertWarning, match="night: map_ratio < 0.99"):
        _trainer(tmp_path, [monitor]).fit(FixedDetector(seed=1, images=45))
    assert [r.epoch for r in monitor.history] == [0, 1]  # the sanity check is skipped
    report = monitor.history[-1]
    data = FixedDetections(1, 45)
    expected = slice_metrics(
        data.preds, data.target, data.attributes, task="detection", slices=SLICES, min_support=5
    )
    assert report.task == "detection" and report.overall["count"] == 45
    assert report.slices == expected.slices
    assert report.indicators == expected.indicators
    assert report.excluded == expected.excluded
    ratio = report.indicators["night"]["map_ratio"]
    maps = [report.slices[f"night={n}"]["map"] for n in (False, True)]
    assert ratio == pytest.approx(min(maps) / max(maps))
    assert report.indicators["night"]["worst_map"] == min(maps)
    # min_support counts boxes in object-level dimensions, images in image-level ones
    for name, values in report.slices.items():
        unit = "objects" if name.startswith(("occluded", "box_area")) else "count"
        assert (name in report.excluded) == (values[unit] < 5), name
    scalars = sink.last_scalars()
    for key in (
        "insight/overall/map",
        "insight/slice/weather/rainy/map_75",
        "insight/slice/occluded/True/recall_50",
        "insight/slice/box_area:0,1024,9216,inf/[0,1024)/precision_50",
        "insight/gap/night/map_ratio",
        "insight/gap/weather&night/recall_50_difference",
        "insight/worst/map",
        "insight/alert/night:map_ratio<0.99",
    ):
        assert key in scalars, key
    assert scalars["insight/alert/night:map_ratio<0.99"] == 1.0
    assert scalars["insight/alert/map_50<0.01"] == 0.0
    assert {a.rule for a in monitor.alerts} == {"night: map_ratio < 0.99"}
    first_line, worst_line = report.summary().splitlines()[:2]
    objects = int(report.overall["objects"])
    assert first_line.endswith(f"over 45 images, {objects} objects")
    worst, _ = report.worst()["map"]
    assert worst_line.startswith(f"  worst slice: {worst} map")


def test_validate_test_pickle_and_a_plain_resume(tmp_path: Path) -> None:
    monitor = FairnessMonitor("detection", ["weather", "occluded"], min_support=1, sinks=["memory"])
    trainer = _trainer(tmp_path, [monitor])
    trainer.validate(FixedDetector(seed=2, images=20))
    trainer.test(FixedDetector(seed=2, images=20))
    assert [r.source for r in monitor.history] == ["val", "test"]
    assert monitor.history[0].slices == monitor.history[1].slices
    clone = pickle.loads(pickle.dumps(monitor))
    assert clone.history == monitor.history
    # the state is plain data: torch.load with weights_only=True (Lightning's resume) reads it
    path = tmp_path / "state.pt"
    torch.save(monitor.state_dict(), path)
    state = torch.load(path, weights_only=True)
    fresh = FairnessMonitor("detection", ["weather", "occluded"], min_support=1, sinks=["memory"])
    fresh.load_state_dict(state)
    assert fresh.history == monitor.history
    # ids carried over: the slice order of a new epoch is the one of the first
    trainer = _trainer(tmp_path, [fresh])
    trainer.validate(FixedDetector(seed=2, images=20))
    assert fresh.history[-1].dimensions == monitor.history[0].dimensions


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alerts": ["accuracy_ratio < 0.8"]}, r"unknown name 'accuracy_ratio'"),
        (
            {"indicators": ["equalized_odds_difference"]},
            r"task='detection'.*unknown \['equalized_odds_difference'\]",
        ),
        ({"metrics": ["tpr"]}, r"task='detection'.*unknown \['tpr'\]"),
    ],
)
def test_detection_arguments_are_checked_in_init(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FairnessMonitor("detection", ["weather"], **kwargs)


def test_a_bad_box_fails_at_its_batch_naming_image_and_sample(tmp_path: Path) -> None:
    class Flipped(FixedDetector):
        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
            preds = [dict(p) for p in batch["preds"]]
            preds[1]["boxes"] = preds[1]["boxes"][:, [2, 1, 0, 3]]
            return {"preds": preds, "target": batch["target"]}

    monitor = FairnessMonitor("detection", ["weather"], sinks=["memory"])
    with pytest.raises(
        ValueError, match=r"`preds` boxes of image 1 of the batch \(sample_id 10\) in xyxy"
    ):
        _trainer(tmp_path, [monitor]).validate(Flipped(seed=3, images=8, batch_size=4))


def test_unknown_attribute_names_both_places(tmp_path: Path) -> None:
    monitor = FairnessMonitor("detection", ["scene"], sinks=["memory"])
    with pytest.raises(
        RuntimeError,
        match=r"'scene' .* image attributes \['night', 'weather'\] and per-box keys \['group', 'occluded'\]",
    ):
        _trainer(tmp_path, [monitor]).validate(FixedDetector(seed=3, images=8))


@pytest.mark.slow
def test_two_process_ddp_equals_single_process_with_uneven_images(
    tmp_path: Path, run_ok: Any
) -> None:
    results = []
    for devices in (1, 2):
        out = tmp_path / f"detection_{devices}.json"
        run_ok([sys.executable, str(SCRIPT), str(out), str(devices)], tmp_path)
        results.append(json.loads(out.read_text()))
    single, ddp = results
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    one, two = single["report"], ddp["report"]
    assert one["overall"]["count"] == two["overall"]["count"] == 45
    assert one["slices"] == two["slices"]
    assert one["indicators"] == two["indicators"]
    assert one["overall"] == two["overall"]
    assert not math.isnan(one["overall"]["map"])
    # bootstrap over images (weights from sample ids): the same intervals on 1 and 2 processes
    assert one["bootstrap"] == 10
    assert one["overall"]["map_low"] <= one["overall"]["map"] <= one["overall"]["map_high"]
