"""Validation-epoch cost of FairnessMonitor on the quickstart model.

Runs ``trainer.validate()`` on ``SceneClassifier`` + ``ScenesDataModule`` (validation split only)
repeatedly, alternating a Trainer without callbacks and one with
``FairnessMonitor(task="binary", slices=["weather", "timeofday", "scene", "weather&timeofday"],
sinks=[MemorySink()])``, and reports the median time of the validation epoch (from
``on_validation_epoch_start`` to the end of ``on_validation_epoch_end``, every other callback included)
and of the whole ``validate()`` call, with the overhead in percent.

A third Trainer runs an instrumented monitor to split the callback's own cost into the per-batch hook
(``read_batch`` + ``SlicedConfusion.update``) and the epoch-end work (``compute``, report, sinks).

Run ``python benchmarks/callback_overhead.py`` (about a minute) or ``--quick``.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

import lightning_insight
from lightning_insight import FairnessMonitor, MemorySink
from lightning_insight.datasets import SceneClassifier, ScenesDataModule

SLICES = ["weather", "timeofday", "scene", "weather&timeofday"]


class EpochStart(Callback):
    """First in the callback list: stamps the start of the validation epoch."""

    def __init__(self) -> None:
        self.start = 0.0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()


class EpochEnd(Callback):
    """Last in the callback list: stamps the end of the validation epoch."""

    def __init__(self, start: EpochStart) -> None:
        self.start = start
        self.seconds: list[float] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.start.start)


class TimedFairnessMonitor(FairnessMonitor):
    """FairnessMonitor that records the time of its own per-batch and epoch-end hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_seconds: list[float] = []
        self.end_seconds: list[float] = []

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        super().on_validation_batch_end(*args, **kwargs)
        self.batch_seconds.append(time.perf_counter() - start)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        super().on_validation_epoch_end(trainer, pl_module)
        self.end_seconds.append(time.perf_counter() - start)


def monitor(cls: type[FairnessMonitor] = FairnessMonitor) -> FairnessMonitor:
    return cls(task="binary", slices=SLICES, sinks=[MemorySink()])


def trainer(callbacks: list[Callback]) -> tuple[pl.Trainer, EpochEnd]:
    start = EpochStart()
    end = EpochEnd(start)
    built = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[start, *callbacks, end],
    )
    return built, end


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 images, 3 repeats (a smoke run)")
    parser.add_argument("--num-val", type=int, default=5000, help="validation images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15, help="validate() calls per variant")
    args = parser.parse_args(argv)
    num_val, repeats = (500, 3) if args.quick else (args.num_val, args.repeats)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    datamodule = ScenesDataModule(num_val=num_val, batch_size=args.batch_size)
    datamodule.setup("validate")
    model = SceneClassifier().eval()
    batches = -(-num_val // args.batch_size)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, pytorch-lightning {pl.__version__}, "
        f"lightning_insight {lightning_insight.__version__}; 1 thread; {num_val} validation images in "
        f"{batches} batches of {args.batch_size}; {repeats} interleaved repeats, medians\n"
    )

    plain, plain_end = trainer([])
    watched, watched_end = trainer([monitor()])
    timed_monitor = monitor(TimedFairnessMonitor)
    assert isinstance(timed_monitor, TimedFairnessMonitor)
    timed, _ = trainer([timed_monitor])
    calls: dict[str, list[float]] = {"without": [], "with": []}
    for variant in (plain, watched, timed):  # warm-up: imports, allocator, first-batch checks
        variant.validate(model, datamodule=datamodule, verbose=False)
    del plain_end.seconds[:], watched_end.seconds[:]
    for _ in range(repeats):
        for name, variant in (("without", plain), ("with", watched)):
            start = time.perf_counter()
            variant.validate(model, datamodule=datamodule, verbose=False)
            calls[name].append(time.perf_counter() - start)
        timed.validate(model, datamodule=datamodule, verbose=False)

    epoch_without = statistics.median(plain_end.seconds) * 1e3
    epoch_with = statistics.median(watched_end.seconds) * 1e3
    call_without = statistics.median(calls["without"]) * 1e3
    call_with = statistics.median(calls["with"]) * 1e3
    # Runs next to each other share the machine's state: the median of the paired differences is
    # steadier than the difference of the medians on a noisy machine.
    epoch_paired = (
        statistics.median(
            w - o for w, o in zip(watched_end.seconds, plain_end.seconds, strict=True)
        )
        * 1e3
    )
    call_paired = (
        statistics.median(w - o for w, o in zip(calls["with"], calls["without"], strict=True)) * 1e3
    )
    print(
        "| measured | without callback ms | with FairnessMonitor ms | overhead (medians) "
        "| overhead (median of paired differences) |"
    )
    print("|---|---:|---:|---:|---:|")
    print(
        f"| validation epoch | {epoch_without:.1f} | {epoch_with:.1f} | "
        f"{100 * (epoch_with - epoch_without) / epoch_without:+.2f}% | "
        f"{epoch_paired:+.1f} ms ({100 * epoch_paired / epoch_without:+.2f}%) |"
    )
    print(
        f"| whole `validate()` call | {call_without:.1f} | {call_with:.1f} | "
        f"{100 * (call_with - call_without) / call_without:+.2f}% | "
        f"{call_paired:+.1f} ms ({100 * call_paired / call_without:+.2f}%) |"
    )

    per_batch = statistics.median(timed_monitor.batch_seconds) * 1e6
    epoch_end = statistics.median(timed_monitor.end_seconds) * 1e3
    own = per_batch * batches / 1e3 + epoch_end
    print("\n| callback's own work (instrumented run) | median |")
    print("|---|---:|")
    print(f"| per batch: `read_batch` + `SlicedConfusion.update` | {per_batch:.0f} us |")
    print(
        f"| per batch, as a share of the epoch without callback | {100 * per_batch * batches / 1e3 / epoch_without:.2f}% |"
    )
    print(f"| epoch end: `compute` + report + alerts + sinks | {epoch_end:.2f} ms |")
    print(
        f"| total per epoch ({batches} batches + epoch end) | {own:.1f} ms ({100 * own / epoch_without:.2f}%) |"
    )


if __name__ == "__main__":
    main()
