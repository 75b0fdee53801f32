"""Readers that check what the sinks wrote through the back ends' own formats."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lightning_insight.sinks.base import ROW_FIELDS


def make_rows(source: str = "val", step: int = 7) -> list[dict[str, Any]]:
    return [
        {"epoch": 1, "step": step, "source": source, "dimension": "weather", "slice": "weather=rainy",
         "metric": "accuracy", "value": 0.8123456, "count": 40},
        {"epoch": 1, "step": step, "source": source, "dimension": "weather", "slice": "weather=rainy",
         "metric": "tpr", "value": float("nan"), "count": 40},
        {"epoch": 1, "step": step, "source": source, "dimension": "weather&timeofday",
         "slice": "weather=clear&timeofday=night", "metric": "accuracy", "value": 0.5, "count": 3},
    ]  # fmt: skip


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    rows = make_rows()
    assert all(set(row) == set(ROW_FIELDS) for row in rows)
    return rows


class TensorBoardReader:
    """TensorBoard's own data provider over a log directory, as InsightBoard will read it."""

    def __init__(self, logdir: Path) -> None:
        from tensorboard import context
        from tensorboard.backend.event_processing import plugin_event_multiplexer
        from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider

        from lightning_insight.sinks._tb_summary import PLUGIN_NAME

        multiplexer = plugin_event_multiplexer.EventMultiplexer(
            tensor_size_guidance={PLUGIN_NAME: 0}
        )
        multiplexer.AddRunsFromDirectory(str(logdir))
        multiplexer.Reload()
        self.provider = MultiplexerDataProvider(multiplexer, str(logdir))
        self.ctx = context.RequestContext()

    def list_tensors(self, plugin_name: str) -> dict[str, dict[str, Any]]:
        return self.provider.list_tensors(self.ctx, experiment_id="", plugin_name=plugin_name)

    def read_tensors(self, plugin_name: str) -> dict[str, dict[str, list[Any]]]:
        return self.provider.read_tensors(
            self.ctx, experiment_id="", plugin_name=plugin_name, downsample=10_000
        )

    def read_scalars(self) -> dict[str, dict[str, list[Any]]]:
        return self.provider.read_scalars(
            self.ctx, experiment_id="", plugin_name="scalars", downsample=10_000
        )

    def list_blob_sequences(self, plugin_name: str) -> dict[str, dict[str, Any]]:
        return self.provider.list_blob_sequences(
            self.ctx, experiment_id="", plugin_name=plugin_name
        )


@pytest.fixture
def tensorboard_reader() -> Callable[[Path], TensorBoardReader]:
    return TensorBoardReader


def _wandb_chunks(data: bytes) -> Iterator[bytes]:
    """Records of a ``.wandb`` file: a LevelDB log (32 KiB blocks, 7-byte record headers)."""
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    block, position, partial = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        position += 7
        if kind == 0 and length == 0:
            position += left - 7
            continue
        chunk = data[position : position + length]
        position += length
        if kind == 1:
            yield chunk
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            yield partial + chunk
            partial = b""


def read_wandb_history(run_dir: Path, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The history rows of an offline run, values decoded from JSON; media tables loaded from files."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(str(run_dir / "run-*.wandb"))
    # `run.finish()` can return before wandb-core has written the file: wait for its exit record.
    deadline = time.monotonic() + timeout
    while True:
        records = []
        for chunk in _wandb_chunks(Path(path).read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            break
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.05)
    history: list[dict[str, Any]] = []
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            keys = list(item.nested_key) or [item.key]
            target = row
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = json.loads(item.value_json)
        for value in row.values():
            if isinstance(value, dict) and value.get("_type") == "table-file":
                value["content"] = json.loads((run_dir / "files" / value["path"]).read_text())
        history.append(row)
    return history


@pytest.fixture
def wandb_history() -> Callable[[Path], list[dict[str, Any]]]:
    return read_wandb_history


def run_command(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (5 min at most) and assert it exited 0, showing its stderr if not."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def run_ok() -> Callable[[list[str], Path], subprocess.CompletedProcess[str]]:
    return run_command
