from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
import pytest
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lightning_insight.sinks import (
    CSVSink,
    MemorySink,
    Sink,
    SinkGroup,
    TensorBoardSink,
    WandbSink,
    sinks_for_trainer,
)


class BrokenSink(MemorySink):
    """Fails in one method; records the calls that reach it."""

    def __init__(self, name: str = "broken", fail_in: str = "scalars") -> None:
        super().__init__(name)
        self.fail_in = fail_in
        self.calls = 0

    def scalars(self, values: Any, *, step: int) -> None:
        self.calls += 1
        if self.fail_in == "scalars":
            raise OSError("disk on fire")
        super().scalars(values, step=step)

    def flush(self) -> None:
        self.calls += 1
        if self.fail_in == "flush":
            raise RuntimeError("cannot flush")
        super().flush()


def _trainer(tmp_path, **kwargs: Any) -> Trainer:
    kwargs.setdefault("logger", False)
    return Trainer(
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )


def test_failing_sink_warns_once_is_disabled_and_others_go_on():
    broken, good = BrokenSink(), MemorySink()
    group = SinkGroup([broken, good])
    assert isinstance(group, Sink)
    with pytest.warns(
        UserWarning, match=r"Sink 'broken' .*OSError in `scalars`: disk on fire.*disabled"
    ):
        group.scalars({"a": 1.0}, step=1)
    assert group.disabled == {"broken": "OSError in `scalars`: disk on fire"}
    assert group.enabled == (good,)
    group.scalars({"a": 2.0}, step=2)
    group.text("t", "x", step=2)
    group.flush()
    group.close()
    assert broken.calls == 1
    assert (broken.flushes, broken.closes) == (0, 1)
    assert good.scalars_log == [(1, {"a": 1.0}), (2, {"a": 2.0})]
    assert (good.texts, good.flushes, good.closes) == ([(2, "t", "x")], 1, 1)


@pytest.mark.filterwarnings("error")
def test_no_warning_after_the_first():
    group = SinkGroup([BrokenSink(fail_in="flush"), MemorySink()])
    group.scalars({"a": 1.0}, step=1)
    with pytest.warns(UserWarning, match="RuntimeError in `flush`"):
        group.flush()
    group.flush()
    group.scalars({"a": 1.0}, step=2)
    assert list(group.disabled) == ["broken"]


def test_removed_csv_directory_warns_and_the_run_goes_on(tmp_path, rows):
    csv = CSVSink(tmp_path / "logs" / "insight" / "slices.csv")
    memory = MemorySink()
    group = SinkGroup([csv, memory])
    group.table("insight/slices", rows, step=1)
    group.flush()
    shutil.rmtree(tmp_path / "logs")
    group.table("insight/slices", rows, step=2)
    with pytest.warns(
        UserWarning, match=r"Sink 'csv' \(CSVSink\) raised FileNotFoundError in `flush`"
    ):
        group.flush()
    group.table("insight/slices", rows, step=3)
    group.flush()
    group.close()  # the disabled CSV fails again on close: only logged
    assert "csv" in group.disabled
    assert [step for step, _, _ in memory.tables] == [1, 2, 3]
    assert memory.flushes == 3


def test_non_zero_rank_writes_nothing(tmp_path, rows):
    memory, csv = MemorySink(), CSVSink(tmp_path / "slices.csv")
    group = SinkGroup([memory, csv], is_global_zero=False)
    group.scalars({"a": 1.0}, step=1)
    group.table("insight/slices", rows, step=1)
    group.json("j", {"a": 1}, step=1)
    group.image("i", np.zeros((2, 2, 3), np.uint8), step=1)
    group.text("t", "x", step=1)
    group.flush()
    group.close()
    assert (memory.scalars_log, memory.tables, memory.jsons, memory.images, memory.texts) == (
        [],
        [],
        [],
        [],
        [],
    )
    assert (memory.flushes, memory.closes) == (0, 0)
    assert not (tmp_path / "slices.csv").exists()


def test_caller_mistakes_raise_instead_of_disabling_sinks(rows):
    group = SinkGroup([MemorySink()])
    with pytest.raises(ValueError, match=r"uint8 array of shape \(H, W, 3\), but got float64"):
        group.image("i", np.zeros((2, 2, 3)), step=1)
    with pytest.raises(TypeError, match=r"Expected argument `image` to be a numpy\.ndarray"):
        group.image("i", [[0]], step=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lacks"):
        group.table("k", [{"epoch": 0}], step=1)
    with pytest.raises(TypeError, match="Expected argument `values` to be a mapping"):
        group.scalars([1.0], step=1)  # type: ignore[arg-type]
    assert group.disabled == {}


def test_group_argument_validation():
    with pytest.raises(TypeError, match="Expected argument `sinks` to hold Sink objects"):
        SinkGroup([MemorySink(), "csv"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"distinct names, but got 'memory' twice\. HINT"):
        SinkGroup([MemorySink(), MemorySink()])


def test_default_sinks_follow_the_loggers(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", default_hp_metric=False)
    trainer = _trainer(tmp_path, logger=[logger, CSVLogger(tmp_path, name="csv")])
    sinks = sinks_for_trainer(trainer)
    assert [type(sink) for sink in sinks] == [TensorBoardSink, CSVSink]
    assert sinks[0].writer is logger.experiment
    assert sinks[1].path == tmp_path / "tb" / "version_0" / "insight" / "slices.csv"
    assert os.fspath(sinks[1].path) == os.path.join(trainer.log_dir, "insight", "slices.csv")
    SinkGroup(sinks)  # names are distinct


def test_default_without_logger_is_csv_in_the_root_dir(tmp_path):
    (sink,) = sinks_for_trainer(_trainer(tmp_path))
    assert isinstance(sink, CSVSink)
    assert sink.path == tmp_path / "insight" / "slices.csv"


def test_requested_names_and_objects(tmp_path):
    mine = MemorySink(name="mine")
    sinks = sinks_for_trainer(_trainer(tmp_path), ["memory", mine, "tensorboard", "csv", "memory"])
    assert [sink.name for sink in sinks] == ["memory", "mine", "tensorboard", "csv", "memory_1"]
    assert sinks[1] is mine
    assert isinstance(sinks[2], TensorBoardSink)
    assert sinks[2].owns_writer  # no TensorBoardLogger: its own event files in the log dir
    assert sinks_for_trainer(_trainer(tmp_path), "csv")[0].name == "csv"
    assert sinks_for_trainer(_trainer(tmp_path), []) == []


def test_unknown_or_unavailable_names_raise(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"names from \['csv', 'memory', 'tensorboard', 'wandb'\], but got 'mlflow'",
    ):
        sinks_for_trainer(trainer, ["mlflow"])
    with pytest.raises(ValueError, match=r"`sinks` to name only loggers attached.*'wandb'.*HINT"):
        sinks_for_trainer(trainer, ["wandb"])
    with pytest.raises(TypeError, match="Expected argument `sinks` to hold Sink objects or names"):
        sinks_for_trainer(trainer, [3])  # type: ignore[list-item]


def test_other_ranks_get_no_sinks(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, logger=TensorBoardLogger(tmp_path))
    monkeypatch.setattr(Trainer, "is_global_zero", property(lambda self: False))
    assert sinks_for_trainer(trainer) == []
    assert sinks_for_trainer(trainer, ["wandb"]) == []


def test_wandb_logger_gives_a_wandb_sink_on_its_run(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=tmp_path)
    try:
        sinks = sinks_for_trainer(_trainer(tmp_path, logger=logger), ["wandb"])
        assert isinstance(sinks[0], WandbSink)
        assert sinks[0].run is logger.experiment
    finally:
        logger.experiment.finish()
