"""Trending popularity: each item's interactions before a moment, each weighted by how recent it is.

What a news reader is shown is mostly what is popular *now*: a story's clicks fade within hours. A
popularity count over the whole training log ranks last week's stories first; the count as of the
request time, with older events decaying (``0.5 ** (age / half_life)``), follows what is trending.
Leak-free by construction: a request at time t sees only training events strictly before t.

numpy only (used by baselines, evaluation and the blend calibration, torch-free). The hybrid's trending
popularity feature is the runtime's :func:`genre_edge.trending.trend_feature` of these counts, so the
offline scores and a device's agree.
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


# The half-life as a share of the training log's span: ~20 min .. 10 days on two weeks of news, ~5 h .. 3 months
# on ml-100k's seven months (the largest shares are close to a plain count up to the request time). Searched on
# validation by the trending baseline and, with "static" added, by the hybrid's blend calibration.
TREND_SHARES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def train_events(split) -> tuple[np.ndarray, np.ndarray]:
    """(times float64, items int64) of the training positives: the events every trending score counts."""
    tr = split.train.take(split.train.label == 1)
    return tr.time.astype(np.float64), tr.item.astype(np.int64)


def half_life_of(split, share: float) -> float:
    """Seconds: ``share`` of the training positives' time span (at least one second)."""
    t, _ = train_events(split)
    return max(float(t.max() - t.min()) * share, 1.0) if len(t) else 1.0


def trending_rows(split, when: np.ndarray, half_life: float):
    """``users -> [len(users), n_items]`` float32: the hybrid's trending popularity feature per user, as of
    their request time ``when[user]`` (``Split.request_times``), from training events strictly before it."""
    from genre_edge.trending import trend_feature

    t, i = train_events(split)
    when = np.asarray(when, np.float64)

    def rows(users) -> np.ndarray:
        return trend_feature(trend_rows(t, i, split.n_items, when[np.asarray(users, np.int64)], half_life))
    return rows


def end_counts(split, half_life: float) -> tuple[np.ndarray, float]:
    """(per-item decayed counts float64, as_of): every training positive, as of one second after the last one
    (what a bundle ships; the device decays them to the request time and adds its own events)."""
    t, i = train_events(split)
    as_of = float(t.max()) + 1.0 if len(t) else 0.0
    return trend_rows(t, i, split.n_items, np.array([as_of]), half_life)[0].astype(np.float64), as_of


def popularity_options(choice: str, split) -> list[tuple[str, float]]:
    """(name, half-life seconds; 0 = static) of the popularity features ``head.popularity`` allows."""
    if choice == "static":
        return [("static", 0.0)]
    if choice.startswith("trending-"):
        return [(choice, half_life_of(split, float(choice.split("-", 1)[1])))]
    return [("static", 0.0)] + [(f"trending-{s:g}", half_life_of(split, s)) for s in TREND_SHARES]

