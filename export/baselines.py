"""Reference baselines on the same split and metrics: popularity, item-kNN, EASE, ALS (implicit).

These are the bars the LLM recommender must beat. All but ALS are plain numpy.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .split import Split

log = logging.getLogger(__name__)


def interaction_matrix(split: Split, histories: list[np.ndarray] | None = None) -> np.ndarray:
    """Dense binary user x item matrix of training positives (ml-100k size: fine dense)."""
    hist = histories if histories is not None else split.train_histories()
    X = np.zeros((split.n_users, split.n_items), np.float32)
    for u, items in enumerate(hist):
        X[u, items] = 1.0
    return X


class Popularity:
    name = "popularity"

    def fit(self, X: np.ndarray):
        self.pop = X.sum(0)
        return self

    def score(self, users: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        return np.broadcast_to(self.pop, (len(users), len(self.pop)))


class ItemKNN:
    """Cosine co-occurrence item-kNN, keeping the ``k`` nearest neighbours of each item."""
    name = "item-knn"

    def __init__(self, k: int = 100, shrink: float = 10.0):
        self.k, self.shrink = k, shrink

    def fit(self, X: np.ndarray):
        self.X = X
        self.W = cooccurrence_cosine(X, self.k, self.shrink)
        return self

    def score(self, users, X: np.ndarray | None = None):
        """Scores from the users' rows of ``X`` (their histories; default: the training matrix)."""
        return (self.X if X is None else X)[users] @ self.W


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

    def __init__(self, lam: float = 250.0):
        self.lam = lam

    def fit(self, X: np.ndarray):
        self.X = X
        self.W = ease_weights(X, self.lam)
        return self

    def score(self, users, X: np.ndarray | None = None):
        """Scores from the users' rows of ``X`` (their histories; default: the training matrix)."""
        return (self.X if X is None else X)[users] @ self.W


def ease_weights(X: np.ndarray, lam: float) -> np.ndarray:
    G = (X.T @ X).astype(np.float64)
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B.astype(np.float32)


class ALS:
    """Implicit-feedback ALS from the ``implicit`` package (optional extra ``baselines``)."""
    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 15, alpha: float = 10.0,
                 seed: int = 0):
        self.kw = dict(factors=factors, regularization=regularization, iterations=iterations, alpha=alpha,
                       random_state=seed)

    def fit(self, X: np.ndarray):
        from . import require

        implicit_als = require("implicit.cpu.als", "baselines", "the ALS baseline")
        sp = require("scipy.sparse", "baselines", "the ALS baseline")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit warns (and slows) with threaded BLAS
            m = implicit_als.AlternatingLeastSquares(**self.kw)
            m.fit(sp.csr_matrix(X), show_progress=False)
        self.U, self.V = np.asarray(m.user_factors), np.asarray(m.item_factors)
        self.X = X
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

    def score(self, users, X: np.ndarray | None = None):
        if X is None or X is self.X:
            return self.U[users] @ self.V.T
        if getattr(self, "_fold_src", None) is not X:  # fold in each history matrix once
            self._fold_src, self._fold_U = X, self.fold_in(X)
        return self._fold_U[users] @ self.V.T


BASELINES: dict[str, Callable[[], object]] = {
    "popularity": Popularity,
    "item-knn": ItemKNN,
    "ease": EASE,
    "als": ALS,
}


@dataclass
class BaselineResult:
    name: str
    fit_seconds: float
    warm: dict
    cold: dict
    valid: dict


def run_baselines(split: Split, names=("popularity", "item-knn", "ease", "als"), item_features=None,
                  ks=(10, 20)) -> list[BaselineResult]:
    from .evaluate import evaluate

    X = interaction_matrix(split)
    X_test = interaction_matrix(split, split.histories("test"))  # + validation events, no refit
    out = []
    for name in names:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        model = BASELINES[name]()
        t0 = time.perf_counter()
        try:
            model.fit(X)
        except ImportError as exc:
            log.warning("skipping %s: %s", name, exc)
            continue
        dt = time.perf_counter() - t0
        res = BaselineResult(
            name, dt,
            warm=evaluate(lambda us: model.score(us, X_test), split, "test", ks, item_features=item_features),
            cold=evaluate(lambda us: model.score(us, X_test), split, "cold", ks, item_features=item_features),
            valid=evaluate(model.score, split, "valid", ks, item_features=item_features),
        )
        log.info("%s: warm ndcg@10 %.4f, cold ndcg@10 %.4f", name, res.warm.get("ndcg@10", 0), res.cold.get("ndcg@10", 0))
        out.append(res)
    return out
