"""The part every monitor shares: building its sinks per Trainer, closing them, leaving them out of pickles."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from typing_extensions import override

from lightning_insight.sinks.base import Sink
from lightning_insight.sinks.group import SinkGroup, sinks_for_trainer


class SinkCallback(Callback):
    """A Callback that owns a :class:`SinkGroup`, the base of every monitor.

    The group is built at ``setup`` for each new Trainer, closed at ``teardown``, and left out when the
    callback is pickled (writers hold threads and file handles).

    Args:
        sinks: ``None`` for one sink per attached logger plus the CSV report, or sinks and names
            (see :func:`sinks_for_trainer`).
    """

    def __init__(self, sinks: Sequence[Sink | str] | None = None) -> None:
        super().__init__()
        self.requested_sinks = None if sinks is None else list(sinks)
        self._sinks: SinkGroup | None = None
        self._sinks_trainer: int | None = None

    @property
    def sinks(self) -> SinkGroup | None:
        """The sinks results go to (built at ``setup``)."""
        return self._sinks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # a new Trainer (another log dir, other loggers) gets its own sinks; the same one keeps them
        if self._sinks is None or self._sinks_trainer != id(trainer):
            self._sinks_trainer = id(trainer)
            self._sinks = SinkGroup(
                sinks_for_trainer(trainer, self.requested_sinks),
                is_global_zero=trainer.is_global_zero,
            )

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._sinks is not None:
            self._sinks.close()

    @staticmethod
    def log_headline(pl_module: pl.LightningModule, values: Mapping[str, float]) -> None:
        """Log ``values`` through ``pl_module.log`` so EarlyStopping/ModelCheckpoint can monitor them.

        ``logger=False`` (the sinks already wrote them) and ``sync_dist=True`` (epoch-level values
        under DDP); call it from ``on_*_epoch_end`` on every rank.
        """
        for key, value in values.items():
            tensor = torch.tensor(value, dtype=torch.float32, device=pl_module.device)
            pl_module.log(key, tensor, logger=False, sync_dist=True, add_dataloader_idx=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sinks_trainer"] = None
        state["_sinks"] = None  # setup builds them again
        return state


def scheduled(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """Whether a monitor runs in this validation/test epoch.

    Never in the sanity check, every ``every_n_epochs``-th epoch under ``fit``, always under
    ``validate()`` and ``test()``.
    """
    if trainer.sanity_checking:
        return False
    if trainer.state.fn == "fit":
        return (trainer.current_epoch + 1) % every_n_epochs == 0
    return True


def object_gather(trainer: pl.Trainer) -> Callable[[Any], list[Any]] | None:
    """``all_gather_object`` over the trainer's ranks (a collective), or ``None`` in one process."""
    if trainer.world_size <= 1 or not torch.distributed.is_initialized():
        return None

    def gather(obj: Any) -> list[Any]:
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out

    return gather
