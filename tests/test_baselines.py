import numpy as np
import pytest

from genre_edge_export.data import load_dataset
from genre_edge_export.split import SplitConfig, make_split


def test_ease_closed_form_and_baselines_beat_random(toy_data):
    from genre_edge_export.baselines import ease_weights, run_baselines

    X = (np.random.default_rng(0).random((30, 8)) < 0.4).astype(np.float32)
    B = ease_weights(X, 10.0)
    assert np.allclose(np.diag(B), 0)
    # EASE optimality: (G + lam I) B = G off the diagonal constraint -> check against a direct solve
    G = X.T @ X + 10.0 * np.eye(8)
    P = np.linalg.inv(G)
    assert np.allclose(B, (np.eye(8) - P / np.diag(P)) * (1 - np.eye(8)), atol=1e-5)
    ds = load_dataset(toy_data)
    split = make_split(ds, SplitConfig(cold_quantile=0.6))
    res = {r.name: r for r in run_baselines(split, ("popularity", "item-knn", "ease"))}
    assert res["ease"].warm["ndcg@10"] > res["popularity"].warm["ndcg@10"]
    assert res["item-knn"].warm["recall@20"] > 0
    # cold items: CF baselines have nothing to go on
    assert res["ease"].cold["auc_sampled"] == pytest.approx(0.5)


def test_als_baseline_runs(toy_data):
    pytest.importorskip("implicit")
    from genre_edge_export.baselines import run_baselines

    split = make_split(load_dataset(toy_data), SplitConfig(cold_quantile=0.6))
    (r,) = run_baselines(split, ("als",))
    assert 0 <= r.warm["ndcg@10"] <= 1
