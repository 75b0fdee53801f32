"""A sink that writes to Weights & Biases, one history row per emission."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_insight.sinks._tb_summary import encode_json, json_safe
from lightning_insight.sinks.base import ROW_FIELDS

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

log = logging.getLogger(__name__)

#: The x-axis key Lightning's ``WandbLogger`` logs with every row; this sink does the same.
STEP_KEY = "trainer/global_step"


def import_wandb() -> ModuleType:
    """Import ``wandb``, or say how to install it.

    Returns:
        The ``wandb`` module.

    Raises:
        ModuleNotFoundError: If ``wandb`` is not installed.
    """
    try:
        import wandb
    except ImportError as error:
        raise ModuleNotFoundError(
            "`WandbSink` needs the `wandb` package, which is not installed."
            " HINT: pip install wandb (or pip install 'lightning-insight[wandb]')."
        ) from error
    return wandb


class WandbSink:
    """Write results to a W&B run, batching every call of one emission into a single ``run.log``.

    W&B writes one history row per ``log`` call, so the sink buffers ``scalars``, ``table``,
    ``image``, ``text`` and ``json`` and sends them in :meth:`flush` as one payload that also holds
    ``"trainer/global_step": step`` (the x-axis Lightning's ``WandbLogger`` defines). Values are
    logged as:

    - scalars: floats (NaN kept);
    - tables: ``wandb.Table(columns=list(ROW_FIELDS), data=...)``, NaN and infinities as ``None``;
    - images: ``wandb.Image``;
    - text: a one-cell ``wandb.Table`` with column ``text`` (the exact markdown, like
      ``WandbLogger.log_text``);
    - json: a one-cell ``wandb.Table`` with column ``json`` holding strict JSON (NaN as ``null``).

    A key sent twice before one flush keeps its last value. Calls for different steps before one flush
    (not what callbacks do) are sent as one ``log`` call per step, in order.

    Args:
        run: A W&B run (what ``WandbLogger.experiment`` is). When ``None``, the sink uses the active
            ``wandb.run`` or, if there is none, calls ``wandb.init(dir=save_dir, project=project,
            mode=os.environ.get("WANDB_MODE"))`` at the first flush that has something to send, and
            defines ``trainer/global_step`` as the x-axis.
        name: The sink's name in warnings and in ``SinkGroup.disabled``.
        save_dir: Directory for the run the sink creates itself.
        project: Project of the run the sink creates itself.

    Raises:
        ModuleNotFoundError: If ``wandb`` is not installed.

    Example:
        >>> from pytorch_lightning.loggers import WandbLogger
        >>> sink = WandbSink(WandbLogger(project="demo", save_dir="logs").experiment)  # doctest: +SKIP
    """

    def __init__(
        self,
        run: Run | None = None,
        *,
        name: str = "wandb",
        save_dir: str | os.PathLike[str] | None = None,
        project: str | None = None,
    ) -> None:
        self._wandb = import_wandb()
        self.name = name
        self.save_dir = None if save_dir is None else os.fspath(save_dir)
        self.project = project
        self._run: Any = run
        self._owns_run = False
        self._pending: dict[int, dict[str, Any]] = {}

    @property
    def run(self) -> Run:
        """The W&B run, started on first access when the sink was given none."""
        if self._run is None:
            wandb = self._wandb
            if wandb.run is not None:
                self._run = wandb.run
            else:
                self._run = wandb.init(
                    dir=self.save_dir, project=self.project, mode=os.environ.get("WANDB_MODE")
                )
                self._owns_run = True
                self._run.define_metric(STEP_KEY)
                self._run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
                log.debug("WandbSink %r started W&B run %s", self.name, self._run.id)
        run: Run = self._run
        return run

    @property
    def pending_steps(self) -> list[int]:
        """Steps with values buffered since the last flush."""
        return sorted(self._pending)

    def _put(self, step: int, key: str, value: Any) -> None:
        self._pending.setdefault(int(step), {})[key] = value

    def scalars(self, values: Mapping[str, float], *, step: int) -> None:
        """Buffer scalars as floats."""
        for key, value in values.items():
            self._put(step, key, float(value))

    def table(self, key: str, rows: Sequence[Mapping[str, Any]], *, step: int) -> None:
        """Buffer long-format rows as a ``wandb.Table`` with the columns of ``ROW_FIELDS``."""
        data = [[json_safe(row.get(field)) for field in ROW_FIELDS] for row in rows]
        self._put(step, key, self._wandb.Table(columns=list(ROW_FIELDS), data=data))

    def image(self, key: str, image: np.ndarray, *, step: int) -> None:
        """Buffer an ``(H, W, 3)`` ``uint8`` image."""
        self._put(step, key, self._wandb.Image(np.asarray(image)))

    def text(self, key: str, text: str, *, step: int) -> None:
        """Buffer markdown text as a one-cell table."""
        self._put(step, key, self._wandb.Table(columns=["text"], data=[[text]]))

    def json(self, key: str, payload: Mapping[str, Any], *, step: int) -> None:
        """Buffer a JSON payload as a one-cell table holding strict JSON."""
        encoded = encode_json(payload).decode("utf-8")
        self._put(step, key, self._wandb.Table(columns=["json"], data=[[encoded]]))

    def flush(self) -> None:
        """Send the buffered values: one ``run.log`` call (one history row) per buffered step."""
        if not self._pending:
            return
        run = self.run
        for step in sorted(self._pending):
            payload = {**self._pending.pop(step), STEP_KEY: step}
            run.log(payload)

    def close(self) -> None:
        """Send what is buffered; finish the run if the sink started it."""
        self.flush()
        if self._owns_run and self._run is not None:
            self._run.finish()
            self._run = None
            self._owns_run = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
