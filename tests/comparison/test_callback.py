"""AttributionComparisonMonitor inside real Trainer runs (CPU, tiny synthetic scenes)."""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning import Trainer
from torch import nn

from lightning_insight import MemorySink
from lightning_insight.comparison.callback import AttributionComparisonMonitor
from lightning_insight.datasets import SceneClassifier, ScenesDataModule


def _data() -> ScenesDataModule:
    return ScenesDataModule(num_train=128, num_val=150, num_test=32, batch_size=50)


def _model(seed: int = 0) -> SceneClassifier:
    torch.manual_seed(seed)
    return SceneClassifier(channels=(4, 8))


def _trainer(tmp_path: Path, callbacks: list[Any], **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "limit_train_batches": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 1,
    }
    return Trainer(callbacks=callbacks, **{**options, **kwargs})


def _monitor(reference: Any, **kwargs: Any) -> AttributionComparisonMonitor:
    options: dict[str, Any] = {
        "max_samples": 100,
        "num_clusters": 4,
        "sinks": [MemorySink()],
        "comparer_options": {"bootstrap": 20},
    }
    return AttributionComparisonMonitor(reference, "backbone.1", **{**options, **kwargs})


class _Other(pl.LightningModule):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(width, 1)


def test_fit_with_an_epoch_reference_compares_after_the_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = MemorySink()
    monitor = _monitor("epoch:0", every_n_epochs=1, sinks=[sink])
    trainer = _trainer(tmp_path, [monitor], max_epochs=3)
    with caplog.at_level(logging.INFO, logger="lightning_insight.comparison.callback"):
        trainer.fit(_model(), _data())
    # epoch 0 has no reference yet (it is taken at the end of epoch 0's validation); 1 and 2 compare
    assert [r.epoch for r in monitor.history] == [1, 2]
    assert "no reference model yet" in caplog.text
    report = monitor.history[-1]
    assert report.num_samples == 100 and report.source == "val"
    assert report.layer_a == report.layer_b == "backbone.1"
    keys = sink.scalar_keys()
    assert {"insight/comparison/top/difference", "insight/comparison/num_clusters"} <= keys
    assert sink.last_scalars()["insight/comparison/top/difference"] == report.clusters[0].difference
    assert {key for _, key, _ in sink.tables} == {"insight/comparison/clusters"}
    assert {row["dimension"] for _, _, rows in sink.tables for row in rows} == {"comparison"}
    assert "insight/comparison/top/difference" in trainer.callback_metrics
    assert monitor.reference is not None
    assert not any(p.requires_grad for p in monitor.reference.parameters())


def test_validate_with_a_module_reference_and_a_state_round_trip(tmp_path: Path) -> None:
    reference = _model(seed=1)
    monitor = _monitor(reference)
    _trainer(tmp_path, [monitor]).validate(_model(), _data())
    assert [r.source for r in monitor.history] == ["val"]
    report = monitor.history[0]
    assert report.num_samples == 100 and len(report.clusters) == 4
    assert not math.isnan(report.clusters[0].difference)
    assert monitor.reference is not reference  # a frozen copy
    path = tmp_path / "state.pt"
    torch.save(monitor.state_dict(), path)
    fresh = _monitor(reference)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.history == monitor.history
    clone = pickle.loads(pickle.dumps(monitor))
    assert clone.history == monitor.history and clone.sinks is None


def test_the_same_model_as_reference_differs_nowhere(tmp_path: Path) -> None:
    model = _model()
    monitor = _monitor(model)
    _trainer(tmp_path, [monitor]).validate(model, _data())
    assert all(c.difference == 0.0 for c in monitor.history[0].clusters)


def test_validate_with_an_epoch_reference_and_no_snapshot_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = _monitor("epoch:3")
    with caplog.at_level(logging.INFO, logger="lightning_insight.comparison.callback"):
        _trainer(tmp_path, [monitor]).validate(_model(), _data())
    assert monitor.history == [] and monitor.reference is None
    assert caplog.text.count("no reference model yet") == 1


def test_checkpoint_reference_loads_and_a_bad_one_fails_clearly(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, [], max_epochs=1)
    trainer.fit(_model(seed=1), _data())
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    monitor = _monitor(good)
    assert monitor.state_key != _monitor("epoch:0").state_key
    _trainer(tmp_path, [monitor]).validate(_model(), _data())
    assert len(monitor.history) == 1 and isinstance(monitor.reference, SceneClassifier)

    other = _Other()
    other_trainer = _trainer(tmp_path, [], max_epochs=1)
    other_trainer.strategy.connect(other)
    other_trainer.save_checkpoint(tmp_path / "other.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    for name in ("other.ckpt", "garbage.ckpt"):
        with pytest.raises(RuntimeError, match=rf"{name}.*does not load into SceneClassifier"):
            _trainer(tmp_path, [_monitor(tmp_path / name)]).validate(_model(), _data())


@pytest.mark.parametrize(
    ("reference", "kwargs", "match"),
    [
        (3, {}, r"`reference` to be an nn.Module, 'epoch:N' or a checkpoint path, but got int"),
        ("epoch:x", {}, r"`reference` to be 'epoch:N' with an int N >= 0, but got 'epoch:x'"),
        ("missing.ckpt", {}, r"`reference`.*no file exists at 'missing.ckpt'"),
        ("epoch:0", {"every_n_epochs": 0}, r"`every_n_epochs` to be an int >= 1, but got 0"),
        ("epoch:0", {"max_samples": 0}, r"`max_samples` to be an int >= 1, but got 0"),
        ("epoch:0", {"method": "lime"}, r"`method` to be one of"),
        ("epoch:0", {"prefix": "a/"}, r"`prefix` to be a non-empty string"),
        ("epoch:0", {"max_samples": 4, "num_clusters": 8}, r"max_samples"),
        ("epoch:0", {"layer_reference": 3}, r"`layer_reference` to be a module name"),
    ],
)
def test_arguments_are_checked_in_init(reference: Any, kwargs: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {"max_samples": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        AttributionComparisonMonitor(reference, "backbone.1", **options)
