"""A small CPU Trainer for the callback tests (importable, so every test module shares one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning import Trainer


def cpu_trainer(tmp_path: Path, callbacks: list[Any], **kwargs: Any) -> Trainer:
    """A quiet one-process CPU Trainer: 2 epochs of 2 training batches, no logger, no checkpoints.

    ``kwargs`` override any option (e.g. ``max_epochs=3``, ``enable_checkpointing=True``).
    """
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "limit_train_batches": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 1,
    }
    return Trainer(callbacks=callbacks, **{**options, **kwargs})


def process_trainer(devices: int, callbacks: list[Any], **kwargs: Any) -> Trainer:
    """The DDP drivers' Trainer: ``devices`` CPU processes (``"ddp"`` when more than one), quiet.

    ``kwargs`` override any option.
    """
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": devices,
        "strategy": "ddp" if devices > 1 else "auto",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
    return Trainer(callbacks=callbacks, **{**options, **kwargs})


def end_processes() -> None:
    """Leave the process group before exit (a DDP driver's last call).

    A gloo group left open can abort a rank at interpreter exit ("terminate called without an active
    exception"), seen once in CI; destroying it first lets every rank exit cleanly.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
