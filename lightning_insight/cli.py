"""The ``lightning-insight`` command: LightningCLI with a per-epoch fairness summary.

``lightning-insight fit|validate|test --config configs/quickstart.yaml``. Every subcommand and option of
LightningCLI works; the saved ``config.yaml`` is overwritten so a second run in the same folder works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import LightningCLI
from typing_extensions import override

from lightning_insight.comparison.callback import AttributionComparisonMonitor
from lightning_insight.comparison.results import AttributionComparisonReport
from lightning_insight.discovery.callback import SliceDiscoveryMonitor
from lightning_insight.discovery.results import SliceDiscoveryReport
from lightning_insight.failure_modes.callback import FailureModeMonitor
from lightning_insight.failure_modes.results import FailureModeReport
from lightning_insight.fairness.callback import FairnessMonitor


class EpochSummary(Callback):
    """Prints each monitor's newest report after every validation/test epoch (rank 0 only)."""

    def _print(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if not isinstance(callback, FairnessMonitor) or not callback.history:
                continue
            report = callback.history[-1]
            if (report.epoch, report.step) != (trainer.current_epoch, trainer.global_step):
                continue
            fired = [
                a
                for a in callback.alerts
                if (a.epoch, a.step, a.source) == (report.epoch, report.step, report.source)
            ]
            print(report.summary(fired), flush=True)  # the CLI's own output, not the library's
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            summary = None
            if isinstance(callback, SliceDiscoveryMonitor) and _is_new(callback.history, trainer):
                summary = _discovery_summary(callback.history[-1])
            elif isinstance(callback, AttributionComparisonMonitor) and _is_new(
                callback.history, trainer
            ):
                summary = _comparison_summary(callback.history[-1])
            elif isinstance(callback, FailureModeMonitor) and _is_new(callback.history, trainer):
                summary = _failure_mode_summary(callback.history[-1])
            if summary is not None:
                print(summary, flush=True)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print(trainer)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print(trainer)


def _is_new(history: Sequence[Any], trainer: pl.Trainer) -> bool:
    """Whether the newest report was made in this epoch."""
    return bool(history) and (history[-1].epoch, history[-1].step) == (
        trainer.current_epoch,
        trainer.global_step,
    )


def _comparison_summary(report: AttributionComparisonReport, top: int = 3) -> str:
    taken = "" if report.reference_epoch is None else f" (epoch {report.reference_epoch})"
    lines = [
        f"[{report.source} epoch {report.epoch}] attribution comparison with {report.reference}"
        f"{taken}: {len(report.clusters)} region clusters over {report.num_samples} probe images "
        f"(accuracy A {report.accuracy_a:.3g}, B {report.accuracy_b:.3g})"
    ]
    lines.extend(
        f"  cluster {c.cluster_id}: {c.regions} regions in {c.images} images, B - A "
        f"{c.difference:+.3g} [{c.lower:+.3g}, {c.upper:+.3g}]"
        for c in report.clusters[:top]
    )
    return "\n".join(lines)


def _failure_mode_summary(report: FailureModeReport, top: int = 3) -> str:
    groups = ", ".join(
        f"{g.group}: base error {g.base_error_rate:.3g}, ALER {g.aler:.3g}"
        if g.fitted
        else f"{g.group}: {g.reason}"
        for g in report.groups
    )
    lines = [
        f"[{report.source} epoch {report.epoch}] {len(report.modes)} failure modes over "
        f"{report.num_samples} samples ({groups})"
    ]
    lines.extend(
        f"  group {m.group}: {report.describe(m)}: {m.size} samples, error rate "
        f"{m.error_rate:.3g}, {m.error_coverage:.0%} of the group's failures"
        for m in report.modes[:top]
    )
    return "\n".join(lines)


def _discovery_summary(report: SliceDiscoveryReport, top: int = 3) -> str:
    lines = [
        f"[{report.source} epoch {report.epoch}] discovered {len(report.slices)} slices over "
        f"{report.num_samples} probe images (error rate {report.overall_error_rate:.3g})"
    ]
    for found in report.slices[:top]:
        lines.append(
            f"  slice {found.slice_id}: {found.size} images, error rate {found.error_rate:.3g} "
            f"(lift {found.lift:.2g}), {len(found.mislabel_candidates)} mislabel candidates"
        )
    return "\n".join(lines)


class InsightCLI(LightningCLI):
    """LightningCLI that adds :class:`EpochSummary` to the trainer's callbacks."""

    @override
    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(EpochSummary())  # type: ignore[attr-defined]
        return trainer


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-insight`` console script (exit status 0 on success).

    ``lightning-insight board --logdir DIR [--port N]`` starts TensorBoard with InsightBoard
    (:mod:`lightning_insight.board`); every other subcommand is LightningCLI's.
    """
    import sys

    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["board"]:
        from lightning_insight.board import main as board_main

        status = board_main(argv[1:])
        if status:
            raise SystemExit(status)
        return
    InsightCLI(
        args=args,  # None: LightningCLI reads sys.argv itself (and does not warn)
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
    )


if __name__ == "__main__":
    main()
