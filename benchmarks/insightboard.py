"""InsightBoard route latency on a large log directory.

The log directory: 3 runs x 100 epochs; each epoch a FairnessMonitor-shaped report with 200 slices
x 10 metrics (two dimensions: ``group`` with 150 values, ``shift`` with 50) and 10 indicators per
dimension, written with the real ``TensorBoardSink`` (the JSON report through ``TensorBoardSink.json``
and every ``insight/slice/...``, ``insight/gap/...`` and ``insight/overall/...`` scalar through
``TensorBoardSink.scalars``, as the monitor does), plus Lightning-style ``epoch``, ``train_loss`` and
``lr`` scalars logged 4 times per epoch. That is ~2,050 scalar tags and ~205,000 scalar events per run.

TensorBoard's ``LocalDataIngester`` (what ``tensorboard --load_fast=false`` and ``lightning-insight
board`` use) loads the directory once; then the main page's data (``runs`` + ``scalars`` + ``slices``
+ ``slice_table`` + ``fairness`` for one run) is fetched through TensorBoard's real WSGI app with
werkzeug's test client: by a plugin that does no background reading (its first requests read and
parse everything), and by the plugin as installed (it reads new data in the background as TensorBoard
loads it): its first request after that read, and the median of 5; plus the other routes. Target: the main page under 1 s after TensorBoard has loaded the files.

Run ``python benchmarks/insightboard.py`` (about a minute, most of it writing the logs) or
``--quick`` (20 epochs).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lightning_insight.sinks import TensorBoardSink

METRICS = ("accuracy", "tpr", "fpr", "tnr", "fnr", "ppv", "npv", "f1", "selection_rate", "count")
INDICATORS = (
    "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
    "equalized_odds_ratio", "equal_opportunity_difference", "equal_opportunity_ratio",
    "predictive_parity_difference", "accuracy_difference", "accuracy_ratio", "worst_accuracy",
)  # fmt: skip
DIMENSIONS = {"group": 150, "shift": 50}
STEPS_PER_EPOCH = 40


def write_run(path: Path, epochs: int, seed: int) -> None:
    """One run, written with TensorBoardSink the way FairnessMonitor and Lightning write it."""
    rng = np.random.default_rng(seed)
    sink = TensorBoardSink(path)
    names = {d: [f"{d}=v{i}" for i in range(n)] for d, n in DIMENSIONS.items()}
    for epoch in range(epochs):
        for k in range(4):
            step = epoch * STEPS_PER_EPOCH + (k + 1) * STEPS_PER_EPOCH // 4 - 1
            sink.scalars(
                {"epoch": epoch, "train_loss": rng.random(), "lr": 0.1 / (epoch + 1)}, step=step
            )
        step = (epoch + 1) * STEPS_PER_EPOCH
        slices = {}
        for dimension in names.values():
            for name in dimension:
                values = {m: float(rng.random()) for m in METRICS}
                values["count"] = float(rng.integers(5, 500))
                slices[name] = values
        overall = {m: float(rng.random()) for m in METRICS}
        indicators = {d: {i: float(rng.random()) for i in INDICATORS} for d in names}
        excluded = {n: f"count {int(v['count'])} < min_support 30"
                    for n, v in slices.items() if v["count"] < 30}  # fmt: skip
        payload = {
            "schema_version": 1, "kind": "slice_report", "task": "binary", "epoch": epoch,
            "step": step, "source": "val", "overall": overall, "slices": slices,
            "dimensions": names, "indicators": indicators, "excluded": excluded, "reference": {},
            "alerts": [], "rules": [{"rule": "accuracy_difference > 0.1", "dimension": None,
                                     "name": "accuracy_difference", "op": ">", "threshold": 0.1}],
        }  # fmt: skip
        scalars = {f"insight/overall/{m}": v for m, v in overall.items()}
        for name, values in slices.items():
            dimension, value = name.split("=")
            for metric, number in values.items():
                scalars[f"insight/slice/{dimension}/{value}/{metric}"] = number
        for dimension, values in indicators.items():
            for indicator, number in values.items():
                scalars[f"insight/gap/{dimension}/{indicator}"] = number
        sink.scalars(scalars, step=step)
        sink.json("insight/report", payload, step=step)
    sink.close()


def timed_get(client: Any, url: str) -> tuple[float, int]:
    start = time.perf_counter()
    response = client.get(url)
    seconds = time.perf_counter() - start
    assert response.status_code == 200, (url, response.data[:200])
    return seconds, len(response.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 epochs instead of 100")
    args = parser.parse_args()
    epochs = 20 if args.quick else 100

    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_ingester
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    from lightning_insight.tensorboard_plugin import WARM_INTERVAL, InsightBoardLoader
    from lightning_insight.tensorboard_plugin.plugin import InsightBoardPlugin

    print(f"python {sys.version.split()[0]}, {platform.machine()}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        start = time.perf_counter()
        for i in range(3):
            write_run(logdir / f"run_{i}", epochs, seed=i)
        write_seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in logdir.rglob("*") if f.is_file())

        flags = argparse.Namespace(
            logdir=str(logdir), logdir_spec="", samples_per_plugin={}, purge_orphaned_data=True,
            max_reload_threads=1, reload_multifile=None, reload_multifile_inactive_secs=86400,
            detect_file_replacement=False, reload_interval=0, reload_task="blocking",
            path_prefix="", window_title="", generic_data="true",
        )  # fmt: skip
        InsightBoardLoader().fix_flags(flags)
        start = time.perf_counter()
        ingester = data_ingester.LocalDataIngester(flags)
        ingester.start()
        load_seconds = time.perf_counter() - start
        base = "/data/plugin/lightning_insight/"
        run, last = "run_1", epochs - 1
        page = {
            "runs": f"{base}runs",
            "scalars": f"{base}scalars?run={run}",
            "slices": f"{base}slices?run={run}&dimension=group&metric=accuracy",
            "slice_table": f"{base}slice_table?run={run}&epoch={last}",
            "fairness": f"{base}fairness?run={run}",
        }
        series = "train_loss,lr,insight/overall/accuracy,insight/gap/group/accuracy_difference"
        others = {
            "correlation (4 series, lag 1)": f"{base}correlation?run={run}&series={series}&lag=1",
            "scatter": f"{base}scatter?run={run}&x=lr&y=train_loss",
            "report (fairness)": f"{base}report?run={run}&kind=fairness&epoch={last}",
        }

        def client_for(plugin: InsightBoardPlugin) -> Any:
            class Loader(base_plugin.TBLoader):  # type: ignore[misc]
                def load(self, context: Any) -> InsightBoardPlugin:
                    return plugin

            app = application.TensorBoardWSGIApp(
                flags, [Loader()], data_provider=ingester.data_provider,
                deprecated_multiplexer=ingester.deprecated_multiplexer,
            )  # fmt: skip
            return Client(app, Response)

        context = base_plugin.TBContext(data_provider=ingester.data_provider)
        # 1. No background reading: the first request of each route reads everything itself.
        client = client_for(InsightBoardPlugin(context))
        cold = {name: timed_get(client, url) for name, url in page.items()}
        # 2. As installed: the plugin reads new data in the background, as TensorBoard loads it.
        start = time.perf_counter()
        warmed = InsightBoardPlugin(context, warm_interval=WARM_INTERVAL)
        runs = [f"run_{i}" for i in range(3)]
        while not all(("scalars", "", r) in warmed._cache for r in runs):
            time.sleep(0.05)
        warm_up_seconds = time.perf_counter() - start
        client = client_for(warmed)
        first = {name: timed_get(client, url) for name, url in page.items()}
        repeated: dict[str, list[float]] = {name: [] for name in page}
        totals = []
        for _ in range(5):
            total = 0.0
            for name, url in page.items():
                seconds, _ = timed_get(client, url)
                repeated[name].append(seconds)
                total += seconds
            totals.append(total)
        other = {name: timed_get(client, url) for name, url in others.items()}
        scalars = json.loads(client.get(page["scalars"]).data)

    print(f"log directory: 3 runs x {epochs} epochs x 200 slices x 10 metrics, "
          f"{size / 1e6:.0f} MB; {len(scalars['series'])} scalar tags per run")  # fmt: skip
    print(f"writing with TensorBoardSink: {write_seconds:.1f} s; TensorBoard load: {load_seconds:.1f} s;"
          f" InsightBoard background read of the 3 runs: {warm_up_seconds:.1f} s")  # fmt: skip
    print()
    print("| route | no background read: first request (ms) | installed: first request (ms) "
          "| installed: median of 5 (ms) | response (kB) |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in page:
        print(f"| {name} | {cold[name][0] * 1000:.0f} | {first[name][0] * 1000:.0f} "
              f"| {statistics.median(repeated[name]) * 1000:.0f} | {first[name][1] / 1000:.0f} |")  # fmt: skip
    print(f"| **main page (sum)** | **{sum(c[0] for c in cold.values()) * 1000:.0f}** "
          f"| **{sum(f[0] for f in first.values()) * 1000:.0f}** "
          f"| **{statistics.median(totals) * 1000:.0f}** | |")  # fmt: skip
    for name, (seconds, length) in other.items():
        print(f"| {name} | | {seconds * 1000:.0f} | | {length / 1000:.0f} |")


if __name__ == "__main__":
    main()
