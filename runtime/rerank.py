"""Filters and re-ranking: categories, years, time, seen items, MMR diversity, freshness,
popularity penalty, seeded exploration."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .catalog import Catalog
from .errors import RequestError


@dataclass
class Filters:
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    year_min: int | None = None
    year_max: int | None = None
    since: int | None = None  # first_seen >= since (unix seconds)
    until: int | None = None

    def mask(self, cat: Catalog) -> np.ndarray:
        m = cat.active.copy()
        if self.include_categories:
            cols = [cat.cat_names[c] for c in self.include_categories if c in cat.cat_names]
            m &= cat.cat_bits[:, cols].any(1) if cols else False
        if self.exclude_categories:
            cols = [cat.cat_names[c] for c in self.exclude_categories if c in cat.cat_names]
            if cols:
                m &= ~cat.cat_bits[:, cols].any(1)
        if self.year_min is not None:
            m &= cat.years >= self.year_min
        if self.year_max is not None:
            m &= (cat.years <= self.year_max) & (cat.years > 0)
        if self.since is not None:
            m &= cat.first_seen >= self.since
        if self.until is not None:
            m &= cat.first_seen <= self.until
        return m


@dataclass
class Rerank:
    mmr_lambda: float = 1.0  # 1 = relevance only; lower trades relevance for diversity
    freshness_half_life_days: float = 0.0  # 0 = off
    popularity_penalty: float = 0.0
    exploration: float = 0.0  # Gumbel noise scale on normalised relevance; 0 = deterministic
    seed: int | None = None

    def validate(self):
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise RequestError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if not 0.0 <= self.freshness_half_life_days <= 1e6:
            raise RequestError("freshness_half_life_days must be >= 0 (0 = off)")
        if not 0.0 <= self.popularity_penalty <= 100.0:
            raise RequestError("popularity_penalty must be in [0, 100]")
        if not 0.0 <= self.exploration <= 10.0:
            raise RequestError("exploration must be in [0, 10]")
        return self


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
    picked: list[int] = []
    max_sim = np.full(len(cand), -np.inf)
    avail = np.ones(len(cand), bool)
    lam = opts.mmr_lambda
    for _ in range(k):
        mmr = lam * rel - (1 - lam) * np.where(np.isfinite(max_sim), max_sim, 0.0)
        mmr[~avail] = -np.inf
        j = int(np.argmax(mmr))
        picked.append(j)
        avail[j] = False
        max_sim = np.maximum(max_sim, E @ E[j])
    p = np.array(picked, np.int64)
    return cand[p], rel[p]
