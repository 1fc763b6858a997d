"""genre-edge runtime: offline, on-device recommendation from a verified bundle.

Light dependencies only (numpy, onnxruntime, tokenizers, click). The export side lives in
``genre_edge_export``.
"""
__version__ = "0.1.0"

from .errors import BundleError, ConfigError, DataError, GenreError, RequestError  # noqa: E402
from .request import Request  # noqa: E402

__all__ = ["__version__", "load", "Request", "GenreError", "ConfigError", "DataError", "BundleError", "RequestError"]


def load(bundle, profile="auto", **kwargs):
    """Load a bundle for serving. See :class:`genre_edge.recommender.Recommender`."""
    from .recommender import Recommender

    return Recommender.load(bundle, profile=profile, **kwargs)
