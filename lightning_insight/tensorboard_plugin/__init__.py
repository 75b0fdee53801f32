"""InsightBoard's entry point for TensorBoard (``[project.entry-points.tensorboard_plugins]``).

TensorBoard imports every ``tensorboard_plugins`` entry point at start-up without a ``try``, so this
module stays light: it imports nothing of lightning_insight, torch or Lightning. :meth:`load` imports
the plugin (:mod:`lightning_insight.tensorboard_plugin.plugin`) only then, and when that fails it logs
why and returns ``None``: TensorBoard runs on without the tab.
"""

from __future__ import annotations

import logging
from typing import Any

from tensorboard.plugins import base_plugin

PLUGIN_NAME = "lightning_insight"

#: Plugins whose every sample InsightBoard needs: its JSON reports and the monitors' images.
KEEP_ALL_SAMPLES = (PLUGIN_NAME, "images")

#: Seconds between the plugin's background reads of new data (see ``InsightBoardPlugin``).
WARM_INTERVAL = 5.0

log = logging.getLogger(__name__)


class InsightBoardLoader(base_plugin.TBLoader):  # type: ignore[misc]
    """Loads InsightBoard lazily; a failure never crashes TensorBoard."""

    def fix_flags(self, flags: Any) -> None:
        """Keep every report and image of every epoch (the loaders' default keeps 10 or 100 per tag).

        A value the user gave in ``--samples_per_plugin`` is kept.
        """
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            for name in KEEP_ALL_SAMPLES:
                samples.setdefault(name, 0)

    def load(self, context: Any) -> Any:
        """The InsightBoard plugin, or ``None`` (logged) when it cannot be imported."""
        try:
            from lightning_insight.tensorboard_plugin.plugin import InsightBoardPlugin
        except Exception:  # any import failure: TensorBoard must keep running
            log.warning(
                "InsightBoard is disabled: its plugin could not be imported."
                " HINT: reinstall lightning-insight (`pip install -U lightning-insight`).",
                exc_info=True,
            )
            return None
        return InsightBoardPlugin(context, warm_interval=WARM_INTERVAL)
