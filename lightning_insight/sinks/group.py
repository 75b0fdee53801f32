"""Fan results out to several sinks, on global rank 0 only, surviving a sink's failure."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_insight.sinks.base import Sink
from lightning_insight.sinks.csv import CSVSink, check_rows
from lightning_insight.sinks.memory import MemorySink
from lightning_insight.sinks.tensorboard import TensorBoardSink
from lightning_insight.sinks.wandb import WandbSink

if TYPE_CHECKING:
    import pytorch_lightning as pl

log = logging.getLogger(__name__)

#: The sink names :func:`sinks_for_trainer` resolves.
SINK_NAMES: tuple[str, ...] = ("csv", "memory", "tensorboard", "wandb")

#: Where the default CSV goes, relative to the trainer's log directory.
CSV_RELATIVE_PATH = Path("insight") / "slices.csv"


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"Expected argument `image` to be a numpy.ndarray, but got {type(image).__name__}."
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            "Expected argument `image` to be a uint8 array of shape (H, W, 3), but got"
            f" {image.dtype} of shape {tuple(image.shape)}."
        )


class SinkGroup:
    """Forward every call to several sinks, on global rank 0 only; a failing sink is disabled, not fatal.

    A sink that raises in any method is reported once (``rank_zero_warn`` naming the sink, the method and
    the error), disabled for the rest of the run, and the other sinks go on. Arguments are checked here
    first, so a caller's mistake raises instead of disabling every sink.

    Args:
        sinks: The sinks; their names must be distinct.
        is_global_zero: Whether this process is global rank 0; elsewhere every call does nothing.

    Raises:
        TypeError: If an element of ``sinks`` is not a :class:`~lightning_insight.sinks.Sink`.
        ValueError: If two sinks share a name.

    Example:
        >>> from lightning_insight.sinks import MemorySink
        >>> group = SinkGroup([MemorySink()])
        >>> group.scalars({"insight/worst/accuracy": 0.75}, step=10)
        >>> group.flush()
        >>> group.sinks[0].last_scalars(), group.disabled
        ({'insight/worst/accuracy': 0.75}, {})
    """

    name = "group"

    def __init__(self, sinks: Iterable[Sink], *, is_global_zero: bool = True) -> None:
        sinks = list(sinks)
        seen: set[str] = set()
        for index, sink in enumerate(sinks):
            if not isinstance(sink, Sink):
                raise TypeError(
                    "Expected argument `sinks` to hold Sink objects (TensorBoardSink, WandbSink, CSVSink,"
                    f" MemorySink, ...), but got {type(sink).__name__} at index {index}."
                )
            if sink.name in seen:
                raise ValueError(
                    f"Expected argument `sinks` to hold sinks with distinct names, but got {sink.name!r}"
                    " twice. HINT: pass `name=` to one of them."
                )
            seen.add(sink.name)
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self.is_global_zero = bool(is_global_zero)
        self.disabled: dict[str, str] = {}

    @property
    def enabled(self) -> tuple[Sink, ...]:
        """The sinks that have not failed."""
        return tuple(sink for sink in self.sinks if sink.name not in self.disabled)

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> None:
        if not self.is_global_zero:
            return
        for sink in self.enabled:
            try:
                getattr(sink, method)(*args, **kwargs)
            except Exception as error:
                # Imported here so that importing the sinks (e.g. from the TensorBoard plugin) stays light.
                from pytorch_lightning.utilities import rank_zero_warn

                reason = f"{type(error).__name__} in `{method}`: {error}"
                self.disabled[sink.name] = reason
                log.debug("Sink %r failed", sink.name, exc_info=True)
                rank_zero_warn(
                    f"Sink {sink.name!r} ({type(sink).__name__}) raised {type(error).__name__} in"
                    f" `{method}`: {error}. The sink is disabled for the rest of the run; training goes"
                    " on with the other sinks."
                )

    def scalars(self, values: Mapping[str, float], *, step: int) -> None:
        """Forward scalars keyed by their full log key."""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"Expected argument `values` to be a mapping of str to float, but got {type(values).__name__}."
            )
        self._forward("scalars", values, step=step)

    def table(self, key: str, rows: Sequence[Mapping[str, Any]], *, step: int) -> None:
        """Forward long-format rows, each with the keys in ``ROW_FIELDS``."""
        check_rows(rows)
        self._forward("table", key, rows, step=step)

    def image(self, key: str, image: np.ndarray, *, step: int) -> None:
        """Forward an RGB ``uint8`` image of shape ``(H, W, 3)``."""
        _check_image(image)
        self._forward("image", key, image, step=step)

    def text(self, key: str, text: str, *, step: int) -> None:
        """Forward markdown text."""
        self._forward("text", key, text, step=step)

    def json(self, key: str, payload: Mapping[str, Any], *, step: int) -> None:
        """Forward a JSON-safe mapping."""
        self._forward("json", key, payload, step=step)

    def flush(self) -> None:
        """Flush every enabled sink."""
        self._forward("flush")

    def close(self) -> None:
        """Close every sink; a failure in a sink already disabled is only logged."""
        if not self.is_global_zero:
            return
        for sink in self.sinks:
            if sink.name in self.disabled:
                try:
                    sink.close()
                except Exception:
                    log.debug("Closing disabled sink %r failed", sink.name, exc_info=True)
        self._forward("close")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.sinks)!r}, disabled={self.disabled!r})"


def _log_dir(trainer: pl.Trainer) -> str:
    """``trainer.log_dir`` without its broadcast (a collective), so rank 0 may call it alone."""
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    directory: str | None = None
    if trainer.loggers:
        first = trainer.loggers[0]
        directory = (
            first.log_dir if isinstance(first, TensorBoardLogger | CSVLogger) else first.save_dir
        )
    return os.fspath(directory) if directory is not None else os.fspath(trainer.default_root_dir)


class _Names:
    """Hands out sink names, suffixing ``_1``, ``_2``, ... when one is taken."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self.taken = set(taken)

    def __call__(self, base: str) -> str:
        name, index = base, 0
        while name in self.taken:
            index += 1
            name = f"{base}_{index}"
        self.taken.add(name)
        return name


def sinks_for_trainer(
    trainer: pl.Trainer, requested: Sequence[Sink | str] | Sink | str | None = None
) -> list[Sink]:
    """Build the sinks for a trainer: by default one per attached logger plus the CSV file.

    With ``requested=None``: a ``TensorBoardSink`` per ``TensorBoardLogger`` (on its
    ``experiment``), a ``WandbSink`` per ``WandbLogger``, nothing for a ``CSVLogger`` or other
    loggers, and always a ``CSVSink`` at ``<log_dir>/insight/slices.csv``. ``log_dir`` is
    ``trainer.log_dir`` (``trainer.default_root_dir`` without a logger).

    ``requested`` may mix sink objects (used as they are) and names: ``"tensorboard"`` (the first
    ``TensorBoardLogger``'s writer, else event files in ``log_dir``), ``"wandb"`` (the first
    ``WandbLogger``'s run), ``"csv"`` (the default CSV file) and ``"memory"``. Generated names are
    made distinct (``tensorboard``, ``tensorboard_1``, ...).

    Off global rank 0 it returns ``[]`` without touching any logger (``logger.experiment`` is a dummy
    there). It reads no collective, so rank 0 may call it alone.

    Args:
        trainer: The trainer whose loggers and log directory to use.
        requested: ``None`` for the default, or the sinks (objects and names) to build.

    Returns:
        The sinks, in logger order then the CSV (default), or in the order requested.

    Raises:
        ValueError: If a name is unknown, or ``"wandb"`` is asked for with no ``WandbLogger`` attached.
        TypeError: If an element of ``requested`` is neither a sink nor a name.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(logger=False, default_root_dir="runs", enable_progress_bar=False)  # doctest: +SKIP
        >>> sinks_for_trainer(trainer, ["memory", "csv"])  # doctest: +SKIP
        [MemorySink(name='memory'), CSVSink('runs/insight/slices.csv', name='csv')]
    """
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    if not trainer.is_global_zero:
        return []
    log_dir = _log_dir(trainer)
    csv_path = os.path.join(log_dir, CSV_RELATIVE_PATH)
    loggers = list(trainer.loggers)

    if requested is None:
        names = _Names()
        sinks: list[Sink] = []
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                sinks.append(TensorBoardSink(logger.experiment, name=names("tensorboard")))
            elif isinstance(logger, WandbLogger):
                sinks.append(WandbSink(logger.experiment, name=names("wandb")))
            else:
                log.debug(
                    "No sink for logger %s; results go to the CSV file", type(logger).__name__
                )
        sinks.append(CSVSink(csv_path, name=names("csv")))
        return sinks

    if isinstance(requested, str | Sink):
        requested = [requested]
    names = _Names(item.name for item in requested if isinstance(item, Sink))
    sinks = []
    for index, item in enumerate(requested):
        if isinstance(item, Sink):
            sinks.append(item)
        elif not isinstance(item, str):
            raise TypeError(
                f"Expected argument `sinks` to hold Sink objects or names from {list(SINK_NAMES)}, but got"
                f" {type(item).__name__} at index {index}."
            )
        elif item == "tensorboard":
            tb_logger = next((lg for lg in loggers if isinstance(lg, TensorBoardLogger)), None)
            target = log_dir if tb_logger is None else tb_logger.experiment
            sinks.append(TensorBoardSink(target, name=names("tensorboard")))
        elif item == "wandb":
            wandb_logger = next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)
            if wandb_logger is None:
                attached = [type(lg).__name__ for lg in loggers]
                raise ValueError(
                    "Expected argument `sinks` to name only loggers attached to the Trainer, but got"
                    f" 'wandb' while the Trainer's loggers are {attached}. HINT: pass"
                    " `Trainer(logger=WandbLogger(...))`, or a `WandbSink(...)` object instead of 'wandb'."
                )
            sinks.append(WandbSink(wandb_logger.experiment, name=names("wandb")))
        elif item == "csv":
            sinks.append(CSVSink(csv_path, name=names("csv")))
        elif item == "memory":
            sinks.append(MemorySink(name=names("memory")))
        else:
            raise ValueError(
                f"Expected argument `sinks` to hold Sink objects or names from {list(SINK_NAMES)}, but got"
                f" {item!r}."
            )
    return sinks
