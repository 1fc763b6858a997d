"""Blend calibration on validation: the content scale, popularity weight and CF recency (half-life, floor).

``t`` is the :class:`~genre_edge_export.trainer.Trainer` whose modules are calibrated (its split,
scorer and scoring head); the grid's choices are made on validation nDCG@10 only.
"""
from __future__ import annotations

import logging

import numpy as np

from .baselines import RECENCY_GRID, follow_edges, grid_edges
from .evaluate import evaluate, sample_users
from .scoring import pad
from .trend import popularity_options

log = logging.getLogger(__name__)


def blend_parts(t, emb: np.ndarray):
    """Content dot, CF and popularity scores of the validation users (computed once per embedding);
    popularity is [1, N] (static) or [users, N] (trending, as of each user's validation request time)."""
    import torch

    scorer = t.scorer(emb, t.prep.hist, "valid")
    # the users evaluate() scores for "valid" (the same sample under train.max_eval_users)
    users = sample_users(np.flatnonzero([len(x) for x in t.prep.split.truth("valid")]),
                         t.conf.train.max_eval_users)
    with torch.no_grad():
        u = scorer.user_vectors(users)
        dot = (u @ scorer.E.T).cpu().numpy()
        cids, cm = pad([t.prep.hist[x] for x in users])
        dev = scorer.dev
        cf = t.rec.cf.scores(torch.as_tensor(cids, device=dev), torch.as_tensor(cm, device=dev), None).cpu().numpy()
    pop = t.rec.pop.cpu().numpy()[None, :] if scorer.pop_rows is None else scorer.pop_rows(users)
    return users, dot, cf, pop

POP_STEPS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # popularity's weight, in units that put it on CF's scale


def pop_grid(cf: np.ndarray, pop: np.ndarray, fine: bool) -> tuple[float, ...]:
    """Popularity weights to search: 0, and ``POP_STEPS`` x (spread of the weighted CF scores / spread of
    popularity), so the grid means the same on every data set whatever the CF scores' scale; the top steps
    make the blend a popularity list with CF and content breaking ties.

    Why: the grid was 0-1x the CF weight, a cap that data sets where popularity is most of the signal (news)
    hit, leaving the hybrid below a plain popularity list it has as a feature.
    """
    s_cf, s_pop = float(np.std(cf)), float(np.std(pop))
    unit = s_cf / s_pop if s_pop > 0 and s_cf > 0 else 1.0
    return (0.0,) + tuple(unit * k for k in (POP_STEPS if fine else POP_STEPS[2::2]))


def grid_blend(t, emb: np.ndarray, fine: bool = True) -> tuple[float, float, float, float]:
    """Best (valid ndcg@10, content a, cf b, pop c) on a grid; b stays at its learned value."""
    head = t.rec.head
    b = max(abs(float(head.b.detach())), 1e-3)
    users, dot, cf, pop = blend_parts(t, emb)
    row = {int(x): r for r, x in enumerate(users)}
    grid_a = [0.0] + list(b * np.logspace(-2, 2, 17 if fine else 9))
    results = []
    for a in grid_a:
        for c in pop_grid(b * cf, pop, fine):
            def fn(us, a=a, c=c):
                r = [row[int(x)] for x in us]
                return a * dot[r] + b * cf[r] + c * (pop if len(pop) == 1 else pop[r])
            results.append((evaluate(fn, t.prep.split, "valid", max_users=t.conf.train.max_eval_users, ranking_only=True)
                            .get("ndcg@10", 0.0), a, b, c))
    top = max(r[0] for r in results)
    # Within the tolerance, take the largest content weight: a blend that lets content speak
    # is what lets new (cold, on-device added) items and the free-text query compete with
    # CF-scored items, and differences that small are noise (std. error of nDCG@10 here ~0.007).
    tol = t.conf.train.blend_tolerance if fine else 0.0
    return max((r for r in results if r[0] >= top - tol), key=lambda r: (r[1], r[0]))

def calibrate(t, emb: np.ndarray) -> dict:
    """Fit the blend (content scale a, popularity c; CF weight fixed to its learned value) on
    validation nDCG@10 by grid search.

    Why: the CF score of a training pair is in-sample (the neighbour table was fitted on the
    pairs being predicted), so a blend learned on training pairs over- or under-trusts it. The
    validation events were held out from the table, so they give an honest blend.
    """
    import torch

    head = t.rec.head
    a0, b0, c0 = head.blend_weights().values()
    hl_conf = t.conf.cf.recency_half_life
    recency = []
    if hl_conf == "auto":
        # How much more recent history items vote in the CF score: no recency, or the (half-life, floor)
        # pairs the ease-recency baseline searches - the hybrid gets no weighting the baseline lacks, nor
        # the reverse (with half-lives only, at the config's floor 0.5, the hybrid trailed that baseline).
        def run(hl, floor, into, extended=False):
            t.rec.cf.recency[0], t.rec.cf.recency[1] = hl, floor
            into.append({"half_life": hl, "floor": floor, "valid_ndcg@10": grid_blend(t, emb, fine=False)[0],
                         **({"extended": True} if extended else {})})

        run(0.0, t.conf.cf.recency_floor, recency)  # no recency: kept apart, its half-life 0 is no grid edge
        weighted = []
        for hl, floor in RECENCY_GRID:
            run(hl, floor, weighted)

        def chosen():  # a choice on the grid's edge is followed outward, as the baselines' tuning does
            best = max(recency + weighted, key=lambda r: r["valid_ndcg@10"])
            return None if best["half_life"] == 0 else {"half_life": best["half_life"], "floor": best["floor"]}

        follow_edges(weighted, chosen, lambda e: run(e["half_life"], e["floor"], weighted, extended=True))
        recency += weighted
        best = max(recency, key=lambda r: r["valid_ndcg@10"])
        hl, floor = best["half_life"], best["floor"]
    else:
        hl, floor = float(hl_conf), t.conf.cf.recency_floor
    t.rec.cf.recency[0], t.rec.cf.recency[1] = hl, floor
    pop_hl, pop_grid_rows = choose_popularity(t, emb)
    nd, a, b, c = grid_blend(t, emb, fine=True)
    with torch.no_grad():
        head.log_a.copy_(torch.tensor(float(np.log(max(a, 1e-6)))))
        head.b.copy_(torch.tensor(b))
        head.c.copy_(torch.tensor(c))
    log.info("calibrated blend on validation: content %.4g, cf %.4g, pop %.4g, CF recency half-life %g, floor %g, "
             "popularity %s (valid ndcg@10 %.4f)", a, b, c, hl, floor,
             f"trending, half-life {pop_hl:.0f} s" if pop_hl else "static", nd)
    return {"before": {"content": a0, "cf": b0, "pop": c0}, "after": {"content": a, "cf": b, "pop": c},
            "recency_half_life": hl, "recency_floor": float(t.rec.cf.recency[1]), "recency_grid": recency,
            "recency_at_edge": grid_edges([r for r in recency if r["half_life"] > 0], {"half_life": hl, "floor": floor})
            if recency and hl > 0 else [],
            "popularity_half_life_s": pop_hl, "popularity_grid": pop_grid_rows, "valid_ndcg@10": nd}


def choose_popularity(t, emb: np.ndarray) -> tuple[float, list[dict]]:
    """Set ``t.rec.pop_half_life`` as ``head.popularity`` says: static (0), a fixed trending share, or
    ("auto") the one of static and every ``TREND_SHARES`` half-life with the best validation nDCG@10 of the
    coarse blend grid (CF recency already chosen). Returns (half-life seconds, the grid's rows)."""
    options = popularity_options(t.conf.head.popularity, t.prep.split)
    rows = []
    for name, hl in options:
        t.rec.pop_half_life.fill_(hl)
        nd = grid_blend(t, emb, fine=False)[0] if len(options) > 1 else float("nan")
        rows.append({"popularity": name, "half_life_s": hl, "valid_ndcg@10": nd})
    # ties (e.g. every option's popularity weight 0) keep the first: static, the simpler model
    best = rows[0] if len(rows) == 1 else max(rows, key=lambda r: (r["valid_ndcg@10"], -rows.index(r)))
    t.rec.pop_half_life.fill_(best["half_life_s"])
    return best["half_life_s"], rows


# a short-history table's weight in the blend, as multiples of the main CF weight: a larger lambda shrinks EASE's
# weights, so the trained blend weight no longer fits them (chosen at 4-16x on ml-100k's 1-3 item histories)
SHORT_CF_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def choose_short_cf(t, emb: np.ndarray) -> tuple[list, list[dict]]:
    """The short-history CF tables (``cf.short_history``: tiers T1 < T2 < ...; kind "ease"), shortest first: for
    tier T, EASE chosen on validation histories cut to each user's last T positives (:meth:`Prepared.ease_table`)
    and its blend scale ``cf.short_scale`` or ("auto") the one of :data:`SHORT_CF_SCALES` with the best validation
    nDCG@10 on those cut histories - the shorter tiers already in place, the rest of the model (recency, blend,
    content) as trained and calibrated. With "auto" a tier is kept only where it beats leaving its lengths to the
    main table (ties keep the simpler model). Sets them on ``t.rec.cf``; returns ([(T, table with its scale folded
    into the weights)] of the tiers kept, one report row per tier).

    Why: a device often serves users it has known for a few items; tuned for such histories EASE wants several
    times the regularisation of whole ones, and one table for both left 4-7% nDCG@10 at 1-3 items
    (benchmarks/short_history.py)."""
    c, sp = t.conf.cf, t.prep.split
    kept: list = []
    reports = []
    for T in c.short_tiers:
        (idx, w), info = t.prep.ease_table(T, neighbors=c.short_neighbors)
        scorer = t.scorer(emb, sp.histories("valid", last=T), "valid")  # reads t.rec.cf at each call

        def valid() -> float:
            return evaluate(scorer, sp, "valid", max_users=t.conf.train.max_eval_users,
                            ranking_only=True).get("ndcg@10", 0.0)

        t.rec.cf.set_short(kept)
        grid = [{"scale": None, "valid_ndcg@10": valid()}]  # lengths up to T left to the main table
        for s in (SHORT_CF_SCALES if c.short_scale == "auto" else (float(c.short_scale),)):
            t.rec.cf.set_short(kept + [(T, (idx, w * s))])
            grid.append({"scale": s, "valid_ndcg@10": valid()})
        options = grid if c.short_scale == "auto" else grid[1:]
        best = max(options, key=lambda r: (r["valid_ndcg@10"], -options.index(r)))  # ties: the first (no table)
        if best["scale"] is not None:
            kept.append((T, (idx, (w * best["scale"]).astype(np.float32))))
        t.rec.cf.set_short(kept)
        reports.append({
            "max_history": T, "used": best["scale"] is not None, "scale": best["scale"], "neighbors": int(idx.shape[1]),
            "lambda": info["lambda"], "side_weight": info["side_weight"], "ease_grid": info["grid"],
            "ease_at_edge": info["at_edge"], "scale_grid": grid,
            "scale_at_edge": c.short_scale == "auto" and best["scale"] in (SHORT_CF_SCALES[0], SHORT_CF_SCALES[-1]),
            "valid_ndcg@10_cut": best["valid_ndcg@10"], "valid_ndcg@10_cut_without": grid[0]["valid_ndcg@10"]})
        log.info("CF table for histories of <= %d items: %s (lambda %g, validation nDCG@10 on histories cut to %d: "
                 "%.4f, without it %.4f)", T, f"used, x{best['scale']:g}" if best["scale"] is not None
                 else "not used (no gain)", info["lambda"], T, best["valid_ndcg@10"], grid[0]["valid_ndcg@10"])
    return kept, reports
