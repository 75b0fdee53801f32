from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from lightning_insight.cli import main

CONFIG = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
SMALL = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
    "--data.num_train=64",
    "--data.num_val=96",
    "--data.num_test=64",
    "--data.batch_size=32",
]


@pytest.mark.slow
def test_fit_twice_in_the_same_folder_prints_summary_and_writes_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        main(["fit", "--config", str(CONFIG), *SMALL, "--trainer.max_epochs=2"])
    out = capsys.readouterr().out
    assert out.count("[val epoch 0] accuracy") == 2
    # AttributionComparisonMonitor (every 2nd epoch) compares epoch 1's model with epoch 0's copy
    assert out.count("[val epoch 1] attribution comparison with epoch:0 (epoch 0): ") == 2
    assert "over 96 probe images" in out and "  cluster 0: " in out
    # FailureModeMonitor (every 2nd epoch) with a robust extractor trained on the training images
    assert out.count("[val epoch 1] ") >= 2 and " failure modes over 96 samples (" in out
    assert "worst slice: " in out and "largest gaps: " in out and "alerts: " in out
    for version in ("version_0", "version_1"):
        folder = tmp_path / "lightning_logs" / version
        assert list(folder.glob("events.out.tfevents.*"))
        with (folder / "insight" / "slices.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert {r["dimension"] for r in rows} >= {"weather", "weather&timeofday", "overall"}
        assert (folder / "config.yaml").exists()


@pytest.mark.slow
def test_console_script_exits_zero_and_validate_subcommand(tmp_path: Path, run_ok: Any) -> None:
    script = shutil.which("lightning-insight", path=str(Path(sys.executable).parent))
    assert script is not None
    proc = run_ok([script, "validate", "--config", str(CONFIG), *SMALL], tmp_path)
    assert "[val epoch 0] accuracy" in proc.stdout
    # SliceDiscoveryMonitor runs at every validate(): 96 probe images, the default 8 slices
    assert "[val epoch 0] discovered 8 slices over 96 probe images" in proc.stdout
    (csv_path,) = tmp_path.glob("lightning_logs/version_*/insight/slices.csv")
    with csv_path.open() as f:
        dimensions = {row["dimension"] for row in csv.DictReader(f)}
    assert {"weather", "discovered"} <= dimensions


def test_bad_config_value_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # a later --config replaces the callback list (FIELD_NOTES): only the bad FairnessMonitor is left
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning_insight.FairnessMonitor\n"
        "      init_args: {task: regression, slices: [weather]}\n"
    )
    with pytest.raises(ValueError, match=r"`task` to be one of"):
        main(["fit", "--config", str(CONFIG), "--config", str(bad), *SMALL])
