"""Catalog scoring: content (catalog @ user) + CF (neighbour tables or factors) + popularity."""
from __future__ import annotations

import numpy as np


class CFScorer:
    """Collaborative score of every catalog item for a history (no per-user state needed)."""

    def __init__(self, kind: str, idx=None, w=None, P=None, Q=None):
        self.kind = kind
        self.idx, self.w, self.P, self.Q = idx, w, P, Q
        self.n_bundle = (len(idx) if idx is not None else len(Q) if Q is not None else 0)

    def scores(self, hist: np.ndarray, n_items: int) -> np.ndarray:
        hist = hist[hist < self.n_bundle] if len(hist) else hist  # items added on device have no CF yet
        out = np.zeros(n_items, np.float32)
        if self.kind == "none" or len(hist) == 0:
            return out
        if self.kind == "mf":
            out[: self.n_bundle] = self.Q @ self.P[hist].mean(0)
            return out
        out[: self.n_bundle] = np.bincount(self.idx[hist].ravel(), weights=self.w[hist].ravel(),
                                           minlength=self.n_bundle)[: self.n_bundle]
        return out

    def contributions(self, hist: np.ndarray, item: int) -> np.ndarray:
        """Per-history-item CF contribution to ``item`` (for explanations)."""
        out = np.zeros(len(hist), np.float32)
        if self.kind in ("none",) or item >= self.n_bundle:
            return out
        for r, i in enumerate(hist):
            if i >= self.n_bundle:
                continue
            if self.kind == "mf":
                out[r] = float(self.P[i] @ self.Q[item]) / len(hist)
            else:
                hit = np.flatnonzero(self.idx[i] == item)
                if len(hit):
                    out[r] = self.w[i, hit[0]]
        return out


def blend(content: np.ndarray, cf: np.ndarray, pop: np.ndarray, w: dict) -> np.ndarray:
    return w["content"] * content + w["cf"] * cf + w["pop"] * pop
