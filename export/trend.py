"""Trending popularity: each item's interactions before a moment, each weighted by how recent it is.

What a news reader is shown is mostly what is popular *now*: a story's clicks fade within hours. A
popularity count over the whole training log ranks last week's stories first; the count as of the
request time, with older events decaying (``0.5 ** (age / half_life)``), follows what is trending.
Leak-free by construction: a request at time t sees only training events strictly before t.

numpy only (used by baselines and evaluation, torch-free).
"""
from __future__ import annotations

import numpy as np


def trend_rows(ev_time: np.ndarray, ev_item: np.ndarray, n_items: int, at: np.ndarray,
               half_life: float) -> np.ndarray:
    """[len(at), n_items] float32: per request time ``at[r]``, the sum over events strictly before it of
    ``0.5 ** ((at[r] - t_event) / half_life)`` per item (``half_life`` <= 0: plain counts before ``at[r]``).

    One sweep in time order: a running vector decayed from request to request, each event added once
    (cost O(requests x items + events), not requests x events).
    """
    ev_time = np.asarray(ev_time, np.float64)
    ev_item = np.asarray(ev_item, np.int64)
    at = np.asarray(at, np.float64)
    if len(ev_time) != len(ev_item):
        raise ValueError(f"ev_time and ev_item differ in length ({len(ev_time)} vs {len(ev_item)})")
    if not np.all(np.isfinite(at)):
        raise ValueError("request times must be finite")
    order = np.argsort(ev_time, kind="stable")
    et, ei = ev_time[order], ev_item[order]
    out = np.zeros((len(at), n_items), np.float32)
    run = np.zeros(n_items, np.float64)
    now, k = -np.inf, 0
    for r in np.argsort(at, kind="stable"):
        t = at[r]
        if half_life > 0 and np.isfinite(now):
            run *= 0.5 ** ((t - now) / half_life)
        j = int(np.searchsorted(et, t, "left"))  # events strictly before t
        if j > k:
            w = 0.5 ** ((t - et[k:j]) / half_life) if half_life > 0 else np.ones(j - k)
            run += np.bincount(ei[k:j], weights=w, minlength=n_items)
            k = j
        now = t
        out[r] = run
    return out
