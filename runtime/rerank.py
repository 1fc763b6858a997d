"""Re-ranking of the scored pool: MMR diversity, freshness, popularity penalty, seeded exploration.
(Filters are applied before, as catalog masks: :meth:`Catalog.mask`.)"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .catalog import Catalog


@dataclass(frozen=True)
class Rerank:
    """Re-ranking knobs (validated as part of the request: :class:`~genre_edge.request.Request`)."""
    mmr_lambda: float = 1.0  # 1 = relevance only; lower trades relevance for diversity
    freshness_half_life_days: float = 0.0  # 0 = off
    popularity_penalty: float = 0.0
    exploration: float = 0.0  # Gumbel noise scale on normalised relevance; 0 = deterministic
    seed: int | None = None


def rerank(scores: np.ndarray, cand: np.ndarray, cat: Catalog, opts: Rerank, k: int, now: int | None = None):
    """Pick ``k`` of ``cand`` (item indices, best first by ``scores[cand]``). Returns (picked, relevance)."""
    s = scores[cand].astype(np.float64)
    lo, hi = s.min(), s.max()
    rel = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    if opts.popularity_penalty:
        rel = rel - opts.popularity_penalty * cat.pop[cand]
    if opts.freshness_half_life_days:
        t_now = now if now is not None else int(cat.first_seen.max())
        age_days = np.maximum(0, t_now - cat.first_seen[cand]) / 86400.0
        rel = rel * np.power(0.5, age_days / opts.freshness_half_life_days)
    if opts.exploration:
        rng = np.random.default_rng(opts.seed)
        rel = rel + opts.exploration * 0.1 * rng.gumbel(size=len(rel))
    k = min(k, len(cand))
    if opts.mmr_lambda >= 1.0:
        order = np.argsort(-rel, kind="stable")[:k]
        return cand[order], rel[order]
    E = cat.emb[cand]
    lam = opts.mmr_lambda
    base = lam * rel
    mmr = base  # nothing picked yet: no similarity to subtract
    picked: list[int] = []
    max_sim = None  # each candidate's highest similarity to a picked item
    for _ in range(k):  # few numpy calls a pick: this loop is most of the re-ranking time on a small board
        j = int(np.argmax(mmr))
        picked.append(j)
        sim = E @ E[j]
        max_sim = sim.astype(np.float64) if max_sim is None else np.maximum(max_sim, sim)
        mmr = base - (1 - lam) * max_sim
        mmr[picked] = -np.inf
    p = np.array(picked, np.int64)
    return cand[p], rel[p]
