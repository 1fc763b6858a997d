"""Exception types. Every user-facing error says what was wrong and what is valid."""


class GenreError(Exception):
    """Base class for errors a user can fix (bad input, bad file, bad config)."""


class ConfigError(GenreError):
    """A TOML config or profile has an unknown key or a bad value."""


class DataError(GenreError):
    """A data file is missing, malformed or in an unexpected encoding."""


class BundleError(GenreError):
    """A bundle is missing files, tampered with, or of an unknown format version."""


class RequestError(GenreError):
    """A recommend/embed/catalog request has a bad parameter."""


class MissingExtraError(ImportError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, what: str):
        super().__init__(
            f"{what} needs the '{extra}' extra. Install it from the genre-edge clone with: pip install -e '.[{extra}]'"
            + ("  (torch is pinned to 2.13.0; on Linux x86-64 install it first from "
               "https://download.pytorch.org/whl/cpu, or pip takes the CUDA build)" if extra == "export" else "")
        )
        self.extra = extra
