"""The one place the runtime imports onnxruntime: with its telemetry switched off.

Why: Linux builds of onnxruntime 1.2x+ keep a telemetry event store and a device id under
``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` (an SQLite file the process holds open)
unless ``ORT_DISABLE_TELEMETRY`` is set when the library loads. An offline appliance must not
write outside its own folders, so the runtime sets it (a value the user set is kept).
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)
_warned = False


def onnxruntime():
    """The ``onnxruntime`` module, loaded with telemetry off when this is the first import."""
    global _warned
    if "onnxruntime" not in sys.modules:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    elif os.environ.get("ORT_DISABLE_TELEMETRY") is None and not _warned:
        _warned = True
        log.warning("onnxruntime was imported before genre_edge could switch its telemetry off; set "
                    "ORT_DISABLE_TELEMETRY=1 in the environment to keep it from writing ~/.cache/Microsoft")
    import onnxruntime as ort

    return ort
