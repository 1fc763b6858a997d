"""Trending popularity on the device: per-item event counts that fade, kept as of one moment.

A bundle trained where what is popular *now* matters (news) carries each item's training events as
``sum 0.5 ** ((as_of - t_event) / half_life)`` at the training log's end. A request at time ``now``
decays them to ``now``; events recorded on the device (:meth:`Trend.add`) join the same sums. The
popularity feature the blend reads is :func:`trend_feature` of the counts - the same function the
training side calibrates with (``genre_edge_export.trend``), so offline and device scores agree.
"""
from __future__ import annotations

import numpy as np

from .errors import RequestError
from .item_columns import push


def trend_feature(counts: np.ndarray) -> np.ndarray:
    """float32 popularity feature in [0, 1] of decayed counts (last axis = items):
    ``log1p(c) / log1p(max c)`` per row, as the static popularity is ``log1p(n) / log1p(max n)``."""
    c = np.asarray(counts, np.float64)
    top = c.max(axis=-1, keepdims=True) if c.shape[-1] else np.zeros(c.shape[:-1] + (1,))
    return (np.log1p(c) / np.maximum(np.log1p(top), 1e-12)).astype(np.float32)


class Trend:
    """Decayed per-item event counts as of ``as_of`` (unix seconds), half-life ``half_life`` seconds."""

    def __init__(self, counts: np.ndarray, half_life: float, as_of: float):
        if not half_life > 0 or not np.isfinite(half_life):
            raise ValueError(f"trend half-life must be a positive number of seconds, not {half_life!r}")
        self.counts = np.asarray(counts, np.float64).copy()
        self.half_life, self.as_of = float(half_life), float(as_of)
        self._room = None
        self._cache: tuple | None = None  # (moment, feature): requests without a time share one

    def __len__(self):
        return len(self.counts)

    def feature(self, now: float | None = None) -> np.ndarray:
        """The popularity feature at ``now`` (default, and never earlier than: the newest event known).

        Why not earlier: counts as of ``as_of`` cannot be taken back to a past moment (the events after it
        are summed in); a device clock behind the bundle's (a board without a real-time clock) reads the
        counts as they are."""
        at = self.as_of if now is None else max(float(now), self.as_of)
        if self._cache is not None and self._cache[0] == at:
            return self._cache[1]
        f = trend_feature(self.counts * 0.5 ** ((at - self.as_of) / self.half_life))
        self._cache = (at, f)
        return f

    def add(self, rows: np.ndarray, times: np.ndarray) -> None:
        """Count events (catalog rows at unix times): the counts move to the newest event's time."""
        rows, times = np.asarray(rows, np.int64), np.asarray(times, np.float64)
        if rows.shape != times.shape or rows.ndim != 1:
            raise RequestError("events need one time per item")
        if len(rows) == 0:
            return
        if not np.all(np.isfinite(times)) or times.min() < 0:
            raise RequestError("event times must be unix seconds >= 0")
        if rows.min() < 0 or rows.max() >= len(self.counts):
            raise RequestError("event rows out of the catalog")
        new = max(self.as_of, float(times.max()))
        self.counts *= 0.5 ** ((new - self.as_of) / self.half_life)
        self.counts += np.bincount(rows, weights=0.5 ** ((new - times) / self.half_life), minlength=len(self.counts))
        self.as_of, self._cache = new, None

    def replace(self, counts: np.ndarray, as_of: float) -> None:
        """Take ``counts`` as of ``as_of`` (the state another process wrote, or a checked update)."""
        self.counts, self.as_of = np.asarray(counts, np.float64), float(as_of)
        self._room, self._cache = None, None

    def append(self) -> None:
        """One more catalog row (an item added on the device), with no events yet."""
        self.counts, self._room = push(self.counts, self._room, 0.0)
        self._cache = None

    def reset(self, row: int) -> None:
        """A reused row (a new item in a removed one's place) starts with no events."""
        self.counts[row] = 0.0
        self._cache = None
