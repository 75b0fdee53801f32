"""Timing helpers the benchmarks share: medians of repeated calls, and a callback's own hook time."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: The validation hooks a monitor's work happens in.
VALIDATION_HOOKS = (
    "on_validation_epoch_start",
    "on_validation_batch_end",
    "on_validation_epoch_end",
)


def median_ms(fn: Callable[[], Any], repeats: int, *, warm_up: bool = True) -> float:
    """Median wall time of ``fn()`` in milliseconds, after one warm-up call unless told not to."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def timed(cls: type[T], seconds: list[float]) -> type[T]:
    """A subclass of the callback ``cls`` that adds its validation hooks' wall time to ``seconds[0]``."""

    def wrap(name: str) -> Callable[..., None]:
        def hook(self: Any, *args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            getattr(cls, name)(self, *args, **kwargs)
            seconds[0] += time.perf_counter() - start

        return hook

    return type(f"Timed{cls.__name__}", (cls,), {name: wrap(name) for name in VALIDATION_HOOKS})


def quickstart_share(monitor: Callable[..., Any], quick: bool) -> dict[str, float]:
    """Seconds of the quickstart's fit without and with one more monitor, and that monitor's hooks.

    The fit: 3000 train / 1500 val scenes (``quick``: 600 / 300), 6 epochs, FairnessMonitor on.
    ``monitor(hook_seconds, num_val)`` builds the monitor, a :func:`timed` class that adds its hook
    time to ``hook_seconds[0]``.
    """
    import torch
    from pytorch_lightning import Trainer

    from lightning_insight import FairnessMonitor, MemorySink
    from lightning_insight.datasets import SceneClassifier, ScenesDataModule

    sizes = {"num_train": 600, "num_val": 300} if quick else {"num_train": 3000, "num_val": 1500}
    hook_seconds = [0.0]

    def run(with_monitor: bool) -> float:
        torch.manual_seed(0)
        callbacks: list[Any] = [
            FairnessMonitor("binary", ["weather", "timeofday"], sinks=[MemorySink()])
        ]
        if with_monitor:
            callbacks.append(monitor(hook_seconds, sizes["num_val"]))
        trainer = Trainer(
            max_epochs=6,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        data = ScenesDataModule(**sizes, num_test=100, batch_size=64)
        start = time.perf_counter()
        trainer.fit(SceneClassifier(), data)
        return time.perf_counter() - start

    without = run(False)
    hook_seconds[0] = 0.0
    with_it = run(True)
    return {"without": without, "with": with_it, "hooks": hook_seconds[0]}
