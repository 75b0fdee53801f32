"""InsightBoard's entry point for TensorBoard (``[project.entry-points.tensorboard_plugins]``).

TensorBoard imports every ``tensorboard_plugins`` entry point at start-up without a ``try``, so this
module stays light: it imports nothing of lightning_insight, torch or Lightning. The InsightBoard
frontend and routes are a later capability; until then the loader keeps every epoch of the
``lightning_insight`` tensor summaries (so nothing is sampled away) and contributes no tab.
"""

from __future__ import annotations

from typing import Any

from tensorboard.plugins import base_plugin

PLUGIN_NAME = "lightning_insight"


class InsightBoardLoader(base_plugin.TBLoader):  # type: ignore[misc]
    """Loads InsightBoard lazily; a failure never crashes TensorBoard."""

    def fix_flags(self, flags: Any) -> None:
        """Keep every tensor summary of this plugin (the loaders' default keeps 10 or 100 per tag)."""
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            samples.setdefault(PLUGIN_NAME, 0)

    def load(self, context: Any) -> None:
        """No InsightBoard tab yet: the JSON reports are readable through the data provider."""
        return
