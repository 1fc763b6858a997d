"""Catalog scoring: content (catalog @ user) + CF (neighbour tables or factors) + popularity."""
from __future__ import annotations

import numpy as np

# CFScorer.sparse counts over the bundle's items (O(items)) instead of sorting the history's neighbour
# entries (O(entries log entries)) when the items are at most this many times the entries
SPARSE_DENSE_RATIO = 4


class CFScorer:
    """Collaborative score of every catalog item for a history (no per-user state needed).

    ``history`` is oldest first; with ``half_life`` > 0 the item ``p`` places from the end votes
    with ``floor + (1 - floor) * 0.5 ** (p / half_life)`` (recent taste counts more), as trained.
    ``short`` ``[(T, ids, weights), ...]``: neighbour tables for short histories; a history of n items with CF
    (bundle items) reads the one of smallest T >= n instead of ``idx``/``w``, as the trained CF part does
    (chosen for short histories in training).
    """

    def __init__(self, kind: str, idx=None, w=None, P=None, Q=None, half_life: float = 0.0, floor: float = 1.0,
                 short: list | None = None):
        self.kind = kind
        self.idx, self.w, self.P, self.Q = idx, w, P, Q
        self.half_life, self.floor = float(half_life), float(floor)
        self.n_bundle = (len(idx) if idx is not None else len(Q) if Q is not None else 0)
        self.short = sorted(short or [], key=lambda t: t[0])

    def _table(self, n_kept: int) -> tuple[np.ndarray, np.ndarray]:
        """The neighbour table for a history of ``n_kept`` bundle items (a short-history one where it fits)."""
        if n_kept > 0:
            for T, idx, w in self.short:
                if n_kept <= T:
                    return idx, w
        return self.idx, self.w

    def history_weights(self, n: int) -> np.ndarray:
        if self.half_life <= 0:
            return np.ones(n, np.float32)
        from_end = np.arange(n - 1, -1, -1, dtype=np.float32)
        return (self.floor + (1 - self.floor) * np.power(0.5, from_end / self.half_life)).astype(np.float32)

    def _kept(self, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self.history_weights(len(hist))
        keep = hist < self.n_bundle  # items added on device have no CF yet (but keep their place in time)
        return hist[keep], w[keep]

    def scores(self, hist: np.ndarray, n_items: int) -> np.ndarray:
        hist, hw = self._kept(hist)
        out = np.zeros(n_items, np.float32)
        if self.kind == "none" or len(hist) == 0:
            return out
        if self.kind == "mf":
            out[: self.n_bundle] = self.Q @ ((self.P[hist] * hw[:, None]).sum(0) / max(float(hw.sum()), 1e-6))
            return out
        nb, weights = self._votes(hist, hw)
        out[: self.n_bundle] = np.bincount(nb, weights=weights, minlength=self.n_bundle)[: self.n_bundle]
        return out

    def _votes(self, hist: np.ndarray, hw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour tables: (the neighbour ids of the kept history ``hist``, each one's vote: its table
        weight x its history item's recency weight ``hw``), flat; a CF score is the sum of an item's votes."""
        idx, w = self._table(len(hist))
        return idx[hist].ravel(), (w[hist] * hw[:, None]).ravel()

    def sparse(self, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores): the items a neighbour table gives a CF score, sorted by row, with their scores
        (as :meth:`scores`, without a catalog-sized vector: what a candidate-set request reads).
        Factor models score every item: they have no such set (empty)."""
        hist, hw = self._kept(hist)
        if self.kind in ("none", "mf") or len(hist) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        nb, weights = self._votes(hist, hw)
        if self.n_bundle <= SPARSE_DENSE_RATIO * len(nb):
            # counting over the bundle's items beats sorting the neighbour entries (a 50-item history with
            # 500 neighbours each over 1,682 items: 0.05 against 1.8 ms, a third of a request in mode ann)
            nb = nb.astype(np.intp)
            rows = np.flatnonzero(np.bincount(nb, minlength=self.n_bundle)[: self.n_bundle])
            vals = np.bincount(nb, weights=weights, minlength=self.n_bundle)[rows]
            return rows.astype(np.int64), vals.astype(np.float32)
        rows, inv = np.unique(nb, return_inverse=True)
        vals = np.bincount(inv, weights=weights, minlength=len(rows))
        keep = rows < self.n_bundle
        return rows[keep].astype(np.int64), vals[keep].astype(np.float32)

    def scores_at(self, hist: np.ndarray, rows: np.ndarray, sparse: tuple | None = None) -> np.ndarray:
        """CF scores of the catalog ``rows`` only (``sparse``: :meth:`sparse` of ``hist``, if already known)."""
        rows = np.asarray(rows, np.int64)
        out = np.zeros(len(rows), np.float32)
        if self.kind == "mf":
            h, hw = self._kept(hist)
            inb = rows < self.n_bundle
            if len(h) and inb.any():
                out[inb] = self.Q[rows[inb]] @ ((self.P[h] * hw[:, None]).sum(0) / max(float(hw.sum()), 1e-6))
            return out
        srows, svals = self.sparse(hist) if sparse is None else sparse
        if len(srows):
            pos = np.clip(np.searchsorted(srows, rows), 0, len(srows) - 1)
            hit = srows[pos] == rows
            out[hit] = svals[pos[hit]]
        return out

    def contributions(self, hist: np.ndarray, item: int) -> np.ndarray:
        """Per-history-item CF contribution to ``item`` (for explanations)."""
        return self.contribution_matrix(hist, np.array([item]))[:, 0]

    def contribution_matrix(self, hist: np.ndarray, items: np.ndarray, last: int | None = None) -> np.ndarray:
        """[H, len(items)]: what each of the last ``last`` history items (default all; recency weights
        over the whole history) adds to each item's CF score. Vectorized: one pass over the window's
        neighbour rows, whatever the number of items (explanations of k = 1000 with a long history
        looped in Python before: 59 s)."""
        hist = np.asarray(hist, np.int64)
        items = np.asarray(items, np.int64)
        hw = self.history_weights(len(hist))
        kept = hist < self.n_bundle
        total = max(float(hw[kept].sum()), 1e-6)  # as scores(): over the kept items
        idx, w = self._table(int(kept.sum()))  # as scores(): chosen by the whole history's length
        if last is not None:
            hist, hw = hist[-last:], hw[-last:]
        out = np.zeros((len(hist), len(items)), np.float32)
        rows = np.flatnonzero(hist < self.n_bundle)  # items added on device have no CF
        if self.kind == "none" or not len(rows) or not len(items):
            return out
        if self.kind == "mf":
            cols = np.flatnonzero(items < self.n_bundle)
            out[np.ix_(rows, cols)] = (hw[rows, None] * (self.P[hist[rows]] @ self.Q[items[cols]].T)) / total
            return out
        nb = idx[hist[rows]]  # [R, K] neighbour ids of each history row
        order = np.argsort(items, kind="stable")
        srt = items[order]
        pos = np.clip(np.searchsorted(srt, nb), 0, len(srt) - 1)
        hit = srt[pos] == nb
        r, kpos = np.nonzero(hit)
        np.add.at(out, (rows[r], order[pos[r, kpos]]), hw[rows[r]] * w[hist[rows[r]], kpos])
        return out


def blend(content: np.ndarray, cf: np.ndarray, pop: np.ndarray, w) -> np.ndarray:
    """``w`` (a bundle :class:`~genre_edge.bundle.Preset`) weighs content, CF and popularity."""
    return w.content * content + w.cf * cf + w.pop * pop


class RowScores:
    """Scores of a candidate set of catalog rows, indexed by catalog row like a whole-catalog score
    vector (``s[rows]``, ``s[i]``, ``s[rows] = v``): what the ranking and re-ranking steps read, without
    a catalog-sized array (mode ``ann``). Reading a row outside the set is an error, not a zero."""

    def __init__(self, rows: np.ndarray, values: np.ndarray):
        self.rows = np.asarray(rows, np.int64)  # sorted, unique
        self.values = np.asarray(values, np.float32)

    def _pos(self, idx) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        pos = np.clip(np.searchsorted(self.rows, idx), 0, max(0, len(self.rows) - 1))
        if len(self.rows) == 0 or np.any(self.rows[pos] != idx):
            raise KeyError("catalog row not in the candidate set")
        return pos

    def __getitem__(self, idx):
        return self.values[self._pos(idx)]

    def __setitem__(self, idx, v) -> None:
        self.values[self._pos(idx)] = v

    def copy(self) -> "RowScores":
        return RowScores(self.rows, self.values.copy())
