"""Crash-safe file writes: write to a temp file in the same folder, fsync, then rename."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    # /proc gives the umask without changing it (os.umask(0) + restore races with other threads)
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The file gets ``mode`` (default: what ``open()`` would give, 0o666 minus the umask) — mkstemp's
    private 0o600 would make bundles and results unreadable to the service user they are copied to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_with(path: str | Path, write) -> None:
    """As :func:`atomic_write_bytes`, for writers that take a file path (``write(temp_path)``, e.g. a library's
    own serializer): the file is written next to ``path`` under a temporary name, synced, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def scratch_folder(path: str | Path):
    """A temp folder for output that is then swapped in with one rename: emptied first, and removed when the
    writing fails (a full disk must not stay full of a half-written copy; the previous output is untouched)."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    try:
        yield path
    except BaseException as exc:
        shutil.rmtree(path, ignore_errors=True)
        code = os_error_code(exc)
        if code is not None and not isinstance(exc, OSError):  # e.g. safetensors' Rust I/O error: an OSError
            raise OSError(code, os.strerror(code), str(path)) from exc
        raise


def os_error_code(exc: BaseException) -> int | None:
    """The errno of an OSError, or of a library's own exception that carries one in its message (safetensors
    says "I/O error: No space left on device (os error 28)"), else None."""
    if isinstance(exc, OSError):
        return exc.errno
    m = re.search(r"\(os error (\d+)\)", str(exc))
    return int(m.group(1)) if m else None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _finite(s: str) -> float:
    v = float(s)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"number {s} is out of range (not a finite float)")
    return v


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (NaN and Infinity are refused)")


def loads_strict(text: str):
    """``json.loads`` for files and bodies the runtime reads: NaN/Infinity and numbers that overflow
    to infinity are refused, and nesting too deep for the parser is a ``ValueError`` instead of a
    ``RecursionError`` (so every caller's ``except ValueError`` names the file)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None
