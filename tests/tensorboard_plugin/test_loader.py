from __future__ import annotations

import argparse
import logging
import subprocess
import sys

import pytest
from tensorboard import default
from tensorboard.plugins import base_plugin

from lightning_insight.sinks._tb_summary import PLUGIN_NAME
from lightning_insight.tensorboard_plugin import PLUGIN_NAME as LOADER_PLUGIN_NAME
from lightning_insight.tensorboard_plugin import InsightBoardLoader
from lightning_insight.tensorboard_plugin.plugin import InsightBoardPlugin


def test_entry_point_loads_the_plugin() -> None:
    loaders = default.get_dynamic_plugins()  # what TensorBoard does at start-up, with no try/except
    assert InsightBoardLoader in loaders
    plugin = InsightBoardLoader().load(base_plugin.TBContext(logdir="/nonexistent"))
    assert isinstance(plugin, InsightBoardPlugin)
    assert plugin.plugin_name == LOADER_PLUGIN_NAME == PLUGIN_NAME


def test_loader_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, lightning_insight.tensorboard_plugin\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'lightning_insight.sinks',"
        " 'lightning_insight.tensorboard_plugin.plugin') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_load_returns_none_and_logs_when_the_plugin_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "lightning_insight.tensorboard_plugin.plugin", None)
    with caplog.at_level(logging.WARNING, logger="lightning_insight.tensorboard_plugin"):
        assert InsightBoardLoader().load(base_plugin.TBContext(logdir="/nonexistent")) is None
    assert "InsightBoard is disabled" in caplog.text
    assert "ImportError" in caplog.text or "ModuleNotFoundError" in caplog.text


def test_fix_flags_keeps_every_report_and_image() -> None:
    flags = argparse.Namespace(samples_per_plugin={"scalars": 500})
    InsightBoardLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"scalars": 500, PLUGIN_NAME: 0, "images": 0}
    flags = argparse.Namespace(samples_per_plugin={PLUGIN_NAME: 7, "images": 3})
    InsightBoardLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {PLUGIN_NAME: 7, "images": 3}
    flags = argparse.Namespace()
    InsightBoardLoader().fix_flags(flags)  # no such flag: nothing to do, no error
    assert not hasattr(flags, "samples_per_plugin")
