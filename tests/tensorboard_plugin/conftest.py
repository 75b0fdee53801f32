"""A log directory written by the real TensorBoardSink, and TensorBoard's own context and app over it.

Runs (what each exercises):

- ``baseline``: Lightning-style ``epoch``/``train_loss``/``lr`` scalars logged twice per epoch, a
  FairnessMonitor-style report per epoch (``val``) built by ``slice_metrics`` with an excluded slice
  and alert rules, a ``test`` report at the last epoch, discovery, comparison and failure-mode
  reports with images, and a scalar whose tag holds a comma (``loss,ema``).
- ``with_mitigation/version_0``: a nested run name, fairness reports only.
- ``no_epoch_scalar``: no ``epoch`` scalar: steps map to epochs through the reports.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

STEPS_PER_EPOCH = 10
EPOCHS = 5
RULES = ("accuracy_difference > 0.05", "weather: accuracy_ratio < 0.9")


@dataclasses.dataclass
class WrittenRun:
    """What the fixture wrote for one run, for the tests' independent expectations."""

    name: str
    train_loss: dict[int, float]  # epoch -> last value written in the epoch
    lr: dict[int, float]
    loss_ema: dict[int, float]  # the ``loss,ema`` scalar (``extras`` runs only)
    reports: dict[int, Any]  # epoch -> SliceReport (val)
    alerts: dict[int, list[Any]]  # epoch -> fired Alert objects
    test_report: Any = None
    images: dict[str, tuple[int, np.ndarray]] = dataclasses.field(default_factory=dict)
    report_steps: dict[str, dict[int, int]] = dataclasses.field(default_factory=dict)


def _report(rng: np.random.Generator, epoch: int, step: int, source: str, skill: float) -> Any:
    import torch

    from lightning_insight import slice_metrics

    n = 400
    weather = rng.choice(["clear", "rainy", "foggy"], size=n, p=[0.5, 0.35, 0.15]).astype(object)
    weather[:8] = "snowy"  # 8 samples < min_support: reported, excluded
    timeofday = rng.choice(["day", "night"], size=n)
    target = rng.integers(0, 2, size=n)
    noise = rng.random(n) < (0.45 - skill * epoch) * np.where(weather == "foggy", 1.6, 1.0)
    preds = np.where(noise, 1 - target, target)
    report = slice_metrics(
        torch.tensor(preds),
        torch.tensor(target),
        {"weather": list(weather), "timeofday": list(timeofday)},
        task="binary",
        slices=["weather", "weather&timeofday"],
        min_support=20,
    )
    return dataclasses.replace(report, epoch=epoch, step=step, source=source)


def _emit_fairness(sink: Any, report: Any, rules: list[Any], fired: list[Any]) -> None:
    """What ``FairnessMonitor._emit`` writes (scalars, table, JSON with alerts and rules)."""
    step = report.step
    scalars = report.scalars("insight", "")
    for rule in rules:
        fired_rules = {a.rule for a in fired}
        scalars[f"insight/alert/{rule.key}"] = 1.0 if rule.text in fired_rules else 0.0
    sink.scalars(scalars, step=step)
    sink.table("insight/slices", report.rows(), step=step)
    payload = {
        **report.to_dict(),
        "alerts": [a.to_dict() for a in fired],
        "rules": [
            {
                "rule": r.text,
                "dimension": r.scope,
                "name": r.name,
                "op": r.op,
                "threshold": r.threshold,
            }
            for r in rules
        ],
    }
    sink.json("insight/report", payload, step=step)


def _picture(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


def _write_run(root: Path, name: str, seed: int, *, epoch_scalar: bool, extras: bool) -> WrittenRun:
    from lightning_insight.fairness.alerts import AlertTracker, parse_alert_rule
    from lightning_insight.sinks import TensorBoardSink

    rng = np.random.default_rng(seed)
    ema_rng = np.random.default_rng(seed + 100)  # leaves the other values as they were
    sink = TensorBoardSink(root / name)
    rules = [parse_alert_rule(text) for text in RULES]
    tracker = AlertTracker(rules)
    written = WrittenRun(name=name, train_loss={}, lr={}, loss_ema={}, reports={}, alerts={})
    for epoch in range(EPOCHS):
        for offset in (4, 9):  # two training logs per epoch, the second is the epoch's value
            step = epoch * STEPS_PER_EPOCH + offset
            loss, lr = float(rng.random()), 0.1 * 0.5**epoch + offset * 1e-4
            values = {"train_loss": loss, "lr": lr}
            if epoch_scalar:
                values["epoch"] = float(epoch)
            if extras:
                values["loss,ema"] = written.loss_ema[epoch] = float(ema_rng.random())
            sink.scalars(values, step=step)
            written.train_loss[epoch], written.lr[epoch] = loss, lr
        global_step = (epoch + 1) * STEPS_PER_EPOCH
        if epoch_scalar:  # Lightning's validation log, one step before the monitors' global_step
            sink.scalars(
                {"val_loss": float(rng.random()), "epoch": float(epoch)}, step=global_step - 1
            )
        report = _report(rng, epoch, global_step, "val", skill=0.05 if seed else 0.07)
        fired = tracker.update(report)
        _emit_fairness(sink, report, rules, fired)
        written.reports[epoch], written.alerts[epoch] = report, fired
        if extras and epoch in (1, 3):
            sink.json(
                "insight/discovery/report",
                {"kind": "slice_discovery_report", "epoch": epoch, "step": global_step,
                 "source": "val", "slices": [{"slice_id": 0, "error_rate": 0.4 + epoch / 100}]},
                step=global_step,
            )  # fmt: skip
            image = _picture(rng)
            sink.image("insight/discovery/mosaic/slice_0", image, step=global_step)
            written.images[f"discovery/{epoch}"] = (global_step, image)
            written.report_steps.setdefault("discovery", {})[epoch] = global_step
        if extras and epoch == 3:
            sink.json(
                "insight/comparison/report",
                {"epoch": epoch, "step": global_step, "clusters": [{"cluster_id": 0}]},
                step=global_step,
            )
            for picture in ("cluster_0/exemplars", "cluster_0/drill_down"):
                image = _picture(rng)
                sink.image(f"insight/comparison/{picture}", image, step=global_step)
                written.images[f"comparison/{picture}"] = (global_step, image)
            written.report_steps.setdefault("comparison", {})[epoch] = global_step
        if extras and epoch == EPOCHS - 1:
            sink.json(
                "insight/failure_modes/report",
                {"kind": "failure_mode_report", "epoch": epoch, "step": global_step, "modes": []},
                step=global_step,
            )
            image = _picture(rng)
            sink.image("insight/failure_modes/mode_0", image, step=global_step)
            written.images["failure_modes/mode_0"] = (global_step, image)
            written.report_steps.setdefault("failure_modes", {})[epoch] = global_step
    if extras:  # trainer.test() after fit: same tag, source "test"
        step = EPOCHS * STEPS_PER_EPOCH
        written.test_report = _report(rng, EPOCHS - 1, step, "test", skill=0.05)
        _emit_fairness(sink, written.test_report, rules, [])
    sink.close()
    return written


@pytest.fixture(scope="session")
def insight_logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, WrittenRun]]:
    root = tmp_path_factory.mktemp("insight_logs")
    runs = {
        "baseline": _write_run(root, "baseline", 0, epoch_scalar=True, extras=True),
        "with_mitigation/version_0": _write_run(
            root, "with_mitigation/version_0", 1, epoch_scalar=True, extras=False
        ),
        "no_epoch_scalar": _write_run(root, "no_epoch_scalar", 2, epoch_scalar=False, extras=False),
    }
    return root, runs


def tensorboard_flags(logdir: Path) -> argparse.Namespace:
    """The flags TensorBoard's data ingester and WSGI app read, with the loader's ``fix_flags``."""
    from lightning_insight.tensorboard_plugin import InsightBoardLoader

    flags = argparse.Namespace(
        logdir=str(logdir),
        logdir_spec="",
        samples_per_plugin={},
        purge_orphaned_data=True,
        max_reload_threads=1,
        reload_multifile=None,
        reload_multifile_inactive_secs=86400,
        detect_file_replacement=False,
        reload_interval=0,
        reload_task="blocking",
        path_prefix="",
        window_title="",
        generic_data="true",
    )
    InsightBoardLoader().fix_flags(flags)
    return flags


@pytest.fixture(scope="session")
def tensorboard_backend(insight_logs: tuple[Path, dict[str, WrittenRun]]) -> Any:
    """TensorBoard's ``LocalDataIngester`` over the logs, loaded once (as ``tensorboard`` does)."""
    return _load(insight_logs[0])


def _load(logdir: Path) -> tuple[argparse.Namespace, Any]:
    from tensorboard.backend.event_processing import data_ingester

    flags = tensorboard_flags(logdir)
    ingester = data_ingester.LocalDataIngester(flags)
    ingester.start()
    return flags, ingester


@pytest.fixture
def make_plugin() -> Any:
    """Builds the plugin over another log directory: ``make_plugin(logdir)``."""
    from tensorboard.plugins import base_plugin

    from lightning_insight.tensorboard_plugin.plugin import InsightBoardPlugin

    def make(logdir: Path) -> Any:
        _, ingester = _load(logdir)
        return InsightBoardPlugin(base_plugin.TBContext(data_provider=ingester.data_provider))

    return make


@pytest.fixture
def plugin(tensorboard_backend: Any) -> Any:
    from tensorboard.plugins import base_plugin

    from lightning_insight.tensorboard_plugin.plugin import InsightBoardPlugin

    _, ingester = tensorboard_backend
    return InsightBoardPlugin(base_plugin.TBContext(data_provider=ingester.data_provider))


@pytest.fixture(scope="session")
def client(tensorboard_backend: Any) -> Any:
    """A werkzeug client on TensorBoard's real WSGI app with the InsightBoard loader."""
    from tensorboard.backend import application
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    from lightning_insight.tensorboard_plugin import InsightBoardLoader

    flags, ingester = tensorboard_backend
    app = application.TensorBoardWSGIApp(
        flags,
        [InsightBoardLoader()],
        data_provider=ingester.data_provider,
        deprecated_multiplexer=ingester.deprecated_multiplexer,
    )
    return Client(app, Response)
