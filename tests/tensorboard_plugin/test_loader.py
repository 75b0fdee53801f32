from __future__ import annotations

import argparse

from tensorboard import default
from tensorboard.plugins import base_plugin

from lightning_insight.sinks._tb_summary import PLUGIN_NAME
from lightning_insight.tensorboard_plugin import PLUGIN_NAME as LOADER_PLUGIN_NAME
from lightning_insight.tensorboard_plugin import InsightBoardLoader


def test_entry_point_loads_without_crashing_tensorboard() -> None:
    loaders = default.get_dynamic_plugins()  # what TensorBoard does at start-up, with no try/except
    assert InsightBoardLoader in loaders
    loader = InsightBoardLoader()
    assert loader.load(base_plugin.TBContext(logdir="/nonexistent")) is None
    assert LOADER_PLUGIN_NAME == PLUGIN_NAME


def test_fix_flags_keeps_every_report() -> None:
    flags = argparse.Namespace(samples_per_plugin={"scalars": 500})
    InsightBoardLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"scalars": 500, PLUGIN_NAME: 0}
    flags = argparse.Namespace(samples_per_plugin={PLUGIN_NAME: 7})
    InsightBoardLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {PLUGIN_NAME: 7}
