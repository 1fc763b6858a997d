"""The runtime's cache folder: graphs optimized for this machine (``ort/``), int8 and 4-bit scoring indexes
(``int8-index/``, ``int4-index/``) and approximate indexes (``ann-index/``), each keyed by the content it was
made from.

Why a size cap: the keys are content hashes, so a device that receives bundle after bundle (an appliance
updated over the air) keeps every old bundle's entries - about 17 MB per demo bundle, hundreds of MB for a
million-item index - on an SD card that nothing else cleans. Each new entry prunes the cache to
``GENRE_CACHE_MAX_MB``, least recently used first (an entry is touched when a start uses it)."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

CACHE_FOLDERS = ("ort", "int8-index", "int4-index", "ann-index")  # what the runtime writes (data/ etc. are the export side's)
MAX_MB_ENV = "GENRE_CACHE_MAX_MB"
DEFAULT_MAX_MB = 1024
RECENT_S = 600  # entries used this recently stay whatever the cap (the bundle loading now, in any process)
STALE_TMP_S = 24 * 3600  # a temp file this old was left by a process that died while writing it


def cache_dir() -> Path:
    """``GENRE_CACHE_DIR``, default ``~/.cache/genre-edge``."""
    return Path(os.environ.get("GENRE_CACHE_DIR", Path.home() / ".cache" / "genre-edge"))


def max_bytes() -> int:
    """The cap from ``GENRE_CACHE_MAX_MB`` (a number of MiB >= 0; default 1024)."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not (0 <= mb < 1 << 40):
        raise ConfigError(f"{MAX_MB_ENV}={raw!r}: expected a size in MiB, a number >= 0 (default {DEFAULT_MAX_MB})")
    return int(mb * (1 << 20))


def used(path: Path) -> None:
    """Mark a cache entry as just used (its mtime), so pruning keeps it longest; a read-only cache stays as it is."""
    try:
        os.utime(path)
    except OSError:
        pass


def prune(keep: tuple[Path, ...] = (), now: float | None = None) -> list[Path]:
    """Remove the least recently used entries until the cache holds at most :func:`max_bytes`, never ``keep``
    nor an entry used in the last :data:`RECENT_S` seconds; temp files older than a day go too. Returns what
    was removed (errors are logged, never raised: a cache must not stop a start)."""
    now = time.time() if now is None else now
    cap = max_bytes()
    keep_set = {Path(p).resolve() for p in keep}
    entries, removed = [], []
    for sub in CACHE_FOLDERS:
        try:
            files = [p for p in (cache_dir() / sub).iterdir() if p.is_file()]
        except OSError:
            continue
        for p in files:
            try:
                st = p.stat()
            except OSError:
                continue
            if p.name.endswith(".tmp"):
                if now - st.st_mtime > STALE_TMP_S and _remove(p):
                    removed.append(p)
                continue
            entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    for mtime, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= cap:
            break
        if now - mtime < RECENT_S or p.resolve() in keep_set:
            continue
        if _remove(p):
            total -= size
            removed.append(p)
    if removed:
        log.info("cache %s: removed %d least recently used entries (cap %s MiB, %s)", cache_dir(), len(removed),
                 cap >> 20, MAX_MB_ENV)
    return removed


def _remove(p: Path) -> bool:
    try:
        p.unlink()  # a process that has it open keeps reading it (POSIX); the next start rebuilds it
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.info("cache entry %s not removed: %s", p, exc)
        return False
