"""AttributionComparisonMonitor inside real Trainer runs (CPU, tiny synthetic scenes)."""

from __future__ import annotations

import json
import logging
import math
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from lightning_insight import MemorySink
from lightning_insight.comparison.callback import AttributionComparisonMonitor
from lightning_insight.datasets import SceneClassifier, ScenesDataModule
from tests.trainers import cpu_trainer

SCRIPT = Path(__file__).with_name("ddp_comparison.py")


def _data() -> ScenesDataModule:
    return ScenesDataModule(num_train=128, num_val=150, num_test=32, batch_size=50)


def _model(seed: int = 0) -> SceneClassifier:
    torch.manual_seed(seed)
    return SceneClassifier(channels=(4, 8))


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
    trainer = cpu_trainer(tmp_path, [monitor], max_epochs=3)
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
    assert report.reference == "epoch:0" and report.reference_epoch == 0
    pictures = {key for _, key, _ in sink.images}
    assert pictures == {
        f"insight/comparison/cluster_{i}/{kind}"
        for i in range(3)
        for kind in ("exemplars", "drill_down")
    }
    assert all(image.dtype == np.uint8 and image.shape[2] == 3 for _, _, image in sink.images)
    assert monitor.reference is not None
    assert not any(p.requires_grad for p in monitor.reference.parameters())
    # validate() after fit compares with the same epoch-0 copy
    model = trainer.lightning_module
    trainer.validate(model, _data())
    assert len(monitor.history) == 3 and monitor.history[-1].reference_epoch == 0


def test_validate_with_a_module_reference_and_a_state_round_trip(tmp_path: Path) -> None:
    reference = _model(seed=1)
    monitor = _monitor(reference)
    cpu_trainer(tmp_path, [monitor]).validate(_model(), _data())
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
    cpu_trainer(tmp_path, [monitor]).validate(model, _data())
    assert all(c.difference == 0.0 for c in monitor.history[0].clusters)


def test_resume_keeps_the_epoch_snapshot_and_the_history(tmp_path: Path) -> None:
    monitor = _monitor("epoch:0", every_n_epochs=1, images=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cpu_trainer(tmp_path, [monitor, checkpoint], enable_checkpointing=True).fit(_model(), _data())
    assert monitor.reference is not None and [r.epoch for r in monitor.history] == [1]
    resumed = _monitor("epoch:0", every_n_epochs=1, images=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = cpu_trainer(tmp_path, [resumed, checkpoint], max_epochs=3, enable_checkpointing=True)
    trainer.fit(_model(seed=5), _data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [r.epoch for r in resumed.history] == [1, 2]
    assert resumed.history[0] == monitor.history[0]
    assert resumed.history[1].reference_epoch == 0
    assert resumed.reference is not None
    before, after = monitor.reference.state_dict(), resumed.reference.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_best_reference_follows_the_model_checkpoint(tmp_path: Path) -> None:
    monitor = _monitor("best", every_n_epochs=1, images=0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss", save_top_k=1)
    cpu_trainer(tmp_path, [monitor, checkpoint], max_epochs=3, enable_checkpointing=True).fit(
        _model(), _data()
    )
    # ModelCheckpoint saves after the monitor's epoch end: epoch 0 has no best yet
    assert [r.epoch for r in monitor.history] == [1, 2]
    assert all(r.reference == "best" for r in monitor.history)
    best_epoch = torch.load(checkpoint.best_model_path, weights_only=False)["epoch"]
    assert monitor.history[0].reference_epoch == 0
    assert monitor.history[-1].reference_epoch <= best_epoch
    assert monitor.state_key != _monitor("epoch:0").state_key
    with pytest.raises(RuntimeError, match=r"reference='best'.*has none"):
        cpu_trainer(tmp_path, [_monitor("best")]).fit(_model(), _data())


def test_validate_with_an_epoch_reference_and_no_snapshot_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = _monitor("epoch:3")
    with caplog.at_level(logging.INFO, logger="lightning_insight.comparison.callback"):
        cpu_trainer(tmp_path, [monitor]).validate(_model(), _data())
    assert monitor.history == [] and monitor.reference is None
    assert caplog.text.count("no reference model yet") == 1


def test_checkpoint_reference_loads_and_a_bad_one_fails_clearly(tmp_path: Path) -> None:
    trainer = cpu_trainer(tmp_path, [], max_epochs=1)
    trainer.fit(_model(seed=1), _data())
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    monitor = _monitor(good)
    assert monitor.state_key != _monitor("epoch:0").state_key
    cpu_trainer(tmp_path, [monitor]).validate(_model(), _data())
    assert len(monitor.history) == 1 and isinstance(monitor.reference, SceneClassifier)

    other = _Other()
    other_trainer = cpu_trainer(tmp_path, [], max_epochs=1)
    other_trainer.strategy.connect(other)
    other_trainer.save_checkpoint(tmp_path / "other.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    for name in ("other.ckpt", "garbage.ckpt"):
        with pytest.raises(RuntimeError, match=rf"{name}.*does not load into SceneClassifier"):
            cpu_trainer(tmp_path, [_monitor(tmp_path / name)]).validate(_model(), _data())


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
        ("epoch:0", {"images": -1}, r"`images` to be an int >= 0, but got -1"),
    ],
)
def test_arguments_are_checked_in_init(reference: Any, kwargs: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {"max_samples": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        AttributionComparisonMonitor(reference, "backbone.1", **options)


@pytest.mark.slow
def test_two_process_ddp_fit_compares_on_the_gathered_probe_set(
    tmp_path: Path, run_ok: Any
) -> None:
    prefix = tmp_path / "comparison_"
    run_ok([sys.executable, str(SCRIPT), str(prefix), "2"], tmp_path)
    ranks = [json.loads((tmp_path / f"comparison_{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # both ranks compared on the same gathered probe set and hold the same report
    assert ranks[0]["reports"] == ranks[1]["reports"]
    (report,) = ranks[0]["reports"]
    assert report["epoch"] == 1 and report["reference_epoch"] == 0
    # 301 images over 2 ranks: 120 distinct probe images, the padded duplicate dropped by id
    assert report["num_samples"] == 120
    exemplar_ids = {e[0] for c in report["clusters"] for e in c["exemplars"]}
    assert len(exemplar_ids) <= 120
    # only rank 0 writes pictures
    assert ranks[0]["images"] > 0 and ranks[1]["images"] == 0
