"""FailureModeMonitor inside real Trainer runs (CPU, synthetic scenes)."""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from sklearn.metrics import roc_auc_score
from torch import nn

from lightning_insight import MemorySink
from lightning_insight.datasets import SceneClassifier, ScenesDataModule
from lightning_insight.datasets.scenes import make_scenes
from lightning_insight.failure_modes.callback import (
    FailureModeAlertWarning,
    FailureModeMonitor,
)
from lightning_insight.failure_modes.robust import RobustExtractor, make_robust_extractor
from tests.trainers import cpu_trainer

SCRIPT = Path(__file__).with_name("ddp_failure_modes.py")


class Counting(nn.Module):
    """An extractor that counts the images it has seen (to check the feature cache)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.inner = RobustExtractor(num_classes=2, widths=(4, 8, 16))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return self.inner(images)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.feature_map(images)


def _data(num_val: int = 150) -> ScenesDataModule:
    return ScenesDataModule(num_train=128, num_val=num_val, num_test=32, batch_size=50)


def _model(seed: int = 0) -> SceneClassifier:
    torch.manual_seed(seed)
    return SceneClassifier(channels=(4, 8))


def _monitor(extractor: nn.Module | None = None, **kwargs: Any) -> FailureModeMonitor:
    options: dict[str, Any] = {
        "task": "binary",
        "max_depth": 2,
        "num_features": 8,
        "min_samples_leaf": 5,
        "min_failures": 5,
        "sinks": [MemorySink()],
    }
    return FailureModeMonitor(extractor or Counting(), **{**options, **kwargs})


def test_fit_mines_every_epoch_caches_features_and_emits(tmp_path: Path) -> None:
    sink = MemorySink()
    monitor = _monitor(sinks=[sink], alert_coverage=0.0, alert_delta=0.0)
    trainer = cpu_trainer(tmp_path, [monitor])
    with pytest.warns(FailureModeAlertWarning, match="failure mode in group"):
        trainer.fit(_model(), _data())
    assert [r.epoch for r in monitor.history] == [0, 1]  # the sanity check is skipped
    report = monitor.history[-1]
    assert report.num_samples == 150 and report.source == "val" and report.modes
    # features are computed once per sample: the sanity batch and two epochs see 150 ids
    assert monitor.cached_features == 150
    extractor = monitor._extractor
    assert extractor is not None and int(extractor.seen) == 150
    keys = sink.scalar_keys()
    assert {"insight/failure_modes/top/lift", "insight/failure_modes/alerts"} <= keys
    assert sink.last_scalars()["insight/failure_modes/top/error_rate"] == report.modes[0].error_rate
    assert {key for _, key, _ in sink.tables} == {"insight/failure_modes/modes"}
    assert {key for _, key, _ in sink.jsons} == {"insight/failure_modes/report"}
    assert {key for _, key, _ in sink.images} == {
        f"insight/failure_modes/mode_{i}" for i in range(3)
    }
    assert all(image.dtype == np.uint8 for _, _, image in sink.images)
    assert "insight/failure_modes/top/lift" in trainer.callback_metrics
    assert monitor.alerts and {a.epoch for a in monitor.alerts} == {0, 1}


def test_validate_state_round_trip_pickle_and_two_monitors(tmp_path: Path) -> None:
    first, second = _monitor(), _monitor(grouping="label", images=0)
    assert first.state_key != second.state_key
    cpu_trainer(tmp_path, [first, second]).validate(_model(), _data())
    assert [r.grouping for r in (first.history[0], second.history[0])] == ["prediction", "label"]
    path = tmp_path / "state.pt"
    torch.save(first.state_dict(), path)
    fresh = _monitor()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.history == first.history and fresh.cached_features == 150
    clone = pickle.loads(pickle.dumps(first))
    assert clone.history == first.history and clone.sinks is None


def test_resume_keeps_the_feature_cache_and_the_history(tmp_path: Path) -> None:
    monitor = _monitor(images=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cpu_trainer(tmp_path, [monitor, checkpoint], max_epochs=1, enable_checkpointing=True).fit(
        _model(), _data()
    )
    assert [r.epoch for r in monitor.history] == [0]
    resumed = _monitor(images=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cpu_trainer(tmp_path, [resumed, checkpoint], enable_checkpointing=True).fit(
        _model(), _data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )
    assert [r.epoch for r in resumed.history] == [0, 1]
    assert resumed.history[0] == monitor.history[0]
    # every feature came from the checkpoint: the resumed run's extractor saw no image
    assert resumed._extractor is not None and int(resumed._extractor.seen) == 0


def test_a_model_that_never_fails_reports_not_enough_failures(tmp_path: Path) -> None:
    class Oracle(SceneClassifier):
        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
            return {"preds": batch["target"].float(), "target": batch["target"]}

    monitor = _monitor()
    cpu_trainer(tmp_path, [monitor]).validate(Oracle(channels=(4, 8)), _data())
    report = monitor.history[0]
    assert report.modes == () and monitor.alerts == []
    assert set(report.status.values()) == {"not enough failures"}
    assert all(math.isnan(value) for value in report.aler.values())
    assert all(value == 0.0 for value in report.base_error_rate.values())


def test_nan_features_fail_clearly(tmp_path: Path) -> None:
    class Broken(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.full((images.shape[0], 4), float("nan"))

    with pytest.raises(ValueError, match=r"`features`.*(NaN|finite)"):
        cpu_trainer(tmp_path, [_monitor(Broken())]).validate(_model(), _data())


def test_an_extractor_output_that_is_not_features_fails_clearly(tmp_path: Path) -> None:
    class Flat(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.sum(dim=(1, 2, 3))

    with pytest.raises(ValueError, match=r"extractor's output to be \(N, D\) features"):
        cpu_trainer(tmp_path, [_monitor(Flat())]).validate(_model(), _data())


def test_a_feature_layer_gives_features_and_heatmaps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    extractor = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 2, 1))
    sink = MemorySink()
    monitor = _monitor(extractor, feature_layer="1", sinks=[sink], attack_steps=3)
    cpu_trainer(tmp_path, [monitor]).validate(_model(), _data())
    assert monitor.history[0].num_samples == 150
    assert next(iter(monitor._cache.values())).shape == (6,)  # layer "1": 6 channels, pooled
    assert sink.images


@pytest.mark.parametrize(
    ("extractor", "kwargs", "error", "match"),
    [
        (3, {}, TypeError, r"`feature_extractor` to be an nn.Module or .robust., but got 3"),
        (None, {"feature_layer": "inner.backbne"}, ValueError, r"`feature_layer`.*inner\.backbone"),
        (None, {"task": "regression"}, ValueError, r"`task` to be one of"),
        (None, {"threshold": 2}, ValueError, r"`threshold` to be a float in \[0, 1\], but got 2"),
        (None, {"alert_delta": -0.1}, ValueError, r"`alert_delta` to be a float in \[0, 1\]"),
        (None, {"every_n_epochs": 0}, ValueError, r"`every_n_epochs` to be an int >= 1"),
        (None, {"images": -1}, ValueError, r"`images` to be an int >= 0, but got -1"),
        (None, {"attack_steps": 500}, ValueError, r"`attack_steps` to be at most 200"),
        (None, {"max_depth": 0}, ValueError, r"`max_depth` to be an int >= 1"),
        (None, {"grouping": "slice"}, ValueError, r"`grouping`"),
        (None, {"prefix": "a/"}, ValueError, r"`prefix` to be a non-empty string"),
    ],
)
def test_arguments_are_checked_in_init(
    extractor: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        FailureModeMonitor(Counting() if extractor is None else extractor, **kwargs)


@pytest.mark.slow
def test_planted_hard_condition_is_the_top_failure_mode(tmp_path: Path) -> None:
    # A small CNN trained briefly on scenes where fog and night hide the pedestrian; a robust
    # extractor adversarially trained on the same training images.
    torch.manual_seed(0)
    data = ScenesDataModule(num_train=1500, num_val=1000, num_test=32, batch_size=64)
    model = SceneClassifier(channels=(8, 16, 32))
    cpu_trainer(tmp_path, [], max_epochs=3, limit_train_batches=None, num_sanity_val_steps=0).fit(
        model, data
    )
    train = make_scenes(1500, seed=0, split="train")
    extractor = make_robust_extractor((train.images, train.targets), num_classes=2, epochs=4)
    sink = MemorySink()
    monitor = _monitor(extractor, num_features=20, min_samples_leaf=10, sinks=[sink])
    cpu_trainer(tmp_path, [monitor]).validate(model, data)
    report = monitor.history[0]

    val = data.val_data
    position = {int(i): row for row, i in enumerate(val.sample_ids)}
    weather, timeofday = np.array(val.attributes["weather"]), np.array(val.attributes["timeofday"])
    hard = (weather == "foggy") | (timeofday == "night")
    top = report.modes[0]
    members = np.array([position[i] for i in top.sample_ids])
    group = report.group(top.group)
    # the top mode is mostly the planted condition, and far worse than its group
    assert hard[members].mean() >= 1.5 * hard.mean()
    assert top.error_rate >= group.base_error_rate + 0.3
    # each feature on its path separates the condition inside the mode's group
    features = np.stack([monitor._cache[int(i)] for i in val.sample_ids])
    grouped = np.array(
        [position[i] for mode in report.modes_of(top.group) for i in mode.sample_ids]
    )
    for feature, _, _ in top.path:
        auc = roc_auc_score(hard[grouped], features[grouped, feature])
        assert abs(auc - 0.5) >= 0.15, (feature, auc)
    # the failure row of the logged picture shows the mode's failures, which are the condition
    failures = [
        position[i]
        for i in top.sample_ids
        if int(val.targets[position[i]]) != int(top.group)  # group = prediction
    ]
    assert hard[failures].mean() >= 0.8
    assert any(key == "insight/failure_modes/mode_0" for _, key, _ in sink.images)


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path: Path, run_ok: Any) -> None:
    results = []
    for devices in (1, 2):
        out = tmp_path / f"failure_modes_{devices}.json"
        run_ok([sys.executable, str(SCRIPT), str(out), str(devices)], tmp_path)
        results.append(json.loads(out.read_text()))
    single, ddp = results
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    assert single["report"]["num_samples"] == ddp["report"]["num_samples"] == 301
    assert single["report"] == ddp["report"]
    assert single["cached"] == ddp["cached"] == 301


def test_a_robust_extractor_is_trained_once_and_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"max_samples": 100, "epochs": 1, "widths": (4, 8, 16)}
    monitor = _monitor("robust", images=0, robust_options=options)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cpu_trainer(tmp_path, [monitor, checkpoint], max_epochs=1, enable_checkpointing=True).fit(
        _model(), _data()
    )
    extractor = monitor._extractor
    assert isinstance(extractor, RobustExtractor) and extractor.num_features == 16
    assert monitor.history[0].num_samples == 150

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr("lightning_insight.failure_modes.callback.make_robust_extractor", refuse)
    resumed = _monitor("robust", images=0, robust_options=options)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cpu_trainer(tmp_path, [resumed, checkpoint], enable_checkpointing=True).fit(
        _model(), _data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )
    assert [r.epoch for r in resumed.history] == [0, 1]
    assert isinstance(resumed._extractor, RobustExtractor)
    before, after = extractor.state_dict(), resumed._extractor.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_a_robust_extractor_needs_a_datamodule(tmp_path: Path) -> None:
    data = _data()
    data.setup("validate")
    with pytest.raises(RuntimeError, match=r"'robust'.*no datamodule"):
        cpu_trainer(tmp_path, [_monitor("robust")]).validate(_model(), data.val_dataloader())
    with pytest.raises(
        ValueError, match=r"`feature_layer` to be None with feature_extractor='robust'"
    ):
        FailureModeMonitor("robust", feature_layer="backbone")


def test_detection_failure_modes_find_the_images_where_objects_are_missed(tmp_path: Path) -> None:
    # A detector that finds every object in bright images and none in dark ones; an extractor whose
    # features are the mean colour: the top mode is "dark", with every dark image a failure.
    import pytorch_lightning as pl

    class Detector(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(1, 1)

        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
            preds = []
            for image, target in zip(batch["image"], batch["target"], strict=True):
                found = float(image.mean()) >= 0.5
                boxes = target["boxes"] if found else torch.zeros(0, 4)
                preds.append(
                    {
                        "boxes": boxes,
                        "scores": torch.full((len(boxes),), 0.9),
                        "labels": target["labels"][: len(boxes)],
                    }
                )
            return {"preds": preds, "target": batch["target"]}

    generator = torch.Generator().manual_seed(0)
    brightness = torch.rand(120, generator=generator)
    items = [
        {
            "image": torch.full((3, 8, 8), float(b)),
            "target": {"boxes": torch.tensor([[1.0, 1.0, 6.0, 6.0]]), "labels": torch.tensor([1])},
            "sample_id": i,
        }
        for i, b in enumerate(brightness)
    ]

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "image": torch.stack([b["image"] for b in batch]),
            "target": [b["target"] for b in batch],
            "sample_id": torch.tensor([b["sample_id"] for b in batch]),
        }

    loader = torch.utils.data.DataLoader(items, batch_size=32, collate_fn=collate)  # type: ignore[arg-type]
    extractor = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    monitor = _monitor(extractor, task="detection", num_features=3, images=1, max_depth=1)
    cpu_trainer(tmp_path, [monitor]).validate(Detector(), loader)
    report = monitor.history[0]
    assert report.grouping == "all" and report.base_error_rate == {
        "all": pytest.approx(float((brightness < 0.5).float().mean()))
    }
    top = report.modes[0]
    ((_, threshold, direction),) = top.path
    assert direction == "<=" and abs(threshold - 0.5) < 0.05
    dark = {i for i, b in enumerate(brightness.tolist()) if b < 0.5}
    assert top.error_rate == 1.0 and set(top.sample_ids) == dark
    with pytest.raises(
        ValueError, match=r"`grouping` to be 'all' \(or None\) for task='detection'"
    ):
        FailureModeMonitor(extractor, task="detection", grouping="prediction")
