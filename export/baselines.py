"""Reference baselines on the same split and metrics: popularity, item-kNN, EASE, EASE with the
hybrid's recency weighting, EASE with the items' categories as side information (no language model),
ALS (implicit).

These are the bars the LLM recommender must beat, so each is tuned with the same care: every
hyper-parameter grid of :data:`GRIDS` is searched on validation nDCG@10 (models fitted on the
training events), and the test split is scored once, with the chosen values. All but ALS are numpy.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from genre_edge.errors import ConfigError

from . import require
from .evaluate import evaluate
from .split import Split
from .trend import TREND_SHARES, half_life_of, train_events, trend_rows

log = logging.getLogger(__name__)


def fits_in_memory(n_bytes: float, what: str, instead: str) -> None:
    """Refuse, with the alternative, a dense structure that would take more than half of this machine's RAM
    (a clear error instead of an out-of-memory kill hours into a run)."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no guard
        return
    if n_bytes > total / 2:
        raise ConfigError(f"{what} would need {n_bytes / 2**30:.1f} GiB (this machine has {total / 2**30:.1f} GiB); "
                          f"{instead}")


def interaction_matrix(split: Split, histories: list[np.ndarray] | None = None) -> np.ndarray:
    """Dense binary user x item matrix of training positives (ml-100k size: fine dense)."""
    hist = histories if histories is not None else split.train_histories()
    fits_in_memory(4.0 * split.n_users * split.n_items, f"a dense {split.n_users} x {split.n_items} interaction matrix",
                   "use cf.kind = \"mf\" (factors learned with the model) for data sets this large")
    X = np.zeros((split.n_users, split.n_items), np.float32)
    for u, items in enumerate(hist):
        X[u, items] = 1.0
    return X


def history_rows(users, hist: list[np.ndarray], n_items: int, weights=None) -> np.ndarray:
    """Rows of the users' histories (oldest first) as a [B, n_items] matrix; ``weights(n)`` gives each
    position's weight (default 1: a binary row)."""
    X = np.zeros((len(users), n_items), np.float32)
    for r, u in enumerate(users):
        h = hist[u]
        if len(h):
            X[r, h] = 1.0 if weights is None else weights(len(h))
    return X


def recency_weights(half_life: float, floor: float):
    """The hybrid's CF recency weighting: the item ``p`` places from the end counts
    ``floor + (1 - floor) * 0.5 ** (p / half_life)`` (the runtime's CFScorer, the teacher's CFPart).
    Returns ``w(n)``, the weights of a history of ``n`` items (oldest first; read-only)."""
    # one vector per history length: a validation grid asks for the same lengths hundreds of times, and the
    # powers were ~4% of a training run's time
    @functools.lru_cache(maxsize=4096)
    def w(n: int) -> np.ndarray:
        p = np.arange(n - 1, -1, -1, dtype=np.float32)
        out = (floor + (1 - floor) * np.power(0.5, p / half_life)).astype(np.float32)
        out.flags.writeable = False
        return out
    return w


class Popularity:
    name = "popularity"

    def fit(self, X: np.ndarray):
        self.pop = X.sum(0)
        return self

    def score(self, users: np.ndarray, hist: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.pop, (len(users), len(self.pop)))


class Trending:
    """Popularity as of the request time: each training event before it counts ``0.5 ** (age / half-life)``
    (export/trend.py). ``share``: the half-life as a share of the training log's time span, so one grid
    serves a week of news and months of ratings. Scores read the split's request times (``when``): a user's
    list is what was trending when they came back, from events before that moment only."""
    name = "trending"
    uses_time = True

    def __init__(self, share: float = 0.01):
        if not share > 0:
            raise ValueError(f"share must be > 0, not {share}")
        self.share = share

    def fit(self, X: np.ndarray):
        return self

    def fit_events(self, split: Split):
        self.t, self.i = train_events(split)
        self.n, self.half_life = split.n_items, half_life_of(split, self.share)
        self.end = float(self.t.max()) + 1 if len(self.t) else 0.0
        return self

    def score(self, users: np.ndarray, hist: list[np.ndarray], when: np.ndarray | None = None) -> np.ndarray:
        at = np.full(len(users), self.end) if when is None else np.asarray(when, np.float64)[np.asarray(users)]
        return np.log1p(trend_rows(self.t, self.i, self.n, at, self.half_life))


def scores_for(model, hist: list[np.ndarray], when: np.ndarray | None = None):
    """``users -> scores`` of a fitted baseline; time-aware ones (``uses_time``) read the request times."""
    if getattr(model, "uses_time", False):
        return lambda us: model.score(us, hist, when)
    return lambda us: model.score(us, hist)


class ItemKNN:
    """Cosine co-occurrence item-kNN, keeping the ``k`` nearest neighbours of each item."""
    name = "item-knn"

    def __init__(self, k: int = 100, shrink: float = 10.0):
        self.k, self.shrink = k, shrink

    def fit(self, X: np.ndarray):
        self.W = cooccurrence_cosine(X, self.k, self.shrink)
        return self

    def score(self, users, hist: list[np.ndarray]):
        """Scores from the users' histories (no refit: new events are read, not learned)."""
        return history_rows(users, hist, len(self.W)) @ self.W


def cooccurrence_cosine(X: np.ndarray, k: int = 100, shrink: float = 10.0) -> np.ndarray:
    """Item-item cosine similarity of co-occurrence, top-k per column, zero diagonal."""
    C = X.T @ X
    n = np.sqrt(np.diag(C))
    W = C / (np.outer(n, n) + shrink + 1e-9)
    np.fill_diagonal(W, 0.0)
    return keep_top_k(W, k)


def keep_top_k(W: np.ndarray, k: int) -> np.ndarray:
    if k and k < W.shape[0]:
        idx = np.argpartition(-W, k, axis=0)[k:]
        np.put_along_axis(W, idx, 0.0, axis=0)
    return W


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck 2019): closed-form item-item weights."""
    name = "ease"

    def __init__(self, lam: float = 250.0, half_life: float = 0.0, floor: float = 1.0):
        self.lam, self.half_life, self.floor = lam, half_life, floor

    def fit(self, X: np.ndarray):
        self.W = _ease_cache(X, self.lam)
        return self

    def score(self, users, hist: list[np.ndarray]):
        """Scores from the users' histories, recent items weighted up when ``half_life`` > 0."""
        w = recency_weights(self.half_life, self.floor) if self.half_life > 0 else None
        return history_rows(users, hist, len(self.W), w) @ self.W


class EASERecency(EASE):
    """EASE reading histories with the hybrid's recency weighting: the baseline that gets what the
    hybrid's CF part gets (its half-life and floor are tuned on validation like the hybrid's)."""
    name = "ease-recency"


class EASECategories(EASERecency):
    """EASE + recency with the items' categories as side information (collective EASE: each category is
    one more "user" row of the interaction matrix, weighted ``side_weight``; Ning & Karypis 2012, Jeunen et
    al. 2020). What content metadata alone adds to CF, without a language model: the bar for the hybrid's
    CF part with the encoder's item similarity (``cf.side_information = "encoder"``)."""
    name = "ease-categories"
    uses_features = True

    def __init__(self, lam: float = 250.0, half_life: float = 0.0, floor: float = 1.0, side_weight: float = 30.0):
        super().__init__(lam, half_life, floor)
        self.side_weight = side_weight

    def fit(self, X: np.ndarray):
        self.X = X
        return self

    def fit_features(self, F: np.ndarray):
        """``F``: items x features (multi-hot categories; :func:`genre_edge_export.evaluate.category_features`)."""
        self.W = _ease_cache(self.X, self.lam, _cached_side_similarity(F), self.side_weight)
        return self


_EASE: dict = {}


def _ease_cache(X: np.ndarray, lam: float, S: np.ndarray | None = None, side_weight: float = 0.0) -> np.ndarray:
    # one inversion per (matrix, lambda, side information): the recency grid re-uses it
    key = (id(X), X.shape, float(X.sum()), float(lam), None if S is None else (id(S), float(side_weight)))
    if key not in _EASE:
        if len(_EASE) > 8:
            _EASE.clear()
        _EASE[key] = ease_weights(X, lam, S, side_weight)
    return _EASE[key]


def side_similarity(F: np.ndarray) -> np.ndarray:
    """Cosine similarity of the items' feature rows (items x items, float64; an item without features: 0)."""
    fits_in_memory(8.0 * F.shape[0] ** 2, f"side information over {F.shape[0]} items (a dense items x items "
                   "similarity)", "use cf.side_information = \"none\" for catalogs this large")
    Fn = np.asarray(F, np.float64)
    Fn = Fn / np.maximum(np.linalg.norm(Fn, axis=1, keepdims=True), 1e-12)
    return Fn @ Fn.T


_SIDE: dict = {}


def _cached_side_similarity(F: np.ndarray) -> np.ndarray:
    # one similarity per feature matrix while a baseline's grid fits many models on it (and one object, so that
    # _ease_cache's key sees the same matrix); training computes its own (prepare.py) and keeps nothing here
    key = (id(F), F.shape, float(np.abs(F).sum()))
    if key not in _SIDE:
        _SIDE.clear()
        _SIDE[key] = side_similarity(F)
    return _SIDE[key]


def ease_weights(X: np.ndarray, lam: float, S: np.ndarray | None = None, side_weight: float = 0.0) -> np.ndarray:
    """EASE's item-item weights (zero diagonal). With side information ``S`` (items x items, e.g. the cosine of
    item-text embeddings, :func:`side_similarity`), the Gram matrix is ``X'X + side_weight * S``: the same as
    appending the item features, scaled by sqrt(side_weight), as extra rows of ``X`` (collective EASE). Items
    alike by content then vote for each other although no user rated both, and an item without training
    interactions gets weights from its content alone."""
    n = X.shape[1]
    # the Gram matrix, its inverse and the weights: three dense items x items arrays
    fits_in_memory(3 * 8.0 * n * n, f"EASE over {n} items (a dense {n} x {n} inverse)",
                   "use cf.kind = \"cooccurrence\" or \"mf\", which scale with the catalog")
    G = (X.T @ X).astype(np.float64)
    if S is not None and side_weight:
        G += side_weight * S
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B.astype(np.float32)


def distinct_recency(history_last: int = 0) -> list[tuple[float, float, object]]:
    """(half-life, floor, :func:`recency_weights` or None) of no recency + :data:`RECENCY_GRID`, in that order, less
    each setting that weighs every history of up to ``history_last`` items (0: any length) as an earlier one does:
    it would score every user the same, and a grid that keeps the first of equal scores never chooses it. Cut to
    one item, every setting weighs that item 1, so 20 of the 21 go (a third of a quick-preset training's CF grids)."""
    out, seen = [], set()
    for hl, floor in ((0.0, 1.0),) + RECENCY_GRID:
        rw = recency_weights(hl, floor) if hl > 0 else None
        if history_last > 0:
            w = [np.ones(n, np.float32) if rw is None else rw(n) for n in range(1, history_last + 1)]
            k = b"".join(x.tobytes() for x in w)  # float32 both
            if k in seen:
                continue
            seen.add(k)
        out.append((hl, floor, rw))
    return out


def choose_ease(split: Split, X: np.ndarray, lambdas, S: np.ndarray | None, side_weights, max_users: int = 0,
                history_last: int = 0):
    """(lambda, side information weight, every grid point's row, the chosen weights): the EASE of best validation
    nDCG@10 over
    ``lambdas`` x ``side_weights`` (``S``: items x items similarity, or None), each point at its best recency of
    no recency + :data:`RECENCY_GRID` (what the hybrid's blend calibration searches). The CF part alone, before
    any training, fitted on the training events; ties: the smaller weight, then the smaller lambda.
    ``history_last`` > 0: validation reads each user's last that many training positives (as :func:`tune`)."""
    hist = split.histories("valid", last=history_last)
    rows, chosen = [], None
    key = lambda r: (r["valid_ndcg@10"], -r["side_weight"], -r["lambda"])  # noqa: E731
    recency = distinct_recency(history_last)

    def run(lam, w, extended=False):
        nonlocal chosen
        B = ease_weights(X, lam, S, w)
        best = None
        for hl, floor, rw in recency:
            nd = evaluate(lambda us, rw=rw: history_rows(us, hist, len(B), rw) @ B, split, "valid", n_neg=1,
                          max_users=max_users, ranking_only=True).get("ndcg@10", 0.0)
            if best is None or nd > best["valid_ndcg@10"]:
                best = {"lambda": float(lam), "side_weight": float(w), "half_life": hl, "floor": floor,
                        "valid_ndcg@10": nd, **({"extended": True} if extended else {})}
        rows.append(best)
        if chosen is None or key(best) > key(chosen[0]):
            chosen = (best, B)  # kept, so the caller need not invert the chosen point again

    for lam in lambdas:
        for w in side_weights:
            run(lam, w)
    follow_edges(rows, lambda: {k: chosen[0][k] for k in ("lambda", "side_weight")},
                 lambda e: run(e["lambda"], e["side_weight"], extended=True))
    top, B = chosen
    log.info("CF part: EASE lambda %g, side information weight %g chosen on validation (ndcg@10 %.4f alone)",
             top["lambda"], top["side_weight"], top["valid_ndcg@10"])
    return top["lambda"], top["side_weight"], rows, B


class ALS:
    """Implicit-feedback ALS from the ``implicit`` package (optional extra ``baselines``)."""
    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 15, alpha: float = 10.0,
                 seed: int = 0):
        self.kw = dict(factors=factors, regularization=regularization, iterations=iterations, alpha=alpha,
                       random_state=seed)

    def fit(self, X: np.ndarray):
        implicit_als = require("implicit.cpu.als", "baselines", "the ALS baseline")
        sp = require("scipy.sparse", "baselines", "the ALS baseline")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit warns (and slows) with threaded BLAS
            m = implicit_als.AlternatingLeastSquares(**self.kw)
            m.fit(sp.csr_matrix(X), show_progress=False)
        self.U, self.V = np.asarray(m.user_factors), np.asarray(m.item_factors)
        self.X = X
        self._fold: dict = {}
        return self

    def fold_in(self, X: np.ndarray) -> np.ndarray:
        """User factors re-solved for the histories in ``X`` with the item factors fixed (one ALS
        half-step, Hu et al. 2008: confidence 1 + alpha on observed items), without refitting."""
        V, a, lam = self.V.astype(np.float64), self.kw["alpha"], self.kw["regularization"]
        VtV = V.T @ V + lam * np.eye(V.shape[1])
        U = np.zeros((X.shape[0], V.shape[1]), np.float32)
        for u in range(X.shape[0]):
            items = np.flatnonzero(X[u])
            if len(items):
                Vi = V[items]
                U[u] = np.linalg.solve(VtV + a * Vi.T @ Vi, (1 + a) * Vi.sum(0))
        return U

    def score(self, users, hist: list[np.ndarray]):
        """Trained user factors for training histories; histories with new events are folded in."""
        rows = history_rows(users, hist, len(self.V))
        if np.array_equal(rows, self.X[users]):
            return self.U[users] @ self.V.T
        return self.fold_in(rows) @ self.V.T


BASELINES: dict[str, Callable[..., object]] = {
    "popularity": Popularity,
    "trending": Trending,
    "item-knn": ItemKNN,
    "ease": EASE,
    "ease-recency": EASERecency,
    "ease-categories": EASECategories,
    "als": ALS,
}

# Hyper-parameter grids searched on validation nDCG@10. Log-spaced and wide enough that the choice
# is inside the grid on ml-100k (checked: `grid_edges`, and the baselines report flags a choice on an edge).
# (half-life, floor) pairs of the CF recency weighting: searched on validation by the ease-recency baseline
# and, with "no recency" added, by the hybrid's blend calibration (export/calibrate.py): both get the same grid.
# A product of both axes: six hand-picked pairs put ease-categories' choice on a corner (half-life 5, floor 0.1)
# and missed ease-recency's better (5, 0.2).
RECENCY_GRID = tuple((h, f) for h in (2.5, 5.0, 10.0, 25.0, 50.0) for f in (0.03, 0.1, 0.2, 0.3))
# side information weights of collective EASE (the ease-categories baseline; cf.side_weight = "auto" of the
# hybrid's CF part): 0 (plain EASE) up to an item similarity of 300 co-ratings (ml-100k's median item has 27)
SIDE_WEIGHTS = (0.0, 3.0, 10.0, 30.0, 100.0, 300.0)
EASE_LAMBDAS = (100.0, 250.0, 500.0, 1000.0)  # ease-recency's and ease-categories' grid; cf.ease_lambda = "auto"
GRIDS: dict[str, list[dict]] = {
    "popularity": [{}],
    "trending": [{"share": s} for s in TREND_SHARES],  # half-life as a share of the log's span (export/trend.py)
    "item-knn": [{"k": k, "shrink": s} for k in (20, 50, 100, 200, 400) for s in (0.0, 10.0, 50.0, 200.0)],
    "ease": [{"lam": lam} for lam in (10.0, 30.0, 100.0, 250.0, 500.0, 1000.0, 3000.0)],
    "ease-recency": [{"lam": lam, "half_life": h, "floor": f} for lam in EASE_LAMBDAS
                     for h, f in RECENCY_GRID],
    "ease-categories": [{"lam": lam, "half_life": h, "floor": f, "side_weight": b} for lam in EASE_LAMBDAS
                        for b in SIDE_WEIGHTS for h, f in RECENCY_GRID],
    # the smallest factors, regularization and alpha of an earlier 3 x 2 x 3 grid were all chosen: widened
    "als": [{"factors": f, "regularization": r, "alpha": a} for f in (16, 32, 64, 128) for r in (1e-4, 1e-3, 1e-2, 0.1)
            for a in (0.3, 1.0, 3.0, 10.0, 40.0)],
}
# parameters whose smallest searched value, 0, is a natural bound (off) rather than an edge to search past
NATURAL_ZERO = ("shrink", "side_weight", "floor", "half_life")


# how many times a choice on a grid's edge is followed outward (one log-step each) before it is reported as an edge
MAX_EXTENSIONS = 3
# parameters that must stay whole numbers, and upper bounds of the bounded ones
_INTEGER = ("k", "factors")
_UPPER = {"floor": 1.0}


def _searched_axes(rows: list[dict], chosen: dict):
    """(parameter, chosen value, the values searched, sorted) for each numeric parameter of ``chosen`` that the
    rows searched at more than one value: the axes on which a choice can sit on an edge."""
    for p, v in chosen.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            vals = sorted({r[p] for r in rows if isinstance(r.get(p), (int, float))})
            if len(vals) > 1:
                yield p, v, vals


def edge_extensions(rows: list[dict], chosen: dict) -> list[dict]:
    """Grid points one step beyond each edge the chosen point sits on: ``chosen`` with one parameter moved past
    its lowest (highest) searched value by the ratio to the next value in (a log-spaced step), e.g. lambda 3000
    after 1000 -> 9000, floor 0.03 before 0.1 -> 0.009. A value of 0 (off) and parameters at their bound are not
    extended. Searching these until the choice is inside is what makes "tuned on validation" true on data sets the
    fixed grids were not written for (on a news log EASE wanted lambda > 3000 and half-lives < 2.5)."""
    out = []
    for p, v, vals in _searched_axes(rows, chosen):
        if v == 0 or v not in (vals[0], vals[-1]):
            continue
        if v == vals[0]:
            new = v * v / vals[1]
        else:
            new = v * v / vals[-2] if vals[-2] > 0 else 2 * v
        if p in _UPPER:
            new = min(new, _UPPER[p])
        if p in _INTEGER:
            new = max(1, int(round(new)))
        if new != v and new not in vals:
            out.append({**chosen, p: type(v)(new) if p in _INTEGER else float(new)})
    return out


def follow_edges(rows: list[dict], chosen, run) -> None:
    """Search past a grid's edges: while the chosen point (``chosen()``: its parameters, or None when nothing is
    to extend) sits on an edge of ``rows``, ``run`` each point one step beyond it (:func:`edge_extensions`; ``run``
    appends its row), at most :data:`MAX_EXTENSIONS` times. One loop for the baselines' tuning and the hybrid's
    CF and recency choices, so both sides get the same search."""
    for _ in range(MAX_EXTENSIONS):
        c = chosen()
        ext = [] if c is None else [e for e in edge_extensions(rows, c)
                                    if not any(all(r.get(k) == v for k, v in e.items()) for r in rows)]
        if not ext:
            return
        for e in ext:
            run(e)


def grid_edges(rows: list[dict], chosen: dict) -> list[str]:
    """The chosen parameters that sit on an edge of the searched grid ("floor=0.03 (lowest searched)"): there,
    a value outside the grid may be better, and the report says so instead of calling the baseline tuned. Only
    numeric parameters searched at more than one value count; 0 of a :data:`NATURAL_ZERO` parameter is a
    bound, not an edge."""
    out = []
    for p, v, vals in _searched_axes(rows, chosen):
        if v == 0 and p in NATURAL_ZERO:
            continue
        if v == vals[0]:
            out.append(f"{p}={v:g} (lowest searched)")
        elif v == vals[-1]:
            out.append(f"{p}={v:g} (highest searched)")
    return out


@dataclass
class BaselineResult:
    name: str
    fit_seconds: float
    warm: dict
    cold: dict
    valid: dict
    params: dict = None  # the values chosen on validation
    grid: list = None  # every grid point: params + validation nDCG@10
    at_edge: list = None  # chosen values on an edge of the grid (grid_edges)


def lacks_features(name: str, item_features: np.ndarray | None) -> bool:
    """Whether baseline ``name`` reads side information (``uses_features``) and ``item_features`` has none."""
    return getattr(BASELINES[name], "uses_features", False) and (item_features is None or not np.any(item_features))


def tune(name: str, split: Split, X: np.ndarray, grid: list[dict] | None = None,
         item_features: np.ndarray | None = None, history_last: int = 0):
    """(fitted model with the grid point of best validation nDCG@10, its params, the grid's scores).
    ``item_features`` (items x features): what baselines with side information (``uses_features``) read.
    ``history_last`` > 0: validation reads each user's last that many training positives only, so a baseline
    compared on short histories is chosen for them (the model is still fitted on every training event)."""
    train_hist = split.histories("valid", last=history_last)  # validation reads the training events only
    rows, best = [], None
    when = split.request_times("valid")
    if lacks_features(name, item_features):
        raise ConfigError(f"baseline {name} needs the items' categories, and this data set's items have none")

    def run(params, extended=False):
        nonlocal best
        model = BASELINES[name](**params).fit(X)
        if getattr(model, "uses_time", False):
            model.fit_events(split)
        if getattr(model, "uses_features", False):
            model.fit_features(item_features)
        nd = evaluate(scores_for(model, train_hist, when), split, "valid", n_neg=1).get("ndcg@10", 0.0)
        rows.append({**params, "valid_ndcg@10": nd, **({"extended": True} if extended else {})})
        if best is None or nd > best[0]:
            best = (nd, model, params)

    for params in (GRIDS[name] if grid is None else grid):
        run(params)
    if grid is None:  # the stated grid: a choice on its edge is followed outward (a caller's own grid is kept)
        follow_edges(rows, lambda: best[2], lambda params: run(params, extended=True))
    log.info("%s: chose %s on validation (ndcg@10 %.4f of %d grid points)", name, best[2], best[0], len(rows))
    return best[1], best[2], rows


def run_baselines(split: Split, names=("popularity", "trending", "item-knn", "ease", "ease-recency", "ease-categories",
                                       "als"),
                  item_features=None, ks=(10, 20), tuned: bool = True) -> list[BaselineResult]:
    """Each baseline tuned on validation (``tuned``; else the classes' defaults), then scored once on
    the warm test users and the cold items. ``item_features``: the items' multi-hot categories (the
    diversity metric's space, and ease-categories' side information; without them it is skipped)."""
    X = interaction_matrix(split)
    valid_hist, test_hist = split.histories("valid"), split.histories("test")  # test: + validation events
    out = []
    for name in names:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        t0 = time.perf_counter()
        if lacks_features(name, item_features):
            log.warning("skipping %s: the items have no categories", name)
            continue
        try:
            model, params, grid = tune(name, split, X, None if tuned else [{}], item_features)
        except ImportError as exc:
            log.warning("skipping %s: %s", name, exc)
            continue
        dt = time.perf_counter() - t0
        res = BaselineResult(
            name, dt,
            warm=evaluate(scores_for(model, test_hist, split.request_times("test")), split, "test", ks,
                          item_features=item_features),
            cold=evaluate(scores_for(model, test_hist, split.request_times("cold")), split, "cold", ks,
                          item_features=item_features),
            valid=evaluate(scores_for(model, valid_hist, split.request_times("valid")), split, "valid", ks,
                           item_features=item_features),
            params=params, grid=grid, at_edge=grid_edges(grid, params),
        )
        if res.at_edge:
            log.warning("%s: chosen on an edge of its grid: %s", name, ", ".join(res.at_edge))
        log.info("%s: warm ndcg@10 %.4f, cold ndcg@10 %.4f", name, res.warm.get("ndcg@10", 0), res.cold.get("ndcg@10", 0))
        out.append(res)
    return out
