"""genre-edge export side: baselines, teacher training, distillation, ONNX export, bundles.

Heavy dependencies (torch, transformers, onnx) are imported inside functions only; a missing
extra raises an ImportError with the exact ``pip install`` line.
"""
from genre_edge.errors import MissingExtraError


def require(module: str, extra: str = "export", what: str | None = None):
    """Import ``module`` or raise an ImportError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, what or f"this command (it imports {module})") from exc
