"""SliceDiscoveryMonitor inside real Trainer runs (CPU, tiny synthetic scenes)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightning_insight import MemorySink
from lightning_insight.datasets import SceneClassifier, ScenesDataModule
from lightning_insight.discovery.callback import DiscoveryAlertWarning, SliceDiscoveryMonitor
from tests.trainers import cpu_trainer

SCRIPT = Path(__file__).with_name("ddp_discovery.py")


def _data() -> ScenesDataModule:
    return ScenesDataModule(num_train=256, num_val=300, num_test=64, batch_size=50)


def _model() -> SceneClassifier:
    torch.manual_seed(0)
    return SceneClassifier(channels=(4, 8))


def _monitor(**kwargs: Any) -> SliceDiscoveryMonitor:
    options: dict[str, Any] = {"max_samples": 200, "num_slices": 8, "sinks": [MemorySink()]}
    return SliceDiscoveryMonitor("backbone.1", **{**options, **kwargs})


def test_fit_runs_on_schedule_and_emits_report_table_and_mosaics(tmp_path: Path) -> None:
    monitor = _monitor(every_n_epochs=2, mosaics=2)
    sink = monitor.requested_sinks[0]  # type: ignore[index]
    trainer = cpu_trainer(tmp_path, [monitor], max_epochs=4)
    trainer.fit(_model(), _data())
    # epochs 1 and 3 only; the sanity check never runs discovery
    assert [r.epoch for r in monitor.history] == [1, 3]
    report = monitor.history[-1]
    assert report.num_samples == 200 and len(report.slices) == 8
    assert sum(s.size for s in report.slices) == 200
    scores = [s.score for s in report.slices]
    assert scores == sorted(scores, reverse=True)  # ranked worst first
    keys = sink.scalar_keys()
    worst = report.slices[0]
    assert f"insight/discovery/slice_{worst.slice_id}/error_rate" in keys
    assert {"insight/discovery/worst/error_rate", "insight/discovery/alert"} <= keys
    # "worst" is the top-ranked slice (error weighed against support), not the highest error rate
    assert sink.last_scalars()["insight/discovery/worst/error_rate"] == worst.error_rate
    mosaics = [(step, key) for step, key, _ in sink.images if step == report.step]
    assert [key for _, key in mosaics] == [
        f"insight/discovery/mosaic/slice_{s.slice_id}" for s in report.slices[:2]
    ]
    image = sink.images[-1][2]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert {row["dimension"] for _, key, rows in sink.tables for row in rows} == {"discovered"}
    assert "insight/discovery/worst/error_rate" in trainer.callback_metrics
    # slices keep their ids from one run to the next: most members of epoch 3's slices sat in one
    # slice of the same id at epoch 1
    first = {s.slice_id: set(s.sample_ids) for s in monitor.history[0].slices}
    kept = [len(first.get(s.slice_id, set()) & set(s.sample_ids)) / s.size for s in report.slices]
    assert np.median(kept) > 0.5


def test_validate_under_inference_mode_and_a_resume(tmp_path: Path) -> None:
    monitor = _monitor()
    cpu_trainer(tmp_path, [monitor]).validate(_model(), _data())
    assert [r.source for r in monitor.history] == ["val"]
    path = tmp_path / "state.pt"
    torch.save(monitor.state_dict(), path)
    fresh = _monitor()
    fresh.load_state_dict(torch.load(path, weights_only=True))  # what Lightning's resume does
    assert fresh.history == monitor.history
    cpu_trainer(tmp_path, [fresh]).validate(_model(), _data())
    # same model, same probe set: every slice is found again under its old id
    before = {s.slice_id: set(s.sample_ids) for s in monitor.history[-1].slices}
    after = {s.slice_id: set(s.sample_ids) for s in fresh.history[-1].slices}
    assert before == after
    assert all(s.first_seen_epoch == 0 for s in fresh.history[-1].slices)


def test_pickle_and_two_monitors_side_by_side(tmp_path: Path) -> None:
    one, two = (
        _monitor(),
        SliceDiscoveryMonitor("backbone.0", max_samples=100, num_slices=8, sinks=["memory"]),
    )
    assert one.state_key != two.state_key
    cpu_trainer(tmp_path, [one, two]).validate(_model(), _data())
    assert one.history[-1].layer == "backbone.1" and two.history[-1].layer == "backbone.0"
    assert two.history[-1].num_samples == 100
    clone = pickle.loads(pickle.dumps(one))
    assert clone.history == one.history and clone.sinks is None


def test_a_large_bad_slice_alerts(tmp_path: Path) -> None:
    seen: list[Any] = []
    monitor = _monitor(alert_min_size=5, alert_lift=1.01, on_alert=seen.append)
    cpu_trainer(tmp_path, [monitor]).validate(_model(), _data())
    report = monitor.history[-1]
    expected = [
        s.slice_id
        for s in report.slices
        if s.size >= 5 and s.error_rate >= 1.01 * report.overall_error_rate
    ]
    assert expected and [s.slice_id for s in seen] == expected
    assert [a["slice_id"] for a in monitor.alerts] == expected
    with pytest.warns(
        DiscoveryAlertWarning, match=r"discovered slice \d+: \d+ samples with error rate"
    ):
        cpu_trainer(tmp_path, [_monitor(alert_min_size=5, alert_lift=1.01)]).validate(
            _model(), _data()
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every_n_epochs": 0}, ValueError, r"`every_n_epochs` to be an int >= 1, but got 0"),
        ({"alert_lift": -1}, ValueError, r"`alert_lift` to be a number > 0, but got -1"),
        (
            {"on_alert": "stop"},
            ValueError,
            r"`on_alert` to be 'warn' or a callable, but got 'stop'",
        ),
        ({"adapter": 3}, TypeError, r"`adapter` to be a callable"),
        ({"prefix": "a/"}, ValueError, r"`prefix` to be a non-empty string"),
        ({"max_samples": 4, "num_slices": 8}, ValueError, r"max_samples"),
    ],
)
def test_arguments_are_checked_in_init(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    options: dict[str, Any] = {"max_samples": 200, **kwargs}
    with pytest.raises(error, match=match):
        SliceDiscoveryMonitor("backbone.1", **options)


def test_an_unknown_layer_fails_at_the_first_batch_with_close_matches(tmp_path: Path) -> None:
    monitor = SliceDiscoveryMonitor("backbone.11", max_samples=100, num_slices=8, sinks=["memory"])
    with pytest.raises(ValueError, match=r"backbone\.1"):
        cpu_trainer(tmp_path, [monitor]).validate(_model(), _data())


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path: Path, run_ok: Any) -> None:
    results = []
    for devices in (1, 2):
        out = tmp_path / f"discovery_{devices}.json"
        run_ok([sys.executable, str(SCRIPT), str(out), str(devices)], tmp_path)
        results.append(json.loads(out.read_text()))
    single, ddp = results
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    one, two = single["report"], ddp["report"]
    assert one["num_samples"] == two["num_samples"] == 200
    assert one["slices"] == two["slices"]
