"""Import YOLOX's network classes whether or not torchvision is installed.

``yolox.utils.boxes`` runs ``import torchvision`` at import time for ``ops.nms`` and ``ops.batched_nms``
only, and every ``yolox.models`` import goes through it. When torchvision is absent (this project never
installs it: its wheel here breaks torchmetrics), a stand-in module carrying the pure-torch functions of
:mod:`insight_yolox.nms` is placed in ``sys.modules`` for the duration of that one import and removed
right after, so no other library ever sees a fake torchvision; ``yolox.utils.boxes`` keeps its reference
to the stand-in. With torchvision installed, nothing is replaced.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

from insight_yolox import nms as _nms

__all__ = ["load_yolox"]

_STAND_IN_NAMES = ("torchvision", "torchvision.ops")


def _stand_in() -> dict[str, types.ModuleType]:
    package = types.ModuleType(
        "torchvision", "Stand-in for torchvision.ops, from insight_yolox.nms."
    )
    ops = types.ModuleType("torchvision.ops")
    # A spec, so that importlib.util.find_spec() answers rather than raising during the import.
    package.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    ops.__spec__ = importlib.machinery.ModuleSpec("torchvision.ops", None)
    ops.nms = _nms.nms  # type: ignore[attr-defined]
    ops.batched_nms = _nms.batched_nms  # type: ignore[attr-defined]
    ops.box_iou = _nms.box_iou  # type: ignore[attr-defined]
    package.ops = ops  # type: ignore[attr-defined]
    return {"torchvision": package, "torchvision.ops": ops}


def load_yolox() -> tuple[Any, Any, Any]:
    """Return YOLOX's ``(PAFPN backbone, head, model)`` classes.

    pixeltable-yolox names them ``YoloPafpn``, ``YoloxHead``, ``YoloxModule``; Megvii's ``yolox`` 0.3.0
    ``YOLOPAFPN``, ``YOLOXHead``, ``YOLOX``, with the same constructors.

    Raises:
        ModuleNotFoundError: If ``yolox`` is not installed, with the install command.
    """
    if importlib.util.find_spec("yolox") is None:
        raise ModuleNotFoundError(
            "insight_yolox needs the `yolox` package (pixeltable-yolox). HINT: run "
            "`bash examples/yolox/install.sh`, or `pip install -c constraints.txt --no-deps "
            "pixeltable-yolox==0.4.3` plus its dependencies listed in examples/yolox/pyproject.toml."
        )
    if "yolox.models" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        models = importlib.import_module("yolox.models")
    else:
        stand_in = _stand_in()
        sys.modules.update(stand_in)
        try:
            models = importlib.import_module("yolox.models")
        finally:
            for name in _STAND_IN_NAMES:
                if sys.modules.get(name) is stand_in[name]:
                    del sys.modules[name]
    if hasattr(models, "YoloxModule"):
        return models.YoloPafpn, models.YoloxHead, models.YoloxModule
    return models.YOLOPAFPN, models.YOLOXHead, models.YOLOX
