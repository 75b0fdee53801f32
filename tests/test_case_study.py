"""The Fashion-MNIST case study (docs/case_study_fashion_mnist.md), shortened: every monitor runs.

``configs/fashion_mnist.yaml`` through the CLI on 800 real training images and 400 validation images
for 2 epochs, every monitor scheduled every epoch (the comparison against the epoch-0 copy, so it
runs at epoch 1), then the reports read back from the logs. Needs Debian's ``dataset-fashion-mnist``
(CI installs it in ``scripts/test.sh``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_insight.cli import main
from lightning_insight.datasets.fashion_mnist import DEFAULT_ROOT

CONFIG = Path(__file__).parents[1] / "configs" / "fashion_mnist.yaml"
SHORT = [
    "--trainer.max_epochs=2",
    "--trainer.enable_progress_bar=false",
    "--data.num_train=800",
    "--data.num_val=400",
    "--data.num_test=100",
    "--data.batch_size=32",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(DEFAULT_ROOT, "train-images-idx3-ubyte.gz").is_file(),
        reason=f"needs Debian's dataset-fashion-mnist in {DEFAULT_ROOT} (apt-get install "
        "dataset-fashion-mnist; scripts/test.sh installs it in CI as root)",
    ),
]


def every_epoch(tmp_path: Path) -> Path:
    """The config's own monitors, each scheduled every epoch, the comparison against epoch 0.

    A later ``--config`` replaces the callback list (FIELD_NOTES), so it repeats the whole list.
    """
    callbacks = yaml.safe_load(CONFIG.read_text())["trainer"]["callbacks"]
    for callback in callbacks:
        options = callback["init_args"]
        if "every_n_epochs" in options:
            options["every_n_epochs"] = 1
        if callback["class_path"].endswith("AttributionComparisonMonitor"):
            options["reference"] = "epoch:0"
    path = tmp_path / "every_epoch.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def json_reports(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Every JSON report the sinks wrote to the event file, by tag, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    out: dict[str, list[dict[str, Any]]] = {}
    for tag in accumulator.Tags()["tensors"]:
        events = accumulator.Tensors(tag)
        values = [e.tensor_proto.string_val[0] for e in events if e.tensor_proto.string_val]
        if values and values[0][:1] == b"{":
            out[tag] = [json.loads(v) for v in values]
    return out


def test_shortened_case_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIG), "--config", str(every_epoch(tmp_path)), *SHORT])
    out = capsys.readouterr().out
    assert "[val epoch 1] accuracy" in out
    assert "[val epoch 1] discovered " in out and " slices over 400 probe images" in out
    assert "[val epoch 1] attribution comparison with epoch:0 (epoch 0): " in out
    assert "[val epoch 1] " in out and " failure modes over 400 samples (" in out

    (folder,) = tmp_path.glob("lightning_logs/version_*")
    with (folder / "insight" / "slices.csv").open() as f:
        rows = list(csv.DictReader(f))
    dimensions = {row["dimension"] for row in rows}
    assert {"overall", "brightness", "ink", "aspect", "ink&aspect", "discovered"} <= dimensions

    reports = json_reports(folder)
    fairness = reports["insight/report"][-1]
    assert fairness["epoch"] == 1 and fairness["overall"]["count"] == 400
    for dimension, bins in (
        ("brightness", ("dark", "medium", "bright")),
        ("ink", ("low", "medium", "high")),
        ("aspect", ("tall", "square", "wide")),
    ):
        names = {f"{dimension}={value}" for value in bins}
        assert names <= set(fairness["slices"]), (dimension, sorted(fairness["slices"]))
        assert sum(fairness["slices"][n]["count"] for n in names) == 400
        assert not math.isnan(fairness["indicators"][dimension]["accuracy_difference"])
    assert any("&aspect=" in name for name in fairness["slices"])
    overall = fairness["overall"]["accuracy"]
    assert 0.1 < overall <= 1.0
    # bootstrap intervals around the point values
    assert fairness["overall"]["accuracy_low"] <= overall <= fairness["overall"]["accuracy_high"]

    discovery = reports["insight/discovery/report"][-1]
    assert discovery["num_samples"] == 400
    overall_error = discovery["overall_error_rate"]
    assert 0.0 < overall_error < 0.9
    # non-trivial: the worst discovered slice fails more often than the probe set as a whole
    assert max(s["error_rate"] for s in discovery["slices"]) > overall_error
    assert sum(s["size"] for s in discovery["slices"]) == 400

    (comparison,) = reports["insight/comparison/report"]
    assert comparison["epoch"] == 1 and comparison["reference"] == "epoch:0"
    assert comparison["clusters"]

    failure = reports["insight/failure_modes/report"][-1]
    assert failure["epoch"] == 1 and failure["num_samples"] == 400
    assert failure["modes"], "expected at least one failure mode on a model this weak"
    assert all(0.0 <= mode["error_rate"] <= 1.0 for mode in failure["modes"])
