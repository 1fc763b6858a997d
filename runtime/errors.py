"""Exception types. Every user-facing error says what was wrong and what is valid."""
import errno as _errno


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


class StorageError(GenreError):
    """A file could not be written (disk full, read-only or no permission): the change it carried was not
    saved and nothing was changed. ``errno`` is the operating system's error number."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


# errno values that can only mean a write failed: the disk (or the quota) is full, the file would be too large
# for the process's limit, or the file system is mounted read-only
WRITE_FAILURES = frozenset(getattr(_errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS") if hasattr(_errno, n))


def storage_error(exc: OSError, what: str, where) -> StorageError:
    """A :class:`StorageError` for ``exc`` raised while writing ``what`` under ``where``: names the folder,
    the system's reason and what to do."""
    reason = exc.strerror or str(exc)
    hint = ("make it writable" if exc.errno in (_errno.EROFS, _errno.EACCES, _errno.EPERM)
            else "free some space there" if exc.errno in WRITE_FAILURES else "check the disk")
    return StorageError(f"{where}: {what} was not saved ({reason}); nothing was changed - {hint}, then retry",
                        exc.errno)


class MissingExtraError(ImportError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, what: str):
        super().__init__(
            f"{what} needs the '{extra}' extra. Install it from the genre-edge clone with: pip install -e '.[{extra}]'"
            + ("  (torch is pinned to 2.13.0; on Linux x86-64 install it first from "
               "https://download.pytorch.org/whl/cpu, or pip takes the CUDA build)" if extra == "export" else "")
        )
        self.extra = extra
