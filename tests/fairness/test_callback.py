"""FairnessMonitor inside real Trainer runs (CPU, tiny synthetic data)."""

from __future__ import annotations

import csv
import math
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_insight import FairnessAlertWarning, FairnessMonitor, MemorySink, slice_metrics
from lightning_insight.batch import BatchData
from lightning_insight.datasets import SceneClassifier, ScenesDataModule
from tests.trainers import cpu_trainer

SLICES = ["weather", "timeofday", "weather&timeofday"]
# the contract from ARCHITECTURE.md, spelled out rather than imported
CSV_HEADER = ["epoch", "step", "source", "dimension", "slice", "metric", "value", "count"]


def _data(**kwargs: Any) -> ScenesDataModule:
    return ScenesDataModule(
        **{"num_train": 128, "num_val": 150, "num_test": 90, "batch_size": 32, **kwargs}
    )


def _model() -> SceneClassifier:
    torch.manual_seed(0)
    return SceneClassifier(channels=(4, 8))


def _trainer(tmp_path: Path, callbacks: list[Any], **kwargs: Any) -> Trainer:
    return cpu_trainer(tmp_path, callbacks, **{"num_sanity_val_steps": 2, **kwargs})


def _predictions(
    model: SceneClassifier, data: ScenesDataModule
) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]]]:
    data.setup("validate")
    probs, targets, attributes = [], [], {"weather": [], "timeofday": []}
    model.eval()
    with torch.no_grad():
        for batch in data.val_dataloader():
            probs.append(torch.sigmoid(model(batch["image"])).reshape(-1))
            targets.append(batch["target"])
            for k in attributes:
                attributes[k] += list(batch["attributes"][k])
    return torch.cat(probs).numpy(), torch.cat(targets).numpy(), attributes


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"task": "regression"},
            ValueError,
            r"`task` to be one of \['binary', 'multiclass', 'detection'\], but got 'regression'",
        ),
        (
            {"metrics": ["accuracy", "auc"]},
            ValueError,
            r"`metrics` to name metrics of task='binary' from \['accuracy', .*unknown \['auc'\]",
        ),
        (
            {"indicators": ["parity"]},
            ValueError,
            r"`indicators` to name indicators .*unknown \['parity'\]",
        ),
        ({"alerts": ["accuracy_ratio << 0.8"]}, ValueError, r"found '<<' at column 15"),
        (
            {"alerts": ["light: accuracy_ratio < 0.8"]},
            ValueError,
            r"scope of alert rule .* dimension of `slices`",
        ),
        ({"min_support": 0}, ValueError, r"`min_support` to be an int >= 1, but got 0"),
        ({"every_n_epochs": 1.5}, ValueError, r"`every_n_epochs` to be an int >= 1"),
        (
            {"on_alert": "panic"},
            ValueError,
            r"`on_alert` to be 'warn', 'stop' or a callable, but got 'panic'",
        ),
        ({"threshold": 1.7}, ValueError, r"`threshold` to be a float in \[0, 1\], but got 1.7"),
        ({"slices": []}, ValueError, r"`slices` to name at least one dimension"),
        (
            {"reference": {"scene": "city"}},
            ValueError,
            r"`reference` to use dimensions from `slices`",
        ),
        ({"adapter": 3}, TypeError, r"`adapter` to be a callable"),
        ({"prefix": "insight/"}, ValueError, r"`prefix` to be a non-empty string"),
    ],
)
def test_arguments_are_checked_in_init(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        FairnessMonitor(**{"task": "binary", "slices": SLICES, **kwargs})


def test_fit_reports_each_epoch_to_memory_sink_and_matches_slice_metrics(tmp_path: Path) -> None:
    sink = MemorySink()
    monitor = FairnessMonitor(
        "binary", SLICES, alerts=["accuracy_difference >= 0"], min_support=5, sinks=[sink]
    )
    model, data = _model(), _data()
    trainer = _trainer(tmp_path, [monitor])
    with pytest.warns(FairnessAlertWarning, match="accuracy_difference >= 0"):
        trainer.fit(model, data)
    # the sanity check (2 batches) is skipped: one report per epoch, counting the whole val set
    assert [(r.epoch, r.source) for r in monitor.history] == [(0, "val"), (1, "val")]
    last = monitor.history[-1]
    assert last.overall["count"] == 150
    probs, targets, attributes = _predictions(model, data)
    oracle = slice_metrics(probs, targets, attributes, task="binary", slices=SLICES, min_support=5)
    assert set(last.slices) == set(oracle.slices)
    for name, values in oracle.slices.items():
        for metric, value in values.items():
            got = last.slices[name][metric]
            assert (math.isnan(got) and math.isnan(value)) or abs(got - value) < 1e-6, (
                name,
                metric,
            )
    keys = sink.scalar_keys()
    assert "insight/slice/weather/foggy/accuracy" in keys
    assert "insight/slice/weather&timeofday/foggy&night/tpr" in keys
    assert "insight/gap/weather&timeofday/equalized_odds_difference" in keys
    assert "insight/alert/accuracy_difference>=0" in keys
    assert "insight/worst/accuracy" in keys
    assert [step for step, _ in sink.scalars_log] == [
        2,
        4,
    ]  # Lightning's global_step at each epoch end
    assert sink.tables[-1][1] == "insight/slices" and len(sink.tables[-1][2]) == len(last.rows())
    assert (
        sink.jsons[-1][2]["slices"]["weather=foggy"]["count"]
        == last.slices["weather=foggy"]["count"]
    )
    # the JSON report carries every configured rule (InsightBoard draws their thresholds)
    assert sink.jsons[-1][2]["rules"] == [
        {
            "rule": "accuracy_difference >= 0",
            "dimension": None,
            "name": "accuracy_difference",
            "op": ">=",
            "threshold": 0.0,
        }
    ]
    # headline scalars reach callback_metrics so EarlyStopping/ModelCheckpoint can monitor them
    logged = trainer.callback_metrics["insight/gap/weather/equalized_odds_difference"]
    assert abs(float(logged) - last.indicators["weather"]["equalized_odds_difference"]) < 1e-6
    assert monitor.alerts and all(a.rule == "accuracy_difference >= 0" for a in monitor.alerts)


def test_validate_and_test_runs(tmp_path: Path) -> None:
    sink = MemorySink()
    monitor = FairnessMonitor("binary", SLICES, sinks=[sink])
    trainer = _trainer(tmp_path, [monitor])
    model, data = _model(), _data()
    trainer.validate(model, data)
    trainer.test(model, data)
    assert [(r.source, r.overall["count"]) for r in monitor.history] == [("val", 150), ("test", 90)]
    # test() logs at validation's step: its keys carry /test so the two curves stay apart
    (val_scalars, test_scalars) = (values for _, values in sink.scalars_log)
    assert val_scalars["insight/overall/count"] == 150
    assert test_scalars["insight/overall/count/test"] == 90
    assert not any(key.endswith("/test") for key in val_scalars)
    assert all(key.endswith("/test") for key in test_scalars)
    assert [key for _, key, _ in sink.jsons] == ["insight/report", "insight/report/test"]


def test_every_n_epochs(tmp_path: Path) -> None:
    monitor = FairnessMonitor("binary", ["weather"], every_n_epochs=2, sinks=[MemorySink()])
    _trainer(tmp_path, [monitor], max_epochs=4).fit(_model(), _data())
    assert [r.epoch for r in monitor.history] == [1, 3]


def test_resume_neither_loses_nor_repeats_and_keeps_alert_streaks(tmp_path: Path) -> None:
    rule = "accuracy_difference >= 0"  # holds every epoch
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = FairnessMonitor(
        "binary", SLICES, alerts=[rule], patience=3, min_support=1, sinks=[MemorySink()]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairnessAlertWarning)
        _trainer(tmp_path, [first, checkpoint], enable_checkpointing=True, max_epochs=2).fit(
            _model(), _data()
        )
    assert first.alerts == []  # streak 2 < patience 3
    second = FairnessMonitor(
        "binary", SLICES, alerts=[rule], patience=3, min_support=1, sinks=[MemorySink()]
    )
    with pytest.warns(FairnessAlertWarning, match="3 consecutive"):
        _trainer(
            tmp_path,
            [second, ModelCheckpoint(dirpath=tmp_path / "ckpt2")],
            enable_checkpointing=True,
            max_epochs=4,
        ).fit(_model(), _data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [r.epoch for r in second.history] == [0, 1, 2, 3]
    assert {a.epoch for a in second.alerts} == {2, 3}
    assert min(a.streak for a in second.alerts) == 3


def test_pickle_and_two_instances_side_by_side(tmp_path: Path) -> None:
    a = FairnessMonitor("binary", ["weather"], sinks=[MemorySink()])
    b = FairnessMonitor("binary", ["timeofday"], metrics=["accuracy", "tpr"], sinks=[MemorySink()])
    assert a.state_key != b.state_key
    _trainer(tmp_path, [a, b], max_epochs=1).fit(_model(), _data())
    assert list(a.history[-1].dimensions) == ["weather"]
    assert list(b.history[-1].dimensions) == ["timeofday"]
    assert set(b.history[-1].overall) == {"accuracy", "tpr", "count"}
    again = pickle.loads(pickle.dumps(a))
    assert again.history[-1].to_dict() == a.history[-1].to_dict()


class _TwoLoaders(ScenesDataModule):
    def val_dataloader(self) -> list[Any]:  # type: ignore[override]
        loader = super().val_dataloader()
        return [loader, loader]


class _TwoLoadersModel(SceneClassifier):
    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        return super().validation_step(batch, batch_idx)


def test_several_validation_dataloaders_give_one_report_each(tmp_path: Path) -> None:
    sink = MemorySink()
    monitor = FairnessMonitor("binary", ["weather"], sinks=[sink])
    model = _TwoLoadersModel(channels=(4, 8))
    _trainer(tmp_path, [monitor], max_epochs=1).fit(
        model, _TwoLoaders(num_train=64, num_val=60, batch_size=32)
    )
    assert [r.source for r in monitor.history] == ["val/dataloader_idx_0", "val/dataloader_idx_1"]
    assert monitor.history[0].to_dict()["slices"] == monitor.history[1].to_dict()["slices"]
    assert "insight/slice/weather/clear/accuracy/dataloader_idx_1" in sink.scalar_keys()


def _half(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> BatchData:
    return BatchData(
        outputs["preds"].half(), batch["target"], batch["attributes"], batch["sample_id"]
    )


def test_half_precision_preds_are_upcast(tmp_path: Path) -> None:
    full = FairnessMonitor("binary", ["weather"], sinks=[MemorySink()])
    half = FairnessMonitor("binary", ["timeofday"], adapter=_half, sinks=[MemorySink()])
    _trainer(tmp_path, [full, half], max_epochs=1).fit(_model(), _data())
    assert half.history[-1].overall["count"] == 150
    assert abs(half.history[-1].overall["accuracy"] - full.history[-1].overall["accuracy"]) < 0.02


def test_on_alert_stop_and_callable(tmp_path: Path) -> None:
    received: list[Any] = []
    stopper = FairnessMonitor(
        "binary",
        ["weather"],
        alerts=["accuracy_difference >= 0"],
        on_alert="stop",
        min_support=1,
        sinks=[MemorySink()],
    )
    listener = FairnessMonitor(
        "binary",
        ["timeofday"],
        alerts=["accuracy_difference >= 0"],
        on_alert=received.append,
        min_support=1,
        sinks=[MemorySink()],
    )
    trainer = _trainer(tmp_path, [stopper, listener], max_epochs=5)
    trainer.fit(_model(), _data())
    assert trainer.current_epoch == 1  # stopped after the first validation epoch
    assert [r.epoch for r in stopper.history] == [0]
    assert [(a.epoch, a.dimension) for a in received] == [(0, "timeofday")]


def _corrupt(kind: str) -> Any:
    def adapter(outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> BatchData:
        preds, target, attributes = outputs["preds"], batch["target"], dict(batch["attributes"])
        if kind == "nan":
            preds = preds.clone()
            preds[0] = float("nan")
        elif kind == "logits":
            preds = preds * 10 + 2
        elif kind == "target":
            target = target + 2
        elif kind == "length":
            attributes["weather"] = attributes["weather"][:-1]
        elif kind == "missing":
            attributes.pop("weather")
        elif kind == "many":
            attributes["weather"] = [f"w{i}" for i in batch["sample_id"].tolist()]
        return BatchData(preds, target, attributes, batch["sample_id"])

    return adapter


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("nan", ValueError, r"Expected `preds` without NaN, but got 1 NaN values"),
        (
            "logits",
            ValueError,
            r"probabilities in \[0, 1\] or hard labels.*HINT: apply torch.sigmoid",
        ),
        (
            "target",
            ValueError,
            r"Expected `target` for task='binary' in \{0, 1\}, but got values \[2, 3\]",
        ),
        (
            "length",
            ValueError,
            r"Expected attribute 'weather' to have one value per prediction \(32\), but got 31",
        ),
        (
            "missing",
            RuntimeError,
            r"Expected attribute 'weather' \(needed by argument `slices`\) in the batch",
        ),
        ("many", ValueError, r"at most max_slices=20 distinct values"),
    ],
)
def test_bad_input_fails_at_the_first_batch(
    tmp_path: Path, kind: str, error: type[Exception], match: str
) -> None:
    monitor = FairnessMonitor(
        "binary", ["weather"], adapter=_corrupt(kind), max_slices=20, sinks=[MemorySink()]
    )
    with pytest.raises(error, match=match):
        _trainer(
            tmp_path, [monitor], max_epochs=1, num_sanity_val_steps=0, limit_train_batches=1
        ).fit(_model(), _data())


def test_missing_attribute_in_batch_names_found_keys(tmp_path: Path) -> None:
    monitor = FairnessMonitor("binary", ["age:0,18,inf"], sinks=[MemorySink()])
    with pytest.raises(
        RuntimeError,
        match=r"Expected attributes \['age'\].*found keys \['scene', 'timeofday', 'weather'\]",
    ):
        _trainer(
            tmp_path, [monitor], max_epochs=1, num_sanity_val_steps=0, limit_train_batches=1
        ).fit(_model(), _data())


def test_default_sinks_write_tensorboard_and_csv_and_survive_a_failing_sink(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="logs", default_hp_metric=False)
    memory = MemorySink()
    monitor = FairnessMonitor("binary", SLICES, sinks=["tensorboard", "csv", memory])

    class _RemoveCsvDir(MemorySink):
        def flush(self) -> None:
            super().flush()
            if self.flushes == 1:  # after the first epoch's CSV write, the report folder disappears
                shutil.rmtree(Path(logger.log_dir) / "insight")

    remover = _RemoveCsvDir(name="remover")
    monitor_b = FairnessMonitor("binary", ["scene"], sinks=[remover], prefix="other")
    trainer = _trainer(tmp_path, [monitor, monitor_b], logger=logger, max_epochs=3)
    with pytest.warns(UserWarning, match=r"csv"):
        trainer.fit(_model(), _data())
    assert [r.epoch for r in monitor.history] == [0, 1, 2]
    assert len(memory.scalars_log) == 3  # the other sinks kept writing
    assert monitor.sinks is not None and "csv" in monitor.sinks.disabled
    event_files = list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert event_files


def test_csv_has_one_row_per_epoch_slice_metric_and_no_partial_row_after_a_crash(
    tmp_path: Path,
) -> None:
    class _Crash(SceneClassifier):
        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
            if self.current_epoch == 1 and batch_idx == 3:
                raise RuntimeError("boom mid-epoch")
            return super().validation_step(batch, batch_idx)

    torch.manual_seed(0)
    monitor = FairnessMonitor("binary", ["weather", "weather&timeofday"], sinks=["csv"])
    trainer = _trainer(tmp_path, [monitor], max_epochs=3)
    with pytest.raises(RuntimeError, match="boom mid-epoch"):
        trainer.fit(_Crash(channels=(4, 8)), _data())
    path = tmp_path / "insight" / "slices.csv"
    text = path.read_text()
    assert text.endswith("\n")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_HEADER
    assert {r["epoch"] for r in rows} == {"0"}
    report = monitor.history[0]
    assert len(rows) == len(report.rows())
    keys = [(r["epoch"], r["dimension"], r["slice"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    foggy = next(r for r in rows if r["slice"] == "weather=foggy" and r["metric"] == "accuracy")
    assert float(foggy["value"]) == pytest.approx(report.slices["weather=foggy"]["accuracy"])


def test_wandb_offline_run_gets_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wandb_history: Any
) -> None:
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="insight-test")
    monitor = FairnessMonitor("binary", ["weather", "weather&timeofday"], min_support=1)
    _trainer(tmp_path, [monitor], logger=logger, max_epochs=2).fit(_model(), _data())
    run_dir = Path(logger.experiment.dir).parent
    wandb.finish()
    assert monitor.sinks is not None and [s.name for s in monitor.sinks.sinks] == ["wandb", "csv"]
    history = [row for row in wandb_history(run_dir) if "insight/slices" in row]
    assert [row["trainer/global_step"] for row in history] == [2, 4]
    table = history[-1]["insight/slices"]["content"]
    assert table["columns"] == CSV_HEADER
    last = monitor.history[-1]
    assert len(table["data"]) == len(last.rows())
    by_key = {(r[4], r[5]): r[6] for r in table["data"]}
    assert by_key[("weather=foggy", "accuracy")] == pytest.approx(
        last.slices["weather=foggy"]["accuracy"]
    )
    assert history[-1]["insight/worst/accuracy"] == pytest.approx(last.worst()["accuracy"][1])
    assert (tmp_path / "insight" / "slices.csv").exists() or list(
        tmp_path.rglob("insight/slices.csv")
    )


def test_tensorboard_gets_scalars_and_plugin_json_for_every_epoch(
    tmp_path: Path, tensorboard_reader: Any
) -> None:
    from lightning_insight.sinks._tb_summary import PLUGIN_NAME, decode_json_tensor

    logger = TensorBoardLogger(str(tmp_path), name="tb", default_hp_metric=False)
    monitor = FairnessMonitor("binary", ["weather", "weather&timeofday"], min_support=1)
    _trainer(tmp_path, [monitor], logger=logger, max_epochs=3).fit(_model(), _data())
    logger.experiment.flush()
    reader = tensorboard_reader(Path(logger.log_dir))
    tensors = next(iter(reader.read_tensors(PLUGIN_NAME).values()))
    reports = tensors["insight/report"]
    assert [d.step for d in reports] == [2, 4, 6]
    payload = decode_json_tensor(reports[-1].numpy)
    assert (
        payload["slices"]["weather=foggy"]["count"]
        == monitor.history[-1].slices["weather=foggy"]["count"]
    )
    scalars = next(iter(reader.read_scalars().values()))
    gap = scalars["insight/gap/weather/accuracy_difference"]
    assert [d.step for d in gap] == [2, 4, 6]
    assert gap[-1].value == pytest.approx(
        monitor.history[-1].indicators["weather"]["accuracy_difference"], abs=1e-6
    )


def test_early_stopping_and_checkpointing_can_monitor_headline_keys(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import EarlyStopping

    monitor = FairnessMonitor("binary", SLICES, min_support=1, sinks=[MemorySink()])
    stopper = EarlyStopping(
        monitor="insight/worst/accuracy", mode="max", patience=0, min_delta=1.0, strict=True
    )
    best = ModelCheckpoint(
        dirpath=tmp_path / "best",
        monitor="insight/gap/weather/equalized_odds_difference",
        mode="min",
    )
    trainer = _trainer(tmp_path, [monitor, stopper, best], enable_checkpointing=True, max_epochs=5)
    trainer.fit(_model(), _data())
    assert (
        trainer.current_epoch == 2
    )  # no epoch improves worst accuracy by min_delta=1.0: stop after patience
    assert len(monitor.history) == 2
    expected = min(r.indicators["weather"]["equalized_odds_difference"] for r in monitor.history)
    assert float(best.best_model_score) == pytest.approx(expected, abs=1e-6)


def test_one_monitor_in_two_trainers_writes_to_each_trainers_folder(tmp_path: Path) -> None:
    monitor = FairnessMonitor("binary", ["weather"], sinks=["csv"])
    model, data = _model(), _data()
    _trainer(tmp_path / "a", [monitor], max_epochs=1).fit(model, data)
    _trainer(tmp_path / "b", [monitor]).validate(model, data)
    assert (tmp_path / "a" / "insight" / "slices.csv").exists()
    with (tmp_path / "b" / "insight" / "slices.csv").open() as f:
        assert {r["source"] for r in csv.DictReader(f)} == {"val"}
    assert len(monitor.history) == 2
